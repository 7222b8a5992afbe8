/**
 * Builds an `Agent` with its real collaborators: the executor pool, the machine (host.ts), the offer
 * verifier for the server's keys, and the system clock. The daemons (`steward up`, `steward agent`) call it.
 */
import type { Logger } from 'pino';
import type { Bus } from '../bus/index.js';
import type { CompiledAgentConfig } from '../config/index.js';
import { createOfferVerifier } from '../protocol/index.js';
import { Agent } from './agent.js';
import { daskSchedulerHost } from './dask-workers.js';
import { createHost } from './host.js';
import { ExecutorPool } from './pool.js';
import { ServerProber } from './server-probe.js';

export interface AgentOptions {
  config: CompiledAgentConfig;
  bus: Bus;
  /** Public keys (PEM) whose signatures on offers this agent trusts. */
  publicKeys: readonly string[];
  logger: Logger;
}

export function createAgent(options: AgentOptions): Agent {
  const { config } = options;
  return new Agent({
    config,
    bus: options.bus,
    logger: options.logger,
    verifier: createOfferVerifier(options.publicKeys),
    selfReport: new ServerProber(
      options.publicKeys,
      config.serverUrl,
      Math.max(config.heartbeatIntervalMs, 5_000),
      options.logger.child({ component: 'agent', agentId: config.id }),
    ),
    host: createHost(config),
    pool: (events) =>
      new ExecutorPool({
        warmExecutors: config.warmExecutors,
        idleBudget: {
          idleMemoryBytes: config.capacity.idleMemoryBytes,
          minAvailableBytes: config.capacity.minAvailableBytes,
        },
        idleTimeoutMs: config.idleTimeoutMs,
        stopTimeoutMs: config.stopTimeoutMs,
        duckdb: config.duckdb,
        keepJobDirs: config.keepJobDirs,
        steps: {
          python: config.python,
          daskSchedulerHost: daskSchedulerHost(config.daskSchedulerHost, options.bus),
        },
        cgroups: { version: 'none', detail: 'not detected yet' },
        limits: config.limits,
        heartbeat: config.executorHeartbeat,
        onOutput: (owner, pid, stream, line) => events.onOutput(owner, pid, stream, line),
        onMessage: (executor, message) => events.onMessage(executor, message),
        onExit: (executor, exit, jobs) => events.onExit(executor, exit, jobs),
        onSpareReady: (pid, ready) => events.onSpareReady?.(pid, ready),
        onEvicted: (executor, residentBytes) => events.onEvicted?.(executor, residentBytes),
      }),
  });
}

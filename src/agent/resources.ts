/**
 * What the agent's process holds, logged on SIGUSR2 (`agent.resources`): open file descriptors, Node's
 * active handles and timers by type, and the idle executors' and spares' measured memory. For leak checks
 * over long runs (bench/many-users.mjs compares them before and after churn).
 */
import { readdirSync } from 'node:fs';
import type { Logger } from 'pino';
import type { AgentPool } from './collaborators.js';

export interface ResourceReport {
  fds: number | undefined;
  /** `process.getActiveResourcesInfo()` counted by type (Timeout, TCPWRAP, PipeWrap, …). */
  active: Record<string, number>;
  idle: ReturnType<NonNullable<AgentPool['idleMemory']>> | undefined;
}

export function resourceReport(pool: AgentPool): ResourceReport {
  let fds: number | undefined;
  try {
    fds = readdirSync('/proc/self/fd').length;
  } catch {
    fds = undefined; // no /proc
  }
  const active: Record<string, number> = {};
  for (const type of process.getActiveResourcesInfo()) active[type] = (active[type] ?? 0) + 1;
  return { fds, active, idle: pool.idleMemory?.() };
}

/** Logs a `resourceReport` on every SIGUSR2 until the returned function is called. */
export function logResourcesOnSignal(pool: AgentPool, log: Logger): () => void {
  const onSignal = (): void => log.info({ event: 'agent.resources', ...resourceReport(pool) }, 'resources');
  process.on('SIGUSR2', onSignal);
  return () => process.off('SIGUSR2', onSignal);
}

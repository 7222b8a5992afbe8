/**
 * The checks run before a cluster is attached (and by `steward cluster check`): the broker's (reachable,
 * TLS, credentials, permissions, topology; see `probeBroker`) and the agents' (at least one live, clocks
 * within the allowed skew, holding this server's key, reaching this server's URL), each failure with a
 * code and a fix. A detached cluster's agents are heard by listening to its heartbeats queue for a while.
 */
import type { Logger } from 'pino';
import { AmqpBus, amqpBusOptions, probeBroker } from '../../bus/index.js';
import { clusterBusConfig, type CompiledServerConfig } from '../../config/index.js';
import { Heartbeat, type CheckResult } from '../../protocol/index.js';
import type { AgentRecord, ClusterRecord, Store } from '../../store/index.js';

export interface ClusterCheckDeps {
  store: Store;
  config: CompiledServerConfig;
  logger: Logger;
  /** Fingerprint of this server's offer-signing key. */
  keyFingerprint: string;
  /** The URL agents' executors reach this server at. */
  serverUrl: () => string;
}

function result(id: string, title: string, fields: Omit<CheckResult, 'id' | 'title' | 'fatal'>): CheckResult {
  return { id, title, fatal: false, ...fields };
}

/** The broker's checks for a stored cluster; its files (password, TLS) are read now. */
export async function brokerChecks(cluster: ClusterRecord): Promise<CheckResult[]> {
  let bus;
  try {
    bus = clusterBusConfig(cluster);
  } catch (error) {
    return [
      result('cluster.config', 'cluster files readable', {
        status: 'fail',
        code: 'STEWARD_CONFIG_INVALID',
        detail: error instanceof Error ? error.message : String(error),
        fix: 'make the password, CA, certificate and key files readable by the server (mode 0600, owned by its user)',
      }),
    ];
  }
  return probeBroker({
    url: bus.urls[0] ?? cluster.brokerUrl,
    ...(bus.vhost !== undefined ? { vhost: bus.vhost } : {}),
    ...(bus.password !== undefined ? { password: bus.password } : {}),
    ...(bus.ca !== undefined ? { ca: bus.ca } : {}),
    ...(bus.cert !== undefined ? { cert: bus.cert } : {}),
    ...(bus.key !== undefined ? { key: bus.key } : {}),
    queueType: bus.queueType,
    deliveryLimit: bus.deliveryLimit,
  });
}

/**
 * Records the heartbeats of a detached cluster's agents (nobody consumes them while it is detached): listens
 * for `heartbeatWait`, or less once every agent heard has sent one since the listening began. A heartbeat
 * sent before that (left in the queue) is recorded only for an agent that sent none since, and only when
 * within the lease: an agent whose clock is behind shows with its offset, one gone since not at all.
 */
export async function listenForAgents(deps: ClusterCheckDeps, cluster: ClusterRecord): Promise<void> {
  const config = clusterBusConfig(cluster);
  const started = Date.now();
  const fresh = new Set<string>();
  const older = new Map<string, { heartbeat: Heartbeat; at: number }>();
  const bus = new AmqpBus(amqpBusOptions(config));
  let done: () => void = () => {};
  const finished = new Promise<void>((resolve) => (done = resolve));
  const timer = setTimeout(() => done(), deps.config.clusters.heartbeatWaitMs);
  try {
    await bus.consumeHeartbeats(async (delivery) => {
      const parsed = Heartbeat.safeParse(delivery.body);
      if (!parsed.success) return;
      const heartbeat = parsed.data;
      const now = Date.now();
      if (heartbeat.time < started - 2_000) {
        if (!fresh.has(heartbeat.agentId)) older.set(heartbeat.agentId, { heartbeat, at: now });
        return;
      }
      await deps.store.upsertAgent(heartbeat, now, cluster.name);
      fresh.add(heartbeat.agentId);
      older.delete(heartbeat.agentId);
      if (older.size === 0) done();
    });
    await finished;
  } finally {
    clearTimeout(timer);
    await bus.close().catch((error: unknown) => deps.logger.debug({ err: error }, 'closing the check bus'));
  }
  for (const { heartbeat, at } of older.values())
    if (heartbeat.time >= at - deps.config.agentLeaseMs)
      await deps.store.upsertAgent(heartbeat, at, cluster.name);
}

/** The agents' checks, from the registry's records of the cluster's agents heard within the lease. */
export async function agentChecks(deps: ClusterCheckDeps, cluster: string): Promise<CheckResult[]> {
  const agents = await deps.store.listAgents(Date.now() - deps.config.agentLeaseMs, cluster);
  if (agents.length === 0)
    return [
      result('cluster.agents.live', 'at least one live agent', {
        status: 'fail',
        code: 'STEWARD_CLUSTER_NO_AGENTS',
        detail: `no agent of cluster ${cluster} sent a heartbeat within the last ${deps.config.agentLeaseMs / 1000} s`,
        fix: `start an agent with the config \`steward cluster agent-config ${cluster}\` prints (steward agent --config FILE)`,
      }),
    ];
  return [
    result('cluster.agents.live', 'at least one live agent', {
      status: 'pass',
      detail: `${agents.length} live: ${agents.map((agent) => agent.id).join(', ')}`,
    }),
    clockCheck(deps, agents),
    keyCheck(deps, cluster, agents),
    serverUrlCheck(deps, agents),
  ];
}

function clockCheck(deps: ClusterCheckDeps, agents: AgentRecord[]): CheckResult {
  const limit = deps.config.clusters.maxClockSkewMs;
  const skewed = agents.filter((agent) => Math.abs(agent.clockOffsetMs ?? 0) > limit);
  const describe = (agent: AgentRecord): string =>
    `${agent.id} ${agent.clockOffsetMs === null ? '?' : `${agent.clockOffsetMs >= 0 ? '+' : ''}${agent.clockOffsetMs} ms`}`;
  if (skewed.length === 0)
    return result('cluster.agents.clock', 'agent clocks within the allowed skew', {
      status: 'pass',
      detail: `within ${limit / 1000} s: ${agents.map(describe).join(', ')}`,
    });
  return result('cluster.agents.clock', 'agent clocks within the allowed skew', {
    status: 'fail',
    code: 'STEWARD_CLUSTER_CLOCK_SKEW',
    detail: `beyond ${limit / 1000} s of the server's clock: ${skewed.map(describe).join(', ')}`,
    fix: 'synchronise the clocks with NTP (timedatectl set-ntp true); offers carry deadlines',
  });
}

function keyCheck(deps: ClusterCheckDeps, cluster: string, agents: AgentRecord[]): CheckResult {
  const wrong = agents.filter((agent) => !(agent.keyFingerprints ?? []).includes(deps.keyFingerprint));
  if (wrong.length === 0)
    return result('cluster.agents.key', "agents hold this server's key", {
      status: 'pass',
      detail: `every agent trusts key ${deps.keyFingerprint}`,
    });
  return result('cluster.agents.key', "agents hold this server's key", {
    status: 'fail',
    code: 'STEWARD_CLUSTER_AGENT_KEY',
    detail: `${wrong
      .map((agent) =>
        agent.keyFingerprints === null
          ? `${agent.id} reports no key`
          : `${agent.id} trusts ${agent.keyFingerprints.join(', ') || 'no key'}`,
      )
      .join('; ')}; this server signs with ${deps.keyFingerprint}`,
    fix: `restart those agents with the config \`steward cluster agent-config ${cluster}\` prints (it holds this server's key)`,
  });
}

function serverUrlCheck(deps: ClusterCheckDeps, agents: AgentRecord[]): CheckResult {
  const url = deps.serverUrl();
  const failing = agents.filter((agent) => agent.serverProbe !== null && !agent.serverProbe.ok);
  const silent = agents.filter((agent) => agent.serverProbe === null);
  if (failing.length > 0)
    return result('cluster.agents.server-url', "agents reach the server's URL", {
      status: 'fail',
      code: 'STEWARD_CLUSTER_SERVER_UNREACHABLE',
      detail: failing.map((agent) => `${agent.id}: ${agent.serverProbe?.error ?? 'failed'}`).join('; '),
      fix: `set server.publicUrl to an address the agent machines reach (now ${url}), and agent.serverUrl to it; check firewalls and proxies`,
    });
  if (silent.length > 0)
    return result('cluster.agents.server-url', "agents reach the server's URL", {
      status: 'warn',
      code: 'STEWARD_CLUSTER_SERVER_UNREACHABLE',
      detail: `not reported yet by ${silent.map((agent) => agent.id).join(', ')}`,
      fix: 'set agent.serverUrl (steward cluster agent-config prints it), or check again in a few seconds',
    });
  return result('cluster.agents.server-url', "agents reach the server's URL", {
    status: 'pass',
    detail: agents.map((agent) => `${agent.id} → ${agent.serverProbe?.url ?? url}`).join(', '),
  });
}

/**
 * The agent registry: one row per agent, refreshed by each heartbeat. Its `last_seen` is what the sweeps
 * (`sweeps.ts`) judge an agent's jobs by, and its cluster columns what the cluster checks read.
 */
import type { Heartbeat } from '../protocol/index.js';
import type { StoreContext } from './context.js';
import type { AgentsTable } from './schema.js';

export interface AgentRecord {
  id: string;
  labels: string[];
  isolation: 'per-user' | 'single-user';
  capacity: { slots: number; free: number };
  executors: Heartbeat['executors'];
  lastSeen: number;
  /** Drained by an administrator: takes no new jobs, finishes those it has. */
  draining: boolean;
  /** The cluster whose bus its heartbeats came through. */
  cluster: string;
  /** The agent's clock minus the server's at its last heartbeat (ms); null when unknown. */
  clockOffsetMs: number | null;
  /** Fingerprints of the offer-signing keys the agent trusts; null when it did not report them. */
  keyFingerprints: string[] | null;
  /** The agent's last probe of the server's URL; null when it did not report one. */
  serverProbe: NonNullable<Heartbeat['serverProbe']> | null;
}

export class AgentStore {
  constructor(private readonly ctx: StoreContext) {}

  /** Records a heartbeat that came through `cluster`'s bus, seen at `now` (default: the store's clock). */
  async upsertAgent(heartbeat: Heartbeat, now = this.ctx.clock(), cluster = 'local'): Promise<void> {
    const values = {
      labels_json: JSON.stringify(heartbeat.labels),
      isolation: heartbeat.isolation,
      capacity_json: JSON.stringify(heartbeat.capacity),
      executors_json: JSON.stringify(heartbeat.executors),
      last_seen: now,
      draining: heartbeat.draining ? 1 : 0,
      cluster,
      clock_offset_ms: heartbeat.time - now,
      key_fingerprint: heartbeat.keyFingerprints ? JSON.stringify(heartbeat.keyFingerprints) : null,
      server_probe_json: heartbeat.serverProbe ? JSON.stringify(heartbeat.serverProbe) : null,
    };
    await this.ctx.db
      .insertInto('agents')
      .values({ id: heartbeat.agentId, ...values })
      .onConflict((oc) => oc.column('id').doUpdateSet(values))
      .execute();
  }

  /** Agents seen at or after `since`, of one cluster when `cluster` is given. */
  async listAgents(since = 0, cluster?: string): Promise<AgentRecord[]> {
    let query = this.ctx.db.selectFrom('agents').selectAll().where('last_seen', '>=', since);
    if (cluster !== undefined) query = query.where('cluster', '=', cluster);
    const rows = await query.orderBy('id').execute();
    return rows.map(toAgent);
  }

  /** The cluster an agent's heartbeats last came through; undefined for an agent never heard of. */
  async agentCluster(id: string): Promise<string | undefined> {
    const row = await this.ctx.db
      .selectFrom('agents')
      .select('cluster')
      .where('id', '=', id)
      .executeTakeFirst();
    return row?.cluster;
  }
}

function toAgent(row: AgentsTable): AgentRecord {
  return {
    id: row.id,
    labels: JSON.parse(row.labels_json) as string[],
    isolation: row.isolation,
    capacity: JSON.parse(row.capacity_json) as { slots: number; free: number },
    executors: JSON.parse(row.executors_json) as Heartbeat['executors'],
    lastSeen: row.last_seen,
    draining: Number(row.draining) === 1,
    cluster: row.cluster,
    clockOffsetMs: row.clock_offset_ms === null ? null : Number(row.clock_offset_ms),
    keyFingerprints: row.key_fingerprint === null ? null : (JSON.parse(row.key_fingerprint) as string[]),
    serverProbe:
      row.server_probe_json === null
        ? null
        : (JSON.parse(row.server_probe_json) as NonNullable<Heartbeat['serverProbe']>),
  };
}

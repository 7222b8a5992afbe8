/**
 * The agent registry: one row per agent, refreshed by each heartbeat. Its `last_seen` is what the sweeps
 * (`sweeps.ts`) judge an agent's jobs by.
 */
import type { Heartbeat } from '../protocol/index.js';
import type { StoreContext } from './context.js';

export interface AgentRecord {
  id: string;
  labels: string[];
  isolation: 'per-user' | 'single-user';
  capacity: { slots: number; free: number };
  executors: Heartbeat['executors'];
  lastSeen: number;
  /** Drained by an administrator: takes no new jobs, finishes those it has. */
  draining: boolean;
}

export class AgentStore {
  constructor(private readonly ctx: StoreContext) {}

  /** Records a heartbeat, seen at `now` (default: the store's clock). */
  async upsertAgent(heartbeat: Heartbeat, now = this.ctx.clock()): Promise<void> {
    const values = {
      labels_json: JSON.stringify(heartbeat.labels),
      isolation: heartbeat.isolation,
      capacity_json: JSON.stringify(heartbeat.capacity),
      executors_json: JSON.stringify(heartbeat.executors),
      last_seen: now,
      draining: heartbeat.draining ? 1 : 0,
    };
    await this.ctx.db
      .insertInto('agents')
      .values({ id: heartbeat.agentId, ...values })
      .onConflict((oc) => oc.column('id').doUpdateSet(values))
      .execute();
  }

  /** Agents seen at or after `since`. */
  async listAgents(since = 0): Promise<AgentRecord[]> {
    const rows = await this.ctx.db
      .selectFrom('agents')
      .selectAll()
      .where('last_seen', '>=', since)
      .orderBy('id')
      .execute();
    return rows.map((row) => ({
      id: row.id,
      labels: JSON.parse(row.labels_json) as string[],
      isolation: row.isolation,
      capacity: JSON.parse(row.capacity_json) as { slots: number; free: number },
      executors: JSON.parse(row.executors_json) as Heartbeat['executors'],
      lastSeen: row.last_seen,
      draining: Number(row.draining) === 1,
    }));
  }
}

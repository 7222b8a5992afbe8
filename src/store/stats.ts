/**
 * Figures for the metrics endpoint, read at scrape time. Only jobs that have not ended are counted: they are
 * few (bounded by agents' capacity and the queue), and `jobs_state` (state, load_deadline) makes each count a
 * range of an index, so a scrape costs the same with a hundred or ten million ended jobs. Ended jobs are
 * counted by the servers as they end them (counters), not here.
 */
import type { JobState } from '../protocol/index.js';
import type { StoreContext } from './context.js';

/** States of jobs that have not ended, as counted here. */
export const LIVE_JOB_STATES = [
  'queued',
  'offered',
  'loading',
  'running',
] as const satisfies readonly JobState[];
export type LiveJobState = (typeof LIVE_JOB_STATES)[number];

export interface LiveJobCount {
  cluster: string;
  state: LiveJobState;
  count: number;
  /** The oldest `created_at` among them (epoch ms). */
  oldestCreatedAt: number;
}

export class StatsStore {
  constructor(private readonly ctx: StoreContext) {}

  /**
   * Jobs not ended, by cluster and state, with the oldest one's creation time: one grouped query.
   */
  async liveJobCounts(): Promise<LiveJobCount[]> {
    const rows = await this.ctx.db
      .selectFrom('jobs')
      .select([
        'cluster',
        'state',
        (eb) => eb.fn.countAll<number | string>().as('count'),
        (eb) => eb.fn.min('created_at').as('oldest'),
      ])
      .where('state', 'in', LIVE_JOB_STATES)
      .groupBy(['cluster', 'state'])
      .execute();
    return rows.map((row) => ({
      cluster: row.cluster,
      state: row.state as LiveJobState,
      count: Number(row.count),
      oldestCreatedAt: Number(row.oldest),
    }));
  }
}

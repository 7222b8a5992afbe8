/**
 * Claims: which agent may load and run a job's current attempt. A claim is taken by one conditional UPDATE
 * (no read-then-write), so it is atomic across servers without a row lock: the first agent to claim wins.
 */
import type { StoreContext } from './context.js';
import { readJob, type JobRecord } from './job-records.js';

/** What `claimAttempt` found: the claim is the caller's (new or already), or another agent's. */
export type ClaimResult =
  | { ok: true }
  /** `job` is the current record (null when the job does not exist any more). */
  | { ok: false; job: JobRecord | null };

export class ClaimStore {
  constructor(private readonly ctx: StoreContext) {}

  /**
   * Grants the job's attempt `attempt` to `agentId`, atomically across servers: one conditional UPDATE that
   * succeeds only while the attempt is current, its token is the one presented, and nobody else holds its
   * claim. The first agent to claim gets it; the same agent claiming again (its executor retried the fetch,
   * or the broker redelivered the offer to it) is fine; any other agent is refused and told who holds it.
   * The claim also makes its agent the job's agent: another agent's `loading` may have been recorded first,
   * and a cancel must reach the agent that loads the job.
   */
  async claimAttempt(
    id: string,
    attempt: number,
    jobTokenHash: string,
    agentId: string,
    now = this.ctx.clock(),
  ): Promise<ClaimResult> {
    const result = await this.ctx.db
      .updateTable('jobs')
      .set({ claimed_by: agentId, agent_id: agentId, updated_at: now })
      .where('id', '=', id)
      .where('attempt', '=', attempt)
      .where('job_token_hash', '=', jobTokenHash)
      .where('claimed_by', 'is', null)
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) === 1) return { ok: true };
    const job = (await readJob(this.ctx.db, id)) ?? null;
    const same = job?.attempt === attempt && job.jobTokenHash === jobTokenHash && job.claimedBy === agentId;
    return same ? { ok: true } : { ok: false, job };
  }

  /**
   * Clears the claim of `agentId` on the job's attempt `attempt` while nothing of it ran (`offered` or
   * `loading`), with the same token check as `claimAttempt`. Returns whether a claim was released; a claim
   * held by another agent, an attempt that moved on, or a job that started are left alone.
   */
  async releaseClaim(
    id: string,
    attempt: number,
    jobTokenHash: string,
    agentId: string,
    now = this.ctx.clock(),
  ): Promise<boolean> {
    // Nothing a job's reader sees changes (the job keeps its agent until the next one claims it).
    const result = await this.ctx.db
      .updateTable('jobs')
      .set({ claimed_by: null, updated_at: now })
      .where('id', '=', id)
      .where('attempt', '=', attempt)
      .where('job_token_hash', '=', jobTokenHash)
      .where('claimed_by', '=', agentId)
      .where('state', 'in', ['offered', 'loading'])
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 1;
  }
}

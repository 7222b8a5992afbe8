/**
 * The executor side of a job: its job token, and the claim that keeps one attempt from loading on two
 * agents at once.
 */
import { timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import { isTerminal, StewardError } from '../../protocol/index.js';
import type { JobRecord, Store } from '../../store/index.js';
import { bearerOf } from '../auth.js';
import { sha256Hex } from '../secrets.js';

/**
 * How a workflow fetch naming an agent treats the claim. `fetch`: the fetch takes it (executors of earlier
 * versions). `event`: the agent's `loading` event takes it when the server applies it (in the event's state
 * update, `store/events.ts`); the fetch only checks, and is answered 503 (retried) until that event is
 * applied. An agent given a redelivered offer fetches so, since another agent may hold the attempt.
 */
export type ClaimMode = 'fetch' | 'event';

export class JobClaims {
  constructor(private readonly deps: { store: Store; logger: Logger }) {}

  /** Checks an executor's job token for `jobId`: valid only for that job and only while it has not ended. */
  async authenticateJob(authorization: string | undefined, jobId: string): Promise<JobRecord> {
    const secret = bearerOf(authorization);
    if (!secret)
      throw new StewardError('STEWARD_UNAUTHENTICATED', 'missing "Authorization: Bearer <job token>" header');
    const job = await this.deps.store.getJob(jobId);
    const given = Buffer.from(sha256Hex(secret), 'hex');
    const expected = Buffer.from(job?.jobTokenHash ?? '0'.repeat(64), 'hex');
    if (!job || given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw new StewardError('STEWARD_UNAUTHENTICATED', 'invalid job token');
    }
    if (isTerminal(job.state))
      throw new StewardError(
        'STEWARD_FORBIDDEN',
        `job ${jobId} has ended (${job.state}); its token is no longer valid`,
      );
    return job;
  }

  /**
   * Grants the job's current attempt to the agent whose executor fetches its workflow (see
   * `Store.claimAttempt`): the first agent to fetch holds it, the same agent may fetch again, another agent
   * is refused with STEWARD_ATTEMPT_CLAIMED. The broker may deliver one offer to two agents (a delivery
   * taken back in a connection drop goes to whichever agent is next, while the first keeps loading it); this
   * is what keeps the attempt from running on both.
   */
  async claim(job: JobRecord, agentId: string, mode: ClaimMode = 'fetch'): Promise<void> {
    if (job.claimedBy === agentId) return;
    if (mode === 'event') {
      if (job.claimedBy === null)
        // Retried by the executor (a 503): the agent's `loading` is still in the events queue.
        throw new StewardError(
          'STEWARD_UNAVAILABLE',
          `job ${job.id} attempt ${job.attempt}: agent ${agentId}'s loading report has not been applied yet`,
        );
      this.refuse(job, agentId, job.claimedBy);
    }
    const claimed = await this.deps.store.claimAttempt(job.id, job.attempt, job.jobTokenHash, agentId);
    if (claimed.ok) {
      // Answered by a GET, which does not wait for the flush by itself: the grant must survive a power cut.
      await this.deps.store.durable();
      return;
    }
    const current = claimed.job;
    if (!current || current.attempt !== job.attempt || current.jobTokenHash !== job.jobTokenHash)
      throw new StewardError('STEWARD_UNAUTHENTICATED', 'invalid job token');
    this.refuse(job, agentId, current.claimedBy);
  }

  private refuse(job: JobRecord, agentId: string, claimedBy: string | null): never {
    this.deps.logger.info(
      { jobId: job.id, attempt: job.attempt, agentId, claimedBy },
      'refused a workflow fetch: another agent holds the attempt',
    );
    throw new StewardError(
      'STEWARD_ATTEMPT_CLAIMED',
      `job ${job.id} attempt ${job.attempt} is held by agent ${claimedBy ?? '?'}; agent ${agentId} must not load it`,
      { details: { claimedBy } },
    );
  }

  /**
   * The claim's agent gives the attempt up before anything of it ran: its executor died while loading, and
   * the agent hands the offer back to the bus. Its `offered` event says the same, but travels through the
   * events queue behind whatever backlog there is; an agent given the redelivered offer meanwhile would be
   * refused and drop its copy, leaving the job to expire. Releasing first makes the attempt free at once.
   * Only the claim's own agent can release it, and only while the job has not started; otherwise this is a
   * no-op (so it is idempotent).
   */
  async releaseClaim(job: JobRecord, agentId: string): Promise<void> {
    const released = await this.deps.store.releaseClaim(job.id, job.attempt, job.jobTokenHash, agentId);
    if (!released) return;
    await this.deps.store.durable();
    this.deps.logger.info(
      { jobId: job.id, attempt: job.attempt, agentId },
      "agent released its claim on the job's attempt (its executor died while loading)",
    );
  }
}

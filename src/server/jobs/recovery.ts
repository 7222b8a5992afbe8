/**
 * Recovery: what the periodic sweep does for jobs nobody else will move on, and retries of attempts that
 * ended without an outcome. Every server runs the sweep against the shared store; each transition only moves
 * a job still in the state it read, so two servers sweeping the same job act on it once.
 */
import {
  canStartNewAttempt,
  formatExactDuration,
  type ErrorInfo,
  type JobEvent,
} from '../../protocol/index.js';
import type { JobRecord } from '../../store/index.js';
import type { ClusterBuses } from '../clusters/registry.js';
import { newJobToken } from '../secrets.js';
import type { JobPartDeps } from './transition.js';

/** How long a job may stay `queued` before it counts as left behind by a dead server (see adoptQueued). */
export const QUEUED_GRACE_MS = 10_000;

/**
 * Attempt endings that say nothing against the job itself, so running it again may succeed: its executor
 * died under it (killed, crashed, the machine went away). Out-of-memory is left out on purpose: the same job
 * would hit the same limit again.
 */
const RETRYABLE_FAILURES: ReadonlySet<string> = new Set(['STEWARD_EXECUTOR_CRASHED']);

/** What one sweep did, by kind. */
export interface SweepCounts {
  /** Jobs no executor loaded within the load timeout, now `expired`. */
  expired: number;
  /** Jobs of agents silent past their lease: ended `lost`, or retried as a new attempt. */
  lost: number;
  /** Jobs a dead server left `queued`, now offered. */
  adoptedQueued: number;
  /** Jobs whose offer a dead server never confirmed published, offered again as a new attempt. */
  adoptedUnpublished: number;
}

/** What `retryOrEnd` did: began the next attempt, or not (with a note on why, for the final error). */
export type RetryOutcome = { retried: true; job: JobRecord } | { retried: false; note: string | undefined };

export interface JobRecoveryDeps extends JobPartDeps {
  clusters: ClusterBuses;
}

export class JobRecovery {
  constructor(private readonly deps: JobRecoveryDeps) {}

  async sweep(now = Date.now()): Promise<SweepCounts> {
    return {
      expired: await this.expireOverdue(now),
      lost: await this.sweepLost(now),
      adoptedQueued: await this.adoptQueued(now),
      adoptedUnpublished: await this.adoptUnpublished(now),
    };
  }

  /** Expires jobs no executor loaded within the load timeout (the deadline is in the job's row). */
  async expireOverdue(now: number): Promise<number> {
    const overdue = await this.deps.store.listJobsPastLoadDeadline(now);
    let expired = 0;
    const base = `no executor loaded the job within ${formatExactDuration(this.deps.config.loadTimeoutMs)}`;
    for (const job of overdue) {
      // Labels are the usual cause when agents are up: say which ones the job needed.
      const message =
        job.labels.length > 0
          ? `${base}; it requires label(s) ${job.labels.join(', ')}: is an agent with them running?`
          : base;
      const result = await this.deps.transition(
        job.id,
        'expired',
        { error: { code: 'STEWARD_LOAD_TIMEOUT', message } },
        { from: ['queued', 'offered', 'loading'] },
      );
      if (result.ok) {
        expired++;
        this.deps.logger.info({ jobId: job.id }, message);
      }
    }
    return expired;
  }

  /**
   * Running jobs of agents silent past their lease end `lost` (their outcome is unknown), or are retried as a
   * new attempt when their budget allows. So are loading jobs whose claim such an agent holds: no other
   * agent may load that attempt, and none of its steps started, so they count as not started (a new attempt
   * has a new token and a claim of its own). Jobs loading on a live agent are never touched. Returns how many
   * it handled.
   */
  async sweepLost(now = Date.now()): Promise<number> {
    const orphans = await this.silentAgentsJobs(now);
    let lost = 0;
    for (const job of orphans) if (await this.endOrRetryLost(job)) lost++;
    return lost;
  }

  private async silentAgentsJobs(now: number): Promise<JobRecord[]> {
    const leaseMs = this.deps.config.agentLeaseMs;
    const orphans = await this.deps.store.listRunningJobsOfSilentAgents(now - leaseMs);
    if (orphans.length === 0) return orphans;
    // Heartbeats have a queue of their own, so a backlog of job events (a burst, or the events a dead server
    // held coming back) does not delay them. But a dead agent's final events may wait in that backlog, so
    // while it is there, agents get three leases (a queue that never drains must not hide a dead agent for
    // ever, hence three, not more).
    const pending = await this.deps.clusters.pendingEvents();
    if (pending === undefined || pending === 0) return orphans;
    const overdue = await this.deps.store.listRunningJobsOfSilentAgents(now - 3 * leaseMs);
    if (overdue.length === 0)
      this.deps.logger.debug({ pending }, 'agent messages still queued; lease check postponed');
    return overdue;
  }

  private async endOrRetryLost(job: JobRecord): Promise<boolean> {
    const leaseMs = this.deps.config.agentLeaseMs;
    const notStarted = job.state === 'loading' || job.state === 'offered';
    const agentId = notStarted ? job.claimedBy : job.agentId;
    const message = notStarted
      ? `agent ${agentId ?? '?'} sent no heartbeat for more than ${formatExactDuration(leaseMs)} while loading the job; it had not started`
      : `agent ${agentId ?? '?'} sent no heartbeat for more than ${formatExactDuration(leaseMs)}; the job's outcome is unknown`;
    const outcome = await this.retryOrEnd({ ...job, agentId }, 'lost', {
      code: 'STEWARD_AGENT_LOST',
      message,
    });
    if (outcome.retried) return true;
    const result = await this.deps.transition(
      job.id,
      'lost',
      {
        error: {
          code: 'STEWARD_AGENT_LOST',
          message: outcome.note === undefined ? message : `${message}; ${outcome.note}`,
        },
      },
      { from: ['running', 'loading'], attempt: job.attempt },
    );
    if (result.ok) this.deps.logger.warn({ jobId: job.id, agentId }, message);
    return result.ok;
  }

  /**
   * Offers jobs left `queued` for longer than `QUEUED_GRACE_MS`: a live server moves its new job to
   * `offered` within milliseconds of storing it, so such a job belongs to a server that died in between,
   * and its offer was never published. Publishing it now is no duplicate. A new job token replaces the one
   * its submitter generated (only the hash was stored). Returns how many it offered.
   */
  async adoptQueued(now = Date.now()): Promise<number> {
    const stale = await this.deps.store.listQueuedJobsCreatedBefore(now - QUEUED_GRACE_MS);
    let adopted = 0;
    for (const job of stale) {
      if (job.loadDeadline !== null && job.loadDeadline <= now) continue; // the expiry sweep ends it
      try {
        if (await this.offerQueued(job, now)) {
          adopted++;
          this.deps.logger.warn({ jobId: job.id }, 'offered a job its submitting server left queued');
        }
      } catch (error) {
        this.deps.logger.error({ err: error, jobId: job.id }, 'could not offer a job left queued');
      }
    }
    return adopted;
  }

  /**
   * Records a `queued` job as offered, then publishes its offer — only if this server made that transition:
   * if another server adopted the job meanwhile (it replaced the token), this one must not publish a second
   * offer whose token no longer works.
   */
  private async offerQueued(job: JobRecord, now: number): Promise<boolean> {
    const token = newJobToken();
    const deadline = job.loadDeadline ?? now + this.deps.config.loadTimeoutMs;
    const offered = await this.deps.transition(
      job.id,
      'offered',
      { jobTokenHash: token.hash, loadDeadline: deadline },
      { from: ['queued'], attempt: job.attempt },
    );
    if (!offered.ok) return false;
    const { recorded } = await this.deps.offers.publish(offered.job, {
      jobToken: token.token,
      deadline,
      now,
    });
    await recorded;
    return true;
  }

  /**
   * Offers again, as a new attempt, jobs `offered` for longer than `QUEUED_GRACE_MS` whose offer was never
   * confirmed published: their server died between recording the offer and publishing it (a live one
   * records the confirmation within milliseconds). The first offer may have gone out after all; with the
   * new attempt and token it fails to load and its events are ignored, so the job still runs once, visibly
   * as attempt 2. Returns how many it offered.
   */
  async adoptUnpublished(now = Date.now()): Promise<number> {
    const stale = await this.deps.store.listUnpublishedOffers(now - QUEUED_GRACE_MS);
    let adopted = 0;
    for (const job of stale) {
      if (job.loadDeadline !== null && job.loadDeadline <= now) continue; // the expiry sweep ends it
      const token = newJobToken();
      try {
        const renewed = await this.deps.store.reofferAsNewAttempt(job.id, job.attempt, token.hash, now);
        if (!renewed) continue;
        this.deps.watch.publishJob(renewed);
        const deadline = renewed.loadDeadline ?? now + this.deps.config.loadTimeoutMs;
        // A failure here leaves it unpublished: the next sweep tries again (as yet another attempt).
        const { recorded } = await this.deps.offers.publish(renewed, {
          jobToken: token.token,
          deadline,
          now,
        });
        await recorded;
        adopted++;
        this.deps.logger.warn(
          { jobId: job.id, attempt: renewed.attempt },
          'offered again, as a new attempt, a job whose server died before publishing its offer',
        );
      } catch (error) {
        this.deps.logger.error({ err: error, jobId: job.id }, 'could not offer again an unpublished job');
      }
    }
    return adopted;
  }

  /** Whether an attempt that failed with this error may be retried (see RETRYABLE_FAILURES). */
  isRetryableFailure(error: ErrorInfo | undefined): boolean {
    return error !== undefined && RETRYABLE_FAILURES.has(error.code);
  }

  /**
   * The job's current attempt is over without an outcome (`lost`: its agent went silent; `failed`: its
   * executor crashed). Begins the next attempt when the job's retry budget allows — `retries` of the job,
   * else the server's `retries.ran` when a step had started (it may have had effects) or `retries.notStarted`
   * when none had — and publishes its offer. Otherwise returns why not, for the final error's message.
   */
  async retryOrEnd(job: JobRecord, endState: 'lost' | 'failed', error: ErrorInfo): Promise<RetryOutcome> {
    if (!canStartNewAttempt(job.state)) return { retried: false, note: undefined };
    if (job.cancelRequested) return { retried: false, note: 'not retried: it was being canceled' };
    const rule = await this.retryRule(job);
    if (!rule.allowed) return { retried: false, note: `not retried (attempt ${job.attempt}; ${rule.text})` };

    const now = Date.now();
    const token = newJobToken();
    const deadline = now + this.deps.config.loadTimeoutMs;
    const result = await this.deps.store.retryJob(job.id, {
      attempt: job.attempt,
      endState,
      error,
      jobTokenHash: token.hash,
      loadDeadline: deadline,
      now,
    });
    // Another server (or an earlier copy of this event) already moved the job on.
    if (!result.ok) return { retried: false, note: undefined };
    this.deps.logger.warn(
      { jobId: job.id, attempt: result.job.attempt, previousAgent: job.agentId, cause: error.code },
      `retrying the job as attempt ${result.job.attempt} (${rule.text})`,
    );
    this.deps.watch.publishJob(result.job);
    // The steps as the retry reset them, not a later read that could be ahead of the job published above.
    for (const step of result.steps) this.deps.watch.publishStep(step);
    await this.deps.audit.record({
      actor: 'system',
      action: 'job.retry',
      target: job.id,
      source: null,
      detail: { user: job.user, attempt: result.job.attempt, previousAgent: job.agentId, cause: error.code },
    });
    try {
      const { recorded } = await this.deps.offers.publish(result.job, {
        jobToken: token.token,
        deadline,
        now,
      });
      await recorded;
    } catch (publishError) {
      // Left unpublished: a sweep (adoptUnpublished) offers it again as a new attempt.
      this.deps.logger.error(
        { err: publishError, jobId: job.id, attempt: result.job.attempt },
        'publishing the job offer failed; a sweep offers it again',
      );
    }
    return { retried: true, job: result.job };
  }

  /** The retry budget that applies to the job, and whether it allows another attempt. */
  private async retryRule(job: JobRecord): Promise<{ allowed: boolean; text: string }> {
    const steps = await this.deps.store.listSteps(job.id);
    const ran = steps.some((step) => step.state !== 'pending');
    const { retries } = this.deps.config;
    const budget = job.retries ?? (ran ? retries.ran : retries.notStarted);
    const text =
      job.retries !== null
        ? `the job's retries is ${job.retries}`
        : ran
          ? `a step had started and server.retries.ran is ${retries.ran}`
          : `no step had started and server.retries.notStarted is ${retries.notStarted}`;
    return { allowed: job.attempt - 1 < budget, text };
  }

  /**
   * An agent reports a retryable failure (its executor died): retries the job instead of letting the event
   * end it. Returns the event to apply: unchanged when the job was retried (it now only counts as seen, being
   * of an older attempt), or with the reason it was not retried added to its message.
   */
  async onAttemptFailure(event: JobEvent & { type: 'state' }): Promise<JobEvent> {
    const job = await this.deps.store.getJob(event.jobId);
    if (!job || job.attempt !== event.attempt || !event.error) return event;
    // Only the claim's holder speaks for the attempt (applying the event then ignores it too).
    if (job.claimedBy !== null && job.claimedBy !== event.agentId) return event;
    const outcome = await this.retryOrEnd({ ...job, agentId: event.agentId }, 'failed', event.error);
    if (outcome.retried || outcome.note === undefined) return event;
    return { ...event, error: { ...event.error, message: `${event.error.message}; ${outcome.note}` } };
  }
}

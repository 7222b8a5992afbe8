/**
 * Jobs: submit (resolve workflow + params, sign and publish the offer), visibility, cancel, the job-token
 * check for executor routes, and the load-timeout sweeper. Every state change goes through
 * `Store.transitionJob` and, once committed, is published to the JobWatch.
 */
import { timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import type { Bus } from '../bus/index.js';
import type { CompiledServerConfig } from '../config/index.js';
import { resolveParams, type ParamSpec } from '../engine/index.js';
import {
  canStartNewAttempt,
  isTerminal,
  PROTOCOL_VERSION,
  StewardError,
  type ErrorInfo,
  type JobEvent,
  type JobOffer,
  type SignedOffer,
  type JobState,
  type OfferSigner,
  type ParamValue,
} from '../protocol/index.js';
import type { JobPatch, JobRecord, Store, TransitionResult } from '../store/index.js';
import type { AuditLog } from './audit.js';
import { bearerOf, type Principal } from './auth.js';
import { newJobId, newSecret, sha256Hex } from './secrets.js';
import type { ReservedInputs, UploadService } from './uploads.js';
import type { JobWatch } from './watch.js';
import type { WorkflowRepository } from './workflows.js';

export interface SubmitInput {
  workflow: string;
  params: Record<string, ParamValue>;
  labels: string[];
  timeoutSeconds?: number | undefined;
  /** The job's own retry budget; default: the server's `retries` policy. */
  retries?: number | undefined;
  idempotencyKey?: string | undefined;
  /** Set by a rerun (rerun.ts): the job this one repeats, recorded in the audit entry. */
  rerunOf?: string | undefined;
}

/**
 * Attempt endings that say nothing against the job itself, so running it again may succeed: its executor
 * died under it (killed, crashed, the machine went away). Out-of-memory is left out on purpose: the same job
 * would hit the same limit again.
 */
const RETRYABLE_FAILURES: ReadonlySet<string> = new Set(['STEWARD_EXECUTOR_CRASHED']);

/** What `retryOrEnd` did: began the next attempt, or not (with a note on why, for the final error). */
type RetryOutcome = { retried: true; job: JobRecord } | { retried: false; note: string | undefined };

export interface JobServiceDeps {
  store: Store;
  bus: Bus;
  signer: OfferSigner;
  workflows: WorkflowRepository;
  audit: AuditLog;
  watch: JobWatch;
  config: CompiledServerConfig;
  logger: Logger;
  /** The URL executors use to reach this server (known once listening). */
  serverUrl: () => string;
  /** Uploaded files for `file` params (moved into a job's inputs at submit). */
  uploads: UploadService;
}

export function formatDuration(ms: number): string {
  if (ms % 86_400_000 === 0) return `${ms / 86_400_000}d`;
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** How long a job may stay `queued` before it counts as left behind by a dead server (see adoptQueued). */
export const QUEUED_GRACE_MS = 10_000;

export class JobService {
  constructor(private readonly deps: JobServiceDeps) {}

  async submit(principal: Principal, input: SubmitInput, source: string): Promise<JobRecord> {
    const { store, workflows, config } = this.deps;
    // Needs the viewer role in the workflow's space; the version resolved here is pinned for good.
    const record = await workflows.resolve(principal, input.workflow);
    const workflow = await workflows.parsedFor(record);
    const resolved = resolveParams(workflow, input.params);
    const now = Date.now();
    const id = newJobId(now);
    const reserved = await this.reserveInputs(principal.user, id, workflow.params, resolved, input);
    if (!('uploads' in reserved)) return reserved;
    const params = reserved.params;
    const jobToken = newSecret('stj_');
    const timeoutMs = input.timeoutSeconds === undefined ? null : input.timeoutSeconds * 1000;
    const deadline = now + config.loadTimeoutMs;
    // Recorded as offered before publishing (an agent may report `loading` as soon as the offer is out), in
    // the same commit as the insert.
    const inserted = await store
      .insertJobOnce({
        id,
        user: principal.user,
        workflow: { space: record.space, name: record.name, version: record.version, digest: record.digest },
        params,
        labels: input.labels,
        timeoutMs,
        jobTokenHash: sha256Hex(jobToken),
        createdAt: now,
        steps: workflow.steps.map((step) => ({ id: step.id, kind: step.kind })),
        retries: input.retries ?? null,
        loadDeadline: deadline,
        offered: true,
        submitKey: input.idempotencyKey ?? null,
      })
      .catch(async (error: unknown) => {
        // No job: what this submission reserved is free again at once, not only when it expires.
        await this.deps.uploads.release(id).catch(() => undefined);
        throw error;
      });
    // A retry of a submission that already created its job: answer with that job, submit nothing.
    if (!inserted.created) {
      await this.deps.uploads.release(id);
      return inserted.job;
    }
    const job = inserted.job;
    // The inputs are in place before the offer exists, so an executor always finds them.
    try {
      await this.deps.uploads.attach(reserved);
    } catch (error) {
      this.deps.logger.error({ err: error, jobId: job.id }, 'moving the uploaded inputs into the job failed');
      await this.transition(
        job.id,
        'failed',
        {
          error: { code: 'STEWARD_INTERNAL', message: 'the uploaded files could not be stored with the job' },
        },
        { attempt: job.attempt },
      );
      throw error;
    }
    // The user may have been disabled after this request authenticated; disabling cancels the jobs it finds
    // after its commit, so a job written after that commit must cancel itself here, before any offer.
    const owner = await store.getUser(principal.user);
    if (!owner || owner.disabled) {
      await this.transition(
        job.id,
        'canceled',
        { error: { code: 'STEWARD_JOB_CANCELED', message: `canceled: user ${principal.user} is disabled` } },
        { from: ['queued', 'offered'] },
      );
      throw new StewardError('STEWARD_UNAUTHENTICATED', 'this user is disabled');
    }
    this.deps.watch.publishJob(job);
    // The audit entry is written while the broker confirms the offer: both are done before the answer.
    const audited = this.deps.audit.record({
      actor: principal.user,
      action: 'job.submit',
      target: job.id,
      source,
      detail: {
        workflow: `${record.space}/${record.name}@${record.version}`,
        labels: input.labels,
        ...(input.retries !== undefined ? { retries: input.retries } : {}),
        ...(input.rerunOf !== undefined ? { rerunOf: input.rerunOf } : {}),
      },
    });
    try {
      await this.deps.bus.publishOffer(this.signOffer(job, jobToken, deadline, now));
    } catch (error) {
      await audited;
      this.deps.logger.error({ err: error, jobId: job.id }, 'publishing the job offer failed');
      // The submitter is told it failed, so nobody may offer it later behind their back.
      await this.transition(
        job.id,
        'failed',
        { error: { code: 'STEWARD_UNAVAILABLE', message: 'the job could not be handed to the bus' } },
        { attempt: job.attempt },
      );
      throw new StewardError('STEWARD_UNAVAILABLE', 'the bus did not accept the job offer; retry later', {
        cause: error,
      });
    }
    await audited;
    // Not waited for: if it is lost, a sweep offers the job again as a new attempt (wasteful, never hidden).
    void this.recordPublished(job);
    return job;
  }

  /**
   * Reserves the uploads named by `file` params for job `id`. When they are gone because this very
   * submission (same idempotency key) already used them, returns the job it created instead.
   */
  private async reserveInputs(
    user: string,
    id: string,
    specs: readonly ParamSpec[],
    params: Record<string, ParamValue>,
    input: SubmitInput,
  ): Promise<ReservedInputs | JobRecord> {
    try {
      return await this.deps.uploads.reserve(user, id, specs, params);
    } catch (error) {
      if (!(error instanceof StewardError) || error.code !== 'STEWARD_NOT_FOUND' || !input.idempotencyKey)
        throw error;
      const existing = await this.deps.store.findJobBySubmitKey(user, input.idempotencyKey);
      if (existing) return existing;
      throw error;
    }
  }

  /**
   * Signs and publishes the offer of a `queued` job. Recorded as offered before publishing (an agent may
   * report `loading` as soon as the offer is out), and published only by whoever made that transition: if
   * another server adopted the job meanwhile (it replaced the token), this one must not publish a second
   * offer whose token no longer works.
   */
  private async offer(
    job: JobRecord,
    jobToken: string,
    deadline: number,
    now: number,
    patch: JobPatch,
  ): Promise<JobRecord> {
    const signed = this.signOffer(job, jobToken, deadline, now);
    const offered = await this.transition(
      job.id,
      'offered',
      { ...patch, loadDeadline: deadline },
      { from: ['queued'], attempt: job.attempt },
    );
    if (!offered.ok) return offered.job ?? job;
    try {
      await this.deps.bus.publishOffer(signed);
    } catch (error) {
      throw new StewardError('STEWARD_UNAVAILABLE', 'the bus did not accept the job offer; retry later', {
        cause: error,
      });
    }
    await this.recordPublished(offered.job);
    return offered.job;
  }

  private signOffer(job: JobRecord, jobToken: string, deadline: number, now: number): SignedOffer {
    const offer: JobOffer = {
      v: PROTOCOL_VERSION,
      jobId: job.id,
      attempt: job.attempt,
      user: job.user,
      // The offer's shape is unchanged (agents validate it strictly): the executor's fetch, by job, serves
      // the pinned (space, name, version).
      workflow: { name: job.workflow.name, version: job.workflow.version, digest: job.workflow.digest },
      params: job.params,
      labels: job.labels,
      jobToken,
      serverUrl: this.deps.serverUrl(),
      limits: job.timeoutMs === null ? {} : { timeoutMs: job.timeoutMs },
      deadline,
      issuedAt: now,
    };
    return this.deps.signer.sign(offer);
  }

  /**
   * Marks the attempt's offer as confirmed by the bus. If this fails (or the server dies first), another
   * server offers the job again as a new attempt (adoptUnpublished): wasteful, never a hidden second run.
   */
  private async recordPublished(job: JobRecord): Promise<void> {
    try {
      await this.deps.store.markOfferPublished(job.id, job.attempt);
    } catch (error) {
      this.deps.logger.warn({ err: error, jobId: job.id }, 'could not record the offer as published');
    }
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
      const jobToken = newSecret('stj_');
      try {
        const renewed = await this.deps.store.reofferAsNewAttempt(
          job.id,
          job.attempt,
          sha256Hex(jobToken),
          now,
        );
        if (!renewed) continue;
        this.deps.watch.publishJob(renewed);
        const deadline = renewed.loadDeadline ?? now + this.deps.config.loadTimeoutMs;
        // A failure here leaves it unpublished: the next sweep tries again (as yet another attempt).
        await this.deps.bus.publishOffer(this.signOffer(renewed, jobToken, deadline, now));
        await this.recordPublished(renewed);
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
      const jobToken = newSecret('stj_');
      const deadline = job.loadDeadline ?? now + this.deps.config.loadTimeoutMs;
      try {
        const offered = await this.offer(job, jobToken, deadline, now, { jobTokenHash: sha256Hex(jobToken) });
        if (offered.state !== 'queued' && offered.jobTokenHash === sha256Hex(jobToken)) {
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
   * Signs and publishes the offer of the job's current attempt (already recorded `offered`). When the bus
   * refuses it the offer stays unpublished, and a sweep (adoptUnpublished) offers it again as a new attempt.
   */
  private async publishOffer(job: JobRecord, jobToken: string, deadline: number, now: number): Promise<void> {
    try {
      await this.deps.bus.publishOffer(this.signOffer(job, jobToken, deadline, now));
    } catch (error) {
      this.deps.logger.error(
        { err: error, jobId: job.id, attempt: job.attempt },
        'publishing the job offer failed; a sweep offers it again',
      );
      return;
    }
    await this.recordPublished(job);
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
    const steps = await this.deps.store.listSteps(job.id);
    const ran = steps.some((step) => step.state !== 'pending');
    const { retries } = this.deps.config;
    const budget = job.retries ?? (ran ? retries.ran : retries.notStarted);
    const rule =
      job.retries !== null
        ? `the job's retries is ${job.retries}`
        : ran
          ? `a step had started and server.retries.ran is ${retries.ran}`
          : `no step had started and server.retries.notStarted is ${retries.notStarted}`;
    if (job.attempt - 1 >= budget)
      return { retried: false, note: `not retried (attempt ${job.attempt}; ${rule})` };

    const now = Date.now();
    const jobToken = newSecret('stj_');
    const deadline = now + this.deps.config.loadTimeoutMs;
    const result = await this.deps.store.retryJob(job.id, {
      attempt: job.attempt,
      endState,
      error,
      jobTokenHash: sha256Hex(jobToken),
      loadDeadline: deadline,
      now,
    });
    // Another server (or an earlier copy of this event) already moved the job on.
    if (!result.ok) return { retried: false, note: undefined };
    this.deps.logger.warn(
      { jobId: job.id, attempt: result.job.attempt, previousAgent: job.agentId, cause: error.code },
      `retrying the job as attempt ${result.job.attempt} (${rule})`,
    );
    this.deps.watch.publishJob(result.job);
    // The steps as the retry reset them, not a later read that could be ahead of the job published above.
    for (const step of result.steps) this.deps.watch.publishStep(step);
    await this.deps.audit.record({
      actor: 'system',
      action: 'job.retry',
      target: job.id,
      source: null,
      detail: {
        user: job.user,
        attempt: result.job.attempt,
        previousAgent: job.agentId,
        cause: error.code,
      },
    });
    await this.publishOffer(result.job, jobToken, deadline, now);
    return { retried: true, job: result.job };
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

  /** A job the principal may see; others' jobs are reported as absent (and the attempt audited). */
  async visibleJob(principal: Principal, id: string, source: string): Promise<JobRecord> {
    const job = await this.deps.store.getJob(id);
    if (job && (principal.role === 'admin' || job.user === principal.user)) return job;
    if (job)
      await this.deps.audit.record({
        actor: principal.user,
        action: 'forbidden',
        target: id,
        source,
        detail: { owner: job.user },
      });
    throw new StewardError('STEWARD_NOT_FOUND', `no job ${id}`);
  }

  /** `reason` replaces "canceled by USER" in the job's error message (e.g. the user was disabled). */
  async cancel(principal: Principal, id: string, source: string, reason?: string): Promise<JobRecord> {
    const job = await this.visibleJob(principal, id, source);
    if (isTerminal(job.state))
      throw new StewardError('STEWARD_JOB_NOT_CANCELABLE', `job ${id} already ended (${job.state})`);
    const error: ErrorInfo = {
      code: 'STEWARD_JOB_CANCELED',
      message: reason ?? `canceled by ${principal.user}`,
    };
    let result: JobRecord = job;
    if (job.state === 'queued' || job.state === 'offered') {
      const moved = await this.transition(id, 'canceled', { error }, { from: ['queued', 'offered'] });
      if (moved.ok) {
        result = moved.job;
        // Still `offered` here, but an agent's executor already fetched the workflow (its `loading` and
        // `running` events are on their way): that agent is running it, and only the agent can stop it.
        const claimedBy = moved.job.claimedBy ?? job.claimedBy;
        if (claimedBy !== null) await this.sendCancel(claimedBy, moved.job);
      } else if (moved.job && (moved.job.state === 'loading' || moved.job.state === 'running'))
        result = await this.requestCancel(moved.job);
      else if (moved.job && isTerminal(moved.job.state))
        throw new StewardError('STEWARD_JOB_NOT_CANCELABLE', `job ${id} already ended (${moved.job.state})`);
    } else {
      result = await this.requestCancel(job);
    }
    await this.deps.audit.record({
      actor: principal.user,
      action: 'job.cancel',
      target: id,
      source,
      detail: { state: job.state, ...(reason === undefined ? {} : { reason }) },
    });
    return result;
  }

  /** Loading/running jobs end when the agent reports it; the server only asks. */
  private async requestCancel(job: JobRecord): Promise<JobRecord> {
    const updated = (await this.deps.store.requestCancel(job.id)) ?? job;
    if (updated.agentId) {
      await this.sendCancel(updated.agentId, updated);
    } else {
      this.deps.logger.warn({ jobId: job.id }, 'cancel requested for a job with no agent recorded');
    }
    return updated;
  }

  private async sendCancel(agentId: string, job: JobRecord): Promise<void> {
    await this.deps.bus.publishControl(agentId, {
      v: PROTOCOL_VERSION,
      type: 'cancel',
      jobId: job.id,
      attempt: job.attempt,
    });
  }

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
  async claim(job: JobRecord, agentId: string): Promise<void> {
    if (job.claimedBy === agentId) return;
    const claimed = await this.deps.store.claimAttempt(job.id, job.attempt, job.jobTokenHash, agentId);
    if (claimed.ok) {
      // Answered by a GET, which does not wait for the flush by itself: the grant must survive a power cut.
      await this.deps.store.durable();
      return;
    }
    const current = claimed.job;
    if (!current || current.attempt !== job.attempt || current.jobTokenHash !== job.jobTokenHash)
      throw new StewardError('STEWARD_UNAUTHENTICATED', 'invalid job token');
    this.deps.logger.info(
      { jobId: job.id, attempt: job.attempt, agentId, claimedBy: current.claimedBy },
      'refused a workflow fetch: another agent holds the attempt',
    );
    throw new StewardError(
      'STEWARD_ATTEMPT_CLAIMED',
      `job ${job.id} attempt ${job.attempt} is held by agent ${current.claimedBy ?? '?'}; agent ${agentId} must not load it`,
      { details: { claimedBy: current.claimedBy } },
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

  /** Moves a job and tells live listeners. */
  async transition(
    id: string,
    to: JobState,
    patch: JobPatch = {},
    options: { from?: readonly JobState[]; attempt?: number } = {},
  ): Promise<TransitionResult> {
    const result = await this.deps.store.transitionJob(id, to, patch, options);
    if (result.ok) this.deps.watch.publishJob(result.job);
    return result;
  }

  /**
   * Expires jobs no executor loaded within the load timeout. Returns how many it expired. Every server runs
   * it against the shared store: the deadline is in the job's row, and the transition only moves a job still
   * waiting, so two servers sweeping the same job expire it once.
   */
  async sweep(now = Date.now()): Promise<number> {
    const overdue = await this.deps.store.listJobsPastLoadDeadline(now);
    let expired = 0;
    const base = `no executor loaded the job within ${formatDuration(this.deps.config.loadTimeoutMs)}`;
    for (const job of overdue) {
      // Labels are the usual cause when agents are up: say which ones the job needed.
      const message =
        job.labels.length > 0
          ? `${base}; it requires label(s) ${job.labels.join(', ')}: is an agent with them running?`
          : base;
      const result = await this.transition(
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
    return (
      expired +
      (await this.sweepLost(now)) +
      (await this.adoptQueued(now)) +
      (await this.adoptUnpublished(now))
    );
  }

  /**
   * Running jobs of agents silent past their lease end `lost` (their outcome is unknown), or are retried as a
   * new attempt when their budget allows. So are loading jobs whose claim such an agent holds: no other
   * agent may load that attempt, and none of its steps started, so they count as not started (a new attempt
   * has a new token and a claim of its own). Jobs loading on a live agent are never touched. Returns how many
   * it handled.
   */
  async sweepLost(now = Date.now()): Promise<number> {
    const leaseMs = this.deps.config.agentLeaseMs;
    let orphans = await this.deps.store.listRunningJobsOfSilentAgents(now - leaseMs);
    if (orphans.length === 0) return 0;
    // Heartbeats have a queue of their own, so a backlog of job events (a burst, or the events a dead server
    // held coming back) does not delay them. While such a backlog waits, agents still get three leases: an
    // agent older than the heartbeats queue sends its heartbeats among those events, and a job whose agent
    // then died may have its final events there (a queue that never drains must not hide a dead agent for
    // ever, hence three leases, not more).
    const pending = await this.deps.bus.pendingEvents();
    if (pending !== undefined && pending > 0) {
      orphans = await this.deps.store.listRunningJobsOfSilentAgents(now - 3 * leaseMs);
      if (orphans.length === 0) {
        this.deps.logger.debug({ pending }, 'agent messages still queued; lease check postponed');
        return 0;
      }
    }
    let lost = 0;
    for (const job of orphans) {
      const notStarted = job.state === 'loading' || job.state === 'offered';
      const agentId = notStarted ? job.claimedBy : job.agentId;
      const message = notStarted
        ? `agent ${agentId ?? '?'} sent no heartbeat for more than ${formatDuration(leaseMs)} while loading the job; it had not started`
        : `agent ${agentId ?? '?'} sent no heartbeat for more than ${formatDuration(leaseMs)}; the job's outcome is unknown`;
      const outcome = await this.retryOrEnd({ ...job, agentId }, 'lost', {
        code: 'STEWARD_AGENT_LOST',
        message,
      });
      if (outcome.retried) {
        lost++;
        continue;
      }
      const result = await this.transition(
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
      if (result.ok) {
        lost++;
        this.deps.logger.warn({ jobId: job.id, agentId }, message);
      }
    }
    return lost;
  }
}

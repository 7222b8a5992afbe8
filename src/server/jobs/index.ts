/**
 * The job service: one façade over submission (`submission.ts`), the offer path (`offers.ts`), recovery
 * sweeps and retries (`recovery.ts`) and executor claims (`claims.ts`); visibility and cancel live here.
 * Every state change goes through `Store.transitionJob` and, once committed, is published to the JobWatch
 * (`transition.ts`).
 */
import type { Logger } from 'pino';
import type { CompiledServerConfig } from '../../config/index.js';
import {
  isTerminal,
  PROTOCOL_VERSION,
  StewardError,
  type ErrorInfo,
  type JobEvent,
  type OfferSigner,
} from '../../protocol/index.js';
import type { JobRecord, Store } from '../../store/index.js';
import type { AuditLog } from '../audit.js';
import type { ClusterBuses } from '../clusters/registry.js';
import type { Principal } from '../auth.js';
import type { UploadService } from '../uploads.js';
import type { JobWatch } from '../watch.js';
import type { WorkflowRepository } from '../workflows.js';
import { JobClaims, type ClaimMode } from './claims.js';
import { OfferPublisher } from './offers.js';
import { JobRecovery, type RetryOutcome, type SweepCounts } from './recovery.js';
import { submitBatch, type BatchItemResult } from './batch.js';
import { JobSubmission, type JobSubmissionDeps, type SubmitInput } from './submission.js';
import { jobTransitions, type TransitionJob, type TransitionObserver } from './transition.js';

export { QUEUED_GRACE_MS, type SweepCounts } from './recovery.js';
export type { SubmitInput } from './submission.js';
export type { ClaimMode } from './claims.js';
export type { BatchItemResult } from './batch.js';
export type { TransitionObserver } from './transition.js';

export interface JobServiceDeps {
  store: Store;
  /** Each cluster's bus: offers go to the job's cluster, controls to the agent's. */
  clusters: ClusterBuses;
  /** The cluster a job goes to (the one asked for, else the default), refused when it could not run there. */
  admit: (cluster: string | undefined, labels: readonly string[]) => Promise<string>;
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
  /** Told of every state change this server commits (the metrics). Default: nobody. */
  observeTransition?: TransitionObserver;
}

export class JobService {
  /** Moves a job and tells live listeners. */
  readonly transition: TransitionJob;
  private readonly submission: JobSubmission;
  private readonly submissionDeps: JobSubmissionDeps;
  private readonly recovery: JobRecovery;
  private readonly claims: JobClaims;

  constructor(private readonly deps: JobServiceDeps) {
    this.transition = jobTransitions(deps.store, deps.watch, deps.observeTransition);
    const offers = new OfferPublisher(deps);
    const shared = { ...deps, offers, transition: this.transition };
    this.submissionDeps = shared;
    this.submission = new JobSubmission(shared);
    this.recovery = new JobRecovery(shared);
    this.claims = new JobClaims(deps);
  }

  submit(principal: Principal, input: SubmitInput, source: string): Promise<JobRecord> {
    return this.submission.submit(principal, input, source);
  }

  /** Several submissions stored in one transaction (see `batch.ts`): each item's job or error, in order. */
  submitBatch(
    principal: Principal,
    inputs: readonly SubmitInput[],
    source: string,
  ): Promise<BatchItemResult[]> {
    return submitBatch(this.submissionDeps, this.submission, principal, inputs, source);
  }

  /** Every recovery sweep once (see `JobRecovery`), with what each did. */
  sweep(now = Date.now()): Promise<SweepCounts> {
    return this.recovery.sweep(now);
  }

  sweepLost(now = Date.now()): Promise<number> {
    return this.recovery.sweepLost(now);
  }

  isRetryableFailure(error: ErrorInfo | undefined): boolean {
    return this.recovery.isRetryableFailure(error);
  }

  retryOrEnd(job: JobRecord, endState: 'lost' | 'failed', error: ErrorInfo): Promise<RetryOutcome> {
    return this.recovery.retryOrEnd(job, endState, error);
  }

  onAttemptFailure(event: JobEvent & { type: 'state' }): Promise<JobEvent> {
    return this.recovery.onAttemptFailure(event);
  }

  authenticateJob(authorization: string | undefined, jobId: string): Promise<JobRecord> {
    return this.claims.authenticateJob(authorization, jobId);
  }

  claim(job: JobRecord, agentId: string, mode: ClaimMode = 'fetch'): Promise<void> {
    return this.claims.claim(job, agentId, mode);
  }

  releaseClaim(job: JobRecord, agentId: string): Promise<void> {
    return this.claims.releaseClaim(job, agentId);
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
    const bus = await this.deps.clusters.busOfAgent(agentId);
    await bus.publishControl(agentId, {
      v: PROTOCOL_VERSION,
      type: 'cancel',
      jobId: job.id,
      attempt: job.attempt,
    });
  }
}

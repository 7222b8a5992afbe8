/**
 * Submission: resolves the workflow version the job pins and its params, stores the job as `offered` and
 * publishes its offer, in that order (an agent may report `loading` as soon as the offer is out).
 */
import { resolveParams, type ParamSpec, type Workflow } from '../../engine/index.js';
import { StewardError, type ParamValue } from '../../protocol/index.js';
import type { JobRecord, NewJob, TickClaim, WorkflowRecord } from '../../store/index.js';
import type { AuditEvent } from '../audit.js';
import type { Principal } from '../auth.js';
import { newJobId, newJobToken } from '../secrets.js';
import type { ReservedInputs, UploadService } from '../uploads.js';
import type { WorkflowRepository } from '../workflows.js';
import type { JobPartDeps } from './transition.js';

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
  /** The cluster to run on; default the workflow's `cluster:`, else the server's default. */
  cluster?: string | undefined;
  /**
   * Set by the scheduler: the schedule and tick firing this job. The tick's claim commits with the job's
   * insert, or the insert fails with TickTakenError (another server fired the tick).
   */
  schedule?: { id: string; name: string; dueAt: number; late: boolean; claim: TickClaim } | undefined;
}

export interface JobSubmissionDeps extends JobPartDeps {
  workflows: WorkflowRepository;
  /** Uploaded files for `file` params (moved into a job's inputs at submit). */
  uploads: UploadService;
  /** The cluster a job goes to, refused when it could not run there (see `ClusterService.admit`). */
  admit: (cluster: string | undefined, labels: readonly string[]) => Promise<string>;
}

/** A submission checked and ready to store: everything the job's row, audit entry and offer need. */
export interface PreparedJob {
  input: SubmitInput;
  id: string;
  record: WorkflowRecord;
  workflow: Workflow;
  reserved: ReservedInputs;
  now: number;
  deadline: number;
  cluster: string;
  token: { token: string; hash: string };
}

/**
 * Lookups a batch's items share (the same workflow reference resolves to the same version, the same
 * cluster and labels are admitted once). A single submit has none.
 */
export type SubmitMemo = Map<string, Promise<unknown>>;

function memoized<T>(memo: SubmitMemo | undefined, key: string, make: () => Promise<T>): Promise<T> {
  if (!memo) return make();
  let value = memo.get(key) as Promise<T> | undefined;
  if (!value) {
    value = make();
    memo.set(key, value);
  }
  return value;
}

export class JobSubmission {
  constructor(private readonly deps: JobSubmissionDeps) {}

  async submit(principal: Principal, input: SubmitInput, source: string): Promise<JobRecord> {
    const prepared = await this.prepare(principal, input);
    if (!('token' in prepared)) return prepared;
    const inserted = await this.insert(principal, prepared);
    // A retry of a submission that already created its job: answer with that job, submit nothing.
    if (!inserted.created) {
      await this.deps.uploads.release(prepared.id);
      return inserted.job;
    }
    const job = inserted.job;
    await this.attachInputs(job, prepared.reserved);
    await this.cancelIfOwnerDisabled(principal, [job]);
    // The audit entry is written while the broker confirms the offer: both are done before the answer.
    const audited = this.deps.audit.record(this.auditEntry(principal, prepared, job, source));
    try {
      await this.offer(prepared, job);
    } finally {
      await audited;
    }
    return job;
  }

  /**
   * Checks a submission as far as it can be without storing it: the workflow version it pins (the viewer
   * role in its space), its params, its cluster, its uploads (reserved for the new job id). Returns the job
   * a retried submission created before, when its uploads were used by that job.
   */
  async prepare(
    principal: Principal,
    input: SubmitInput,
    memo?: SubmitMemo,
  ): Promise<PreparedJob | JobRecord> {
    const { workflows, config } = this.deps;
    // Needs the viewer role in the workflow's space; the version resolved here is pinned for good.
    const record = await memoized(memo, `workflow\0${input.workflow}`, () =>
      workflows.resolve(principal, input.workflow),
    );
    const workflow = await workflows.parsedFor(record);
    const resolved = resolveParams(workflow, input.params);
    // Refused here, before anything is stored, rather than after the delivery limit or the load timeout.
    const requested = input.cluster ?? workflow.cluster;
    const cluster = await memoized(memo, `cluster\0${requested ?? ''}\0${input.labels.join('\0')}`, () =>
      this.deps.admit(requested, input.labels),
    );
    const now = Date.now();
    const id = newJobId(now);
    const reserved = await this.reserveInputs(principal.user, id, workflow.params, resolved, input);
    if (!('uploads' in reserved)) return reserved;
    const deadline = now + config.loadTimeoutMs;
    return { input, id, record, workflow, reserved, now, deadline, cluster, token: newJobToken() };
  }

  /**
   * Publishes the offer of a stored job (see `OfferPublisher.publish`). When the bus refuses it the job is
   * failed, so nobody may offer it later behind the submitter's back, and the error is thrown.
   */
  async offer(prepared: PreparedJob, job: JobRecord): Promise<void> {
    this.deps.watch.publishJob(job);
    try {
      // The confirmation's write is not waited for: if it is lost, a sweep offers the job again.
      await this.deps.offers.publish(job, {
        jobToken: prepared.token.token,
        deadline: prepared.deadline,
        now: prepared.now,
      });
    } catch (error) {
      this.deps.logger.error({ err: error, jobId: job.id }, 'publishing the job offer failed');
      await this.deps.transition(
        job.id,
        'failed',
        { error: { code: 'STEWARD_UNAVAILABLE', message: 'the job could not be handed to the bus' } },
        { attempt: job.attempt },
      );
      throw error;
    }
  }

  /** The job's row as stored: recorded as offered before publishing, in the same commit as the insert. */
  newJob(principal: Principal, prepared: PreparedJob): NewJob {
    const { input, id, record, workflow } = prepared;
    return {
      id,
      user: principal.user,
      workflow: { space: record.space, name: record.name, version: record.version, digest: record.digest },
      params: prepared.reserved.params,
      labels: input.labels,
      timeoutMs: input.timeoutSeconds === undefined ? null : input.timeoutSeconds * 1000,
      jobTokenHash: prepared.token.hash,
      createdAt: prepared.now,
      steps: workflow.steps.map((step) => ({ id: step.id, kind: step.kind })),
      retries: input.retries ?? null,
      loadDeadline: prepared.deadline,
      offered: true,
      submitKey: input.idempotencyKey ?? null,
      cluster: prepared.cluster,
      ...(input.schedule ? { tick: input.schedule.claim } : {}),
    };
  }

  /** The `job.submit` audit entry. */
  auditEntry(
    principal: Principal,
    prepared: PreparedJob,
    job: Pick<JobRecord, 'id' | 'cluster'>,
    source: string,
  ): AuditEvent {
    const { input, record } = prepared;
    return {
      actor: principal.user,
      action: 'job.submit',
      target: job.id,
      source,
      detail: {
        workflow: `${record.space}/${record.name}@${record.version}`,
        labels: input.labels,
        cluster: job.cluster,
        ...(input.retries !== undefined ? { retries: input.retries } : {}),
        ...(input.rerunOf !== undefined ? { rerunOf: input.rerunOf } : {}),
        ...(input.schedule !== undefined
          ? {
              schedule: input.schedule.id,
              scheduleName: input.schedule.name,
              dueAt: new Date(input.schedule.dueAt).toISOString(),
              ...(input.schedule.late ? { late: true } : {}),
            }
          : {}),
      },
    };
  }

  /** Stores the job. Without a job, what the submission reserved is free again at once, not at its expiry. */
  private async insert(
    principal: Principal,
    prepared: PreparedJob,
  ): Promise<{ created: boolean; job: JobRecord }> {
    try {
      return await this.deps.store.insertJobOnce(this.newJob(principal, prepared));
    } catch (error) {
      await this.deps.uploads.release(prepared.id).catch(() => undefined);
      throw error;
    }
  }

  /** The inputs are in place before the offer exists, so an executor always finds them. */
  async attachInputs(job: JobRecord, reserved: ReservedInputs): Promise<void> {
    try {
      await this.deps.uploads.attach(reserved);
    } catch (error) {
      this.deps.logger.error({ err: error, jobId: job.id }, 'moving the uploaded inputs into the job failed');
      await this.deps.transition(
        job.id,
        'failed',
        {
          error: { code: 'STEWARD_INTERNAL', message: 'the uploaded files could not be stored with the job' },
        },
        { attempt: job.attempt },
      );
      throw error;
    }
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
   * The user may have been disabled after this request authenticated; disabling cancels the jobs it finds
   * after its commit, so jobs written after that commit must cancel themselves here, before any offer.
   */
  async cancelIfOwnerDisabled(principal: Principal, jobs: readonly JobRecord[]): Promise<void> {
    const owner = await this.deps.store.getUser(principal.user);
    if (owner && !owner.disabled) return;
    for (const job of jobs)
      await this.deps.transition(
        job.id,
        'canceled',
        { error: { code: 'STEWARD_JOB_CANCELED', message: `canceled: user ${principal.user} is disabled` } },
        { from: ['queued', 'offered'] },
      );
    throw new StewardError('STEWARD_UNAUTHENTICATED', 'this user is disabled');
  }
}

/**
 * Submission: resolves the workflow version the job pins and its params, stores the job as `offered` and
 * publishes its offer, in that order (an agent may report `loading` as soon as the offer is out).
 */
import { resolveParams, type ParamSpec, type Workflow } from '../../engine/index.js';
import { StewardError, type ParamValue } from '../../protocol/index.js';
import type { JobRecord, TickClaim, WorkflowRecord } from '../../store/index.js';
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

export class JobSubmission {
  constructor(private readonly deps: JobSubmissionDeps) {}

  async submit(principal: Principal, input: SubmitInput, source: string): Promise<JobRecord> {
    const { workflows, config } = this.deps;
    // Needs the viewer role in the workflow's space; the version resolved here is pinned for good.
    const record = await workflows.resolve(principal, input.workflow);
    const workflow = await workflows.parsedFor(record);
    const resolved = resolveParams(workflow, input.params);
    // Refused here, before anything is stored, rather than after the delivery limit or the load timeout.
    const cluster = await this.deps.admit(input.cluster ?? workflow.cluster, input.labels);
    const now = Date.now();
    const id = newJobId(now);
    const reserved = await this.reserveInputs(principal.user, id, workflow.params, resolved, input);
    if (!('uploads' in reserved)) return reserved;
    const token = newJobToken();
    const deadline = now + config.loadTimeoutMs;
    const inserted = await this.insert(
      principal,
      input,
      { id, record, workflow, reserved, now, deadline, cluster },
      token.hash,
    );
    // A retry of a submission that already created its job: answer with that job, submit nothing.
    if (!inserted.created) {
      await this.deps.uploads.release(id);
      return inserted.job;
    }
    const job = inserted.job;
    await this.attachInputs(job, reserved);
    await this.cancelIfOwnerDisabled(principal, job);
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
    });
    try {
      // The confirmation's write is not waited for: if it is lost, a sweep offers the job again.
      await this.deps.offers.publish(job, { jobToken: token.token, deadline, now });
    } catch (error) {
      await audited;
      this.deps.logger.error({ err: error, jobId: job.id }, 'publishing the job offer failed');
      // The submitter is told it failed, so nobody may offer it later behind their back.
      await this.deps.transition(
        job.id,
        'failed',
        { error: { code: 'STEWARD_UNAVAILABLE', message: 'the job could not be handed to the bus' } },
        { attempt: job.attempt },
      );
      throw error;
    }
    await audited;
    return job;
  }

  /**
   * Stores the job, recorded as offered before publishing (an agent may report `loading` as soon as the
   * offer is out), in the same commit as the insert. Without a job, what the submission reserved is free
   * again at once, not only when it expires.
   */
  private async insert(
    principal: Principal,
    input: SubmitInput,
    job: {
      id: string;
      record: WorkflowRecord;
      workflow: Workflow;
      reserved: ReservedInputs;
      now: number;
      deadline: number;
      cluster: string;
    },
    jobTokenHash: string,
  ): Promise<{ created: boolean; job: JobRecord }> {
    const { id, record, workflow, now } = job;
    try {
      return await this.deps.store.insertJobOnce({
        id,
        user: principal.user,
        workflow: { space: record.space, name: record.name, version: record.version, digest: record.digest },
        params: job.reserved.params,
        labels: input.labels,
        timeoutMs: input.timeoutSeconds === undefined ? null : input.timeoutSeconds * 1000,
        jobTokenHash,
        createdAt: now,
        steps: workflow.steps.map((step) => ({ id: step.id, kind: step.kind })),
        retries: input.retries ?? null,
        loadDeadline: job.deadline,
        offered: true,
        submitKey: input.idempotencyKey ?? null,
        cluster: job.cluster,
        ...(input.schedule ? { tick: input.schedule.claim } : {}),
      });
    } catch (error) {
      await this.deps.uploads.release(id).catch(() => undefined);
      throw error;
    }
  }

  /** The inputs are in place before the offer exists, so an executor always finds them. */
  private async attachInputs(job: JobRecord, reserved: ReservedInputs): Promise<void> {
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
   * after its commit, so a job written after that commit must cancel itself here, before any offer.
   */
  private async cancelIfOwnerDisabled(principal: Principal, job: JobRecord): Promise<void> {
    const owner = await this.deps.store.getUser(principal.user);
    if (owner && !owner.disabled) return;
    await this.deps.transition(
      job.id,
      'canceled',
      { error: { code: 'STEWARD_JOB_CANCELED', message: `canceled: user ${principal.user} is disabled` } },
      { from: ['queued', 'offered'] },
    );
    throw new StewardError('STEWARD_UNAUTHENTICATED', 'this user is disabled');
  }
}

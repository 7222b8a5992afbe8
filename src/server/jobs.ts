/**
 * Jobs: submit (resolve workflow + params, sign and publish the offer), visibility, cancel, the job-token
 * check for executor routes, and the load-timeout sweeper. Every state change goes through
 * `Store.transitionJob` and, once committed, is published to the JobWatch.
 */
import { timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import type { Bus } from '../bus/index.js';
import type { CompiledServerConfig } from '../config/index.js';
import { resolveParams } from '../engine/index.js';
import {
  isTerminal,
  StewardError,
  type ErrorInfo,
  type JobOffer,
  type JobState,
  type OfferSigner,
  type ParamValue,
} from '../protocol/index.js';
import type { JobPatch, JobRecord, Store, TransitionResult } from '../store/index.js';
import type { AuditLog } from './audit.js';
import { bearerOf, type Principal } from './auth.js';
import { newJobId, newSecret, sha256Hex } from './secrets.js';
import type { JobWatch } from './watch.js';
import type { WorkflowRepository } from './workflows.js';

export interface SubmitInput {
  workflow: string;
  params: Record<string, ParamValue>;
  labels: string[];
  timeoutSeconds?: number | undefined;
}

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
}

export function formatDuration(ms: number): string {
  if (ms % 86_400_000 === 0) return `${ms / 86_400_000}d`;
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

export class JobService {
  constructor(private readonly deps: JobServiceDeps) {}

  async submit(principal: Principal, input: SubmitInput, source: string): Promise<JobRecord> {
    const { store, workflows, signer, bus, config } = this.deps;
    const record = await workflows.resolve(input.workflow);
    const workflow = await workflows.parsedFor(record);
    const params = resolveParams(workflow, input.params);
    const now = Date.now();
    const jobToken = newSecret('stj_');
    const timeoutMs = input.timeoutSeconds === undefined ? null : input.timeoutSeconds * 1000;
    const deadline = now + config.loadTimeoutMs;
    // Recorded as offered before publishing (an agent may report `loading` as soon as the offer is out),
    // in the same commit as the insert.
    const job = await store.insertJob({
      id: newJobId(now),
      user: principal.user,
      workflow: { name: record.name, version: record.version, digest: record.digest },
      params,
      labels: input.labels,
      timeoutMs,
      jobTokenHash: sha256Hex(jobToken),
      createdAt: now,
      steps: workflow.steps.map((step) => ({ id: step.id, kind: step.kind })),
      loadDeadline: deadline,
    });
    this.deps.watch.publishJob(job);
    const offer: JobOffer = {
      v: 1,
      jobId: job.id,
      attempt: job.attempt,
      user: job.user,
      workflow: job.workflow,
      params,
      labels: input.labels,
      jobToken,
      serverUrl: this.deps.serverUrl(),
      limits: timeoutMs === null ? {} : { timeoutMs },
      deadline,
      issuedAt: now,
    };
    const signed = signer.sign(offer);
    // The audit entry is written while the broker confirms the offer: both are done before the answer.
    const audited = this.deps.audit.record({
      actor: principal.user,
      action: 'job.submit',
      target: job.id,
      source,
      detail: { workflow: `${record.name}@${record.version}`, labels: input.labels },
    });
    try {
      await bus.publishOffer(signed);
    } catch (error) {
      await audited;
      this.deps.logger.error({ err: error, jobId: job.id }, 'publishing the job offer failed');
      await this.transition(job.id, 'failed', {
        error: { code: 'STEWARD_UNAVAILABLE', message: 'the job could not be handed to the bus' },
      });
      throw new StewardError('STEWARD_UNAVAILABLE', 'the bus did not accept the job offer; retry later', {
        cause: error,
      });
    }
    await audited;
    return job;
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

  async cancel(principal: Principal, id: string, source: string): Promise<JobRecord> {
    const job = await this.visibleJob(principal, id, source);
    if (isTerminal(job.state))
      throw new StewardError('STEWARD_JOB_NOT_CANCELABLE', `job ${id} already ended (${job.state})`);
    const error: ErrorInfo = { code: 'STEWARD_JOB_CANCELED', message: `canceled by ${principal.user}` };
    let result: JobRecord = job;
    if (job.state === 'queued' || job.state === 'offered') {
      const moved = await this.transition(id, 'canceled', { error }, { from: ['queued', 'offered'] });
      if (moved.ok) result = moved.job;
      else if (moved.job && (moved.job.state === 'loading' || moved.job.state === 'running'))
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
      detail: { state: job.state },
    });
    return result;
  }

  /** Loading/running jobs end when the agent reports it; the server only asks. */
  private async requestCancel(job: JobRecord): Promise<JobRecord> {
    const updated = (await this.deps.store.requestCancel(job.id)) ?? job;
    if (updated.agentId) {
      await this.deps.bus.publishControl(updated.agentId, {
        v: 1,
        type: 'cancel',
        jobId: updated.id,
        attempt: updated.attempt,
      });
    } else {
      this.deps.logger.warn({ jobId: job.id }, 'cancel requested for a job with no agent recorded');
    }
    return updated;
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

  /** Expires jobs no executor loaded within the load timeout. Returns how many it expired. */
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
        { from: ['offered', 'loading'] },
      );
      if (result.ok) {
        expired++;
        this.deps.logger.info({ jobId: job.id }, message);
      }
    }
    return expired + (await this.sweepLost(now));
  }

  /** Running jobs of agents silent past their lease end `lost` (their outcome is unknown). */
  async sweepLost(now = Date.now()): Promise<number> {
    const leaseMs = this.deps.config.agentLeaseMs;
    const orphans = await this.deps.store.listRunningJobsOfSilentAgents(now - leaseMs);
    let lost = 0;
    for (const job of orphans) {
      const message = `agent ${job.agentId ?? '?'} sent no heartbeat for more than ${formatDuration(leaseMs)}; the job's outcome is unknown`;
      const result = await this.transition(
        job.id,
        'lost',
        { error: { code: 'STEWARD_AGENT_LOST', message } },
        { from: ['running'], attempt: job.attempt },
      );
      if (result.ok) {
        lost++;
        this.deps.logger.warn({ jobId: job.id, agentId: job.agentId }, message);
      }
    }
    return lost;
  }
}

/**
 * The one path by which a job's offer reaches the bus: signed with the server key, published, then recorded
 * as confirmed. Submission, recovery sweeps and retries all call `publish`; they differ only in what they do
 * when the bus refuses it.
 */
import type { Logger } from 'pino';
import {
  PROTOCOL_VERSION,
  StewardError,
  type InlineWorkflow,
  type JobOffer,
  type OfferSigner,
  type SignedOffer,
} from '../../protocol/index.js';
import type { CompiledServerConfig } from '../../config/index.js';
import type { JobRecord, Store } from '../../store/index.js';
import type { ClusterBuses } from '../clusters/registry.js';
import type { WorkflowRepository } from '../workflows.js';

export interface OfferPublisherDeps {
  store: Store;
  /** The bus of each cluster: an offer goes only to its job's cluster. */
  clusters: ClusterBuses;
  signer: OfferSigner;
  logger: Logger;
  /** The URL executors use to reach this server (known once listening). */
  serverUrl: () => string;
  /** The pinned workflow versions (a small one travels inside its offer). */
  workflows: Pick<WorkflowRepository, 'pinned'>;
  config: Pick<CompiledServerConfig, 'offerWorkflowMaxBytes' | 'stepLogLimitBytes'>;
}

/** What the offer carries besides the job's row: the token (only its hash is stored) and the load deadline. */
export interface OfferTerms {
  jobToken: string;
  deadline: number;
  now: number;
}

export class OfferPublisher {
  constructor(private readonly deps: OfferPublisherDeps) {}

  /**
   * Signs and publishes the offer of the job's current attempt (already recorded `offered`). Resolves once
   * the broker confirmed it, with `recorded`: the write marking it confirmed (never rejects). A caller that
   * answers a client need not wait for that write: if it is lost, a sweep (adoptUnpublished) offers the job
   * again as a new attempt — wasteful, never a hidden second run. Throws STEWARD_UNAVAILABLE when the job's
   * record cannot be flushed or the bus refuses the offer.
   */
  async publish(job: JobRecord, terms: OfferTerms): Promise<{ recorded: Promise<void> }> {
    // A cluster detached since (its bus closed) throws STEWARD_CLUSTER_DETACHED, as the job's error.
    const bus = this.deps.clusters.busFor(job.cluster);
    // The job's record is on disk before its offer exists: an offer whose job a power cut took back would
    // run as its user with no record or audit of it. The embedded store commits without flushing and
    // flushes in groups (Store.durable); the flush runs while the offer is read and signed, and commits made
    // meanwhile share it.
    const durable = this.deps.store.durable();
    // Awaited below; a failure while signing must not leave its rejection unhandled.
    durable.catch(() => {});
    const inline = await this.inlineWorkflow(job);
    const signed = this.sign(job, terms, inline);
    try {
      await durable;
    } catch (error) {
      throw new StewardError(
        'STEWARD_UNAVAILABLE',
        "the job's record could not be made durable; retry later",
        {
          cause: error,
        },
      );
    }
    try {
      await bus.publishOffer(signed);
    } catch (error) {
      throw new StewardError('STEWARD_UNAVAILABLE', 'the bus did not accept the job offer; retry later', {
        cause: error,
      });
    }
    return { recorded: this.recordPublished(job) };
  }

  /**
   * The job's workflow to carry in its offer, when it is small (`offerWorkflowMaxBytes`) and needs nothing
   * else from the server: no assets to download, no `file` params (whose files the executor fetches along
   * with the list of them). Anything else, or a workflow that cannot be read now, is fetched as before.
   */
  private async inlineWorkflow(job: JobRecord): Promise<InlineWorkflow | undefined> {
    const maxBytes = this.deps.config.offerWorkflowMaxBytes;
    if (maxBytes === 0) return undefined;
    const record = await this.deps.workflows.pinned(job.workflow).catch(() => undefined);
    if (
      !record ||
      record.assets.length > 0 ||
      record.params.some((param) => param.type === 'file') ||
      // As serialized in the offer (escapes included), which must stay under the bus's message limit.
      Buffer.byteLength(JSON.stringify(record.source)) > maxBytes
    )
      return undefined;
    return { source: record.source, format: record.format, stepLogBytes: this.deps.config.stepLogLimitBytes };
  }

  private sign(
    job: JobRecord,
    { jobToken, deadline, now }: OfferTerms,
    inline: InlineWorkflow | undefined,
  ): SignedOffer {
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
      ...(inline ? { inline } : {}),
    };
    return this.deps.signer.sign(offer);
  }

  private async recordPublished(job: JobRecord): Promise<void> {
    try {
      await this.deps.store.markOfferPublished(job.id, job.attempt);
    } catch (error) {
      this.deps.logger.warn({ err: error, jobId: job.id }, 'could not record the offer as published');
    }
  }
}

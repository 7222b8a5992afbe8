/**
 * Consumes what agents publish (job events, heartbeats) and what the bus dead-letters. Every body is
 * validated with the protocol's schema first; what does not parse is dead-lettered with the reason and
 * logged, never thrown at the dispatch loop. A handler failure (store down) rejects, so the bus requeues.
 */
import type { Logger } from 'pino';
import type { Bus, DeadLetter, Delivery, Subscription } from '../bus/index.js';
import {
  AgentMessage,
  isTerminal,
  type ErrorInfo,
  type JobState,
  type OfferVerifier,
} from '../protocol/index.js';
import type { Store } from '../store/index.js';
import type { JobService } from './jobs.js';
import type { JobWatch } from './watch.js';

export class EventConsumer {
  private readonly subscriptions: Subscription[] = [];
  /** Per job, the tail of its chain of event applications (see inJobOrder). */
  private readonly chains = new Map<string, Promise<void>>();

  constructor(
    private readonly deps: {
      bus: Bus;
      store: Store;
      jobs: JobService;
      watch: JobWatch;
      logger: Logger;
      verifier: OfferVerifier;
    },
  ) {}

  async start(): Promise<void> {
    this.subscriptions.push(await this.deps.bus.consumeEvents((delivery) => this.onEvent(delivery)));
    this.subscriptions.push(await this.deps.bus.consumeDeadLetters((letter) => this.onDeadLetter(letter)));
  }

  async stop(): Promise<void> {
    const subscriptions = this.subscriptions.splice(0);
    await Promise.allSettled(subscriptions.map((s) => s.cancel()));
  }

  async onEvent(delivery: Delivery<unknown>): Promise<void> {
    const parsed = AgentMessage.safeParse(delivery.body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const reason = `invalid agent message: ${issue ? `${issue.path.join('.') || '(root)'}: ${issue.message}` : 'unknown'}`;
      this.deps.logger.warn({ reason }, 'dead-lettering an invalid agent message');
      await delivery.deadLetter(reason);
      return;
    }
    const message = parsed.data;
    if (message.type === 'heartbeat') {
      await this.deps.store.upsertAgent(message);
      await delivery.ack();
      return;
    }
    const result = await this.inJobOrder(message.jobId, () => this.deps.store.applyEvent(message));
    if (result.job) this.deps.watch.publishJob(result.job);
    if (result.step) this.deps.watch.publishStep(result.step);
    if (result.applied && !result.job && message.type === 'state' && !isTerminal(message.state)) {
      await this.stopIfEnded(message.jobId, message.attempt, message.agentId);
    }
    if (!result.applied)
      this.deps.logger.debug(
        { jobId: message.jobId, attempt: message.attempt, seq: message.seq },
        'duplicate event ignored',
      );
    await delivery.ack();
  }

  /**
   * An agent reports progress on a job the server already ended (expired by the load timeout, canceled while
   * the offer was in flight): tell that agent to stop, or it would run a job nobody can collect.
   */
  private async stopIfEnded(jobId: string, attempt: number, agentId: string): Promise<void> {
    const job = await this.deps.store.getJob(jobId);
    if (!job || job.attempt !== attempt || !isTerminal(job.state)) return;
    this.deps.logger.info(
      { jobId, agentId, state: job.state },
      'agent reports on an ended job; asking it to stop',
    );
    await this.deps.bus.publishControl(agentId, { v: 1, type: 'cancel', jobId, attempt });
  }

  /**
   * Applies one job's events one at a time, in the order the bus delivered them. The bus may hand over many
   * deliveries at once; applying them concurrently would reorder a job's events (harmless for the store,
   * which is idempotent, but live listeners would see a step change after the job's end).
   */
  private inJobOrder<T>(jobId: string, work: () => Promise<T>): Promise<T> {
    const previous = this.chains.get(jobId) ?? Promise.resolve();
    const run = previous.then(work, work);
    const settled = run.then(
      () => undefined,
      () => undefined,
    );
    this.chains.set(jobId, settled);
    void settled.then(() => {
      if (this.chains.get(jobId) === settled) this.chains.delete(jobId);
    });
    return run;
  }

  /**
   * Offers the bus gave up on end their job: past the delivery limit it failed (no agent took it), expired
   * offers expired. Only the offer's own attempt is touched, and only while it still waits for an agent.
   */
  async onDeadLetter(letter: DeadLetter): Promise<void> {
    if (letter.queue !== 'offers') {
      this.deps.logger.warn({ queue: letter.queue, reason: letter.reason }, 'message dead-lettered');
      return;
    }
    const offer = this.readOffer(letter.body);
    if (!offer) {
      this.deps.logger.warn({ reason: letter.reason }, 'dead-lettered offer is unreadable');
      return;
    }
    let to: JobState;
    let error: ErrorInfo;
    if (letter.reason === 'delivery-limit') {
      to = 'failed';
      error = {
        code: 'STEWARD_DELIVERY_LIMIT',
        message: `the job offer was delivered ${letter.deliveryCount} times and no agent accepted it`,
      };
    } else if (/expired|STEWARD_OFFER_EXPIRED/i.test(letter.reason)) {
      to = 'expired';
      error = {
        code: 'STEWARD_LOAD_TIMEOUT',
        message:
          `the job offer expired before an executor loaded it (${letter.reason})` +
          (offer.labels.length > 0
            ? `; it requires label(s) ${offer.labels.join(', ')}: is an agent with them running?`
            : ''),
      };
    } else {
      to = 'failed';
      error = {
        code: 'STEWARD_DELIVERY_LIMIT',
        message: `the job offer was dead-lettered: ${letter.reason}`,
      };
    }
    try {
      await this.deps.jobs.transition(
        offer.jobId,
        to,
        { error },
        { from: ['queued', 'offered'], attempt: offer.attempt },
      );
    } catch (err) {
      this.deps.logger.error({ err, jobId: offer.jobId }, 'could not record a dead-lettered offer');
    }
  }

  /** Only offers carrying our own valid signature may end a job: bus access alone must not fail jobs. */
  private readOffer(body: unknown): { jobId: string; attempt: number; labels: string[] } | undefined {
    try {
      // now = 0: an expired deadline is expected here and must not hide the offer.
      const offer = this.deps.verifier.verify(body, 0);
      return { jobId: offer.jobId, attempt: offer.attempt, labels: offer.labels };
    } catch {
      return undefined;
    }
  }
}

/**
 * Consumes what agents publish (job events, heartbeats) and what the bus dead-letters. Every body is
 * validated with the protocol's schema first; what does not parse is dead-lettered with the reason and
 * logged, never thrown at the dispatch loop. A handler failure (store down) rejects, so the bus requeues.
 */
import type { Logger } from 'pino';
import type { Bus, DeadLetter, Delivery, Subscription } from '../bus/index.js';
import {
  AgentMessage,
  Heartbeat,
  isTerminal,
  PROTOCOL_VERSION,
  type ErrorInfo,
  type JobEvent,
  type JobState,
  type OfferVerifier,
} from '../protocol/index.js';
import type { AppliedEvent, Store } from '../store/index.js';
import type { JobService, TransitionObserver } from './jobs/index.js';
import type { JobWatch } from './watch.js';

/** Causes an agent gives when it hands an offer back because the executor loading it died. */
const LOST_EXECUTOR: ReadonlySet<string> = new Set(['STEWARD_EXECUTOR_CRASHED', 'STEWARD_OUT_OF_MEMORY']);

interface QueuedEvent {
  event: JobEvent;
  resolve: (result: AppliedEvent) => void;
  reject: (error: unknown) => void;
}

/** Most events in one transaction: bounds how long one commit holds the database. */
const MAX_BATCH = 256;

export class EventConsumer {
  private readonly subscriptions: Subscription[] = [];
  /** Events waiting for the next group commit (see applyInOrder). */
  private readonly queued: QueuedEvent[] = [];
  private writing: Promise<void> | undefined;

  constructor(
    private readonly deps: {
      bus: Bus;
      store: Store;
      jobs: JobService;
      watch: JobWatch;
      logger: Logger;
      verifier: OfferVerifier;
      /** The cluster whose bus this consumes (agents are recorded under it). Default `local`. */
      cluster?: string;
      /** Told of every state change an event made (the metrics). Default: nobody. */
      observeTransition?: TransitionObserver;
    },
  ) {}

  async start(): Promise<void> {
    this.subscriptions.push(await this.deps.bus.consumeEvents((delivery) => this.onEvent(delivery)));
    this.subscriptions.push(await this.deps.bus.consumeHeartbeats((delivery) => this.onHeartbeat(delivery)));
    this.subscriptions.push(await this.deps.bus.consumeDeadLetters((letter) => this.onDeadLetter(letter)));
  }

  async stop(): Promise<void> {
    const subscriptions = this.subscriptions.splice(0);
    await Promise.allSettled(subscriptions.map((s) => s.cancel()));
  }

  /**
   * A heartbeat from the heartbeats queue. One that does not parse is logged and dropped (settled by the
   * bus): the next comes within the agent's heartbeat interval, and keeping a bad one would help nobody.
   */
  async onHeartbeat(delivery: Delivery<unknown>): Promise<void> {
    const parsed = Heartbeat.safeParse(delivery.body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      this.deps.logger.warn(
        { reason: issue ? `${issue.path.join('.') || '(root)'}: ${issue.message}` : 'unknown' },
        'dropped an invalid heartbeat',
      );
      return;
    }
    await this.deps.store.upsertAgent(parsed.data, undefined, this.deps.cluster);
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
    const events = message.type === 'events' ? message.events : [message];
    // A batch's events join the group commit together, in order; the delivery is acked once all are
    // committed and on disk. If any fails, the bus requeues the whole batch and the ones already applied are
    // duplicates.
    const results = await Promise.all(events.map((event) => this.applyInOrder(event)));
    for (let i = 0; i < events.length; i++) await this.afterApply(events[i]!, results[i]!);
    await this.deps.store.durable();
    await delivery.ack();
  }

  private async afterApply(event: JobEvent, result: AppliedEvent): Promise<void> {
    if (result.claimedBy !== undefined) {
      await this.refuseUnclaimed(event, result.claimedBy);
      return;
    }
    if (result.applied && !result.job && event.type === 'state' && !isTerminal(event.state)) {
      await this.stopIfEnded(event.jobId, event.attempt, event.agentId);
    }
    if (!result.applied)
      this.deps.logger.debug(
        { jobId: event.jobId, attempt: event.attempt, seq: event.seq },
        'duplicate event ignored',
      );
  }

  /**
   * An agent reports progress on a job the server already ended (expired by the load timeout, canceled while
   * the offer was in flight), or on an attempt the server gave up for a newer one (its agent was silent past
   * the lease and came back): tell that agent to stop, or it would run a job nobody can collect.
   */
  private async stopIfEnded(jobId: string, attempt: number, agentId: string): Promise<void> {
    const job = await this.deps.store.getJob(jobId);
    if (!job) return;
    const superseded = attempt < job.attempt;
    if (!superseded && (job.attempt !== attempt || !isTerminal(job.state))) return;
    this.deps.logger.info(
      { jobId, agentId, state: job.state, attempt, currentAttempt: job.attempt },
      superseded
        ? 'agent reports on a superseded attempt; asking it to stop'
        : 'agent reports on an ended job; asking it to stop',
    );
    await this.deps.bus.publishControl(agentId, { v: PROTOCOL_VERSION, type: 'cancel', jobId, attempt });
  }

  /**
   * An agent reports on an attempt another agent holds (the store recorded the event as seen and left the
   * job alone). Its `loading` is expected: an agent reports it before its executor's fetch is refused. A
   * `running` or step event would mean it runs a second copy of the attempt, which the claim at the fetch
   * should have made impossible: tell it to stop.
   */
  private async refuseUnclaimed(event: JobEvent, claimedBy: string): Promise<void> {
    const { jobId, attempt, agentId } = event;
    if (event.type === 'state' && event.state !== 'running') {
      this.deps.logger.info(
        { jobId, attempt, agentId, claimedBy, state: event.state },
        "ignored an event of an agent that does not hold the job's attempt",
      );
      return;
    }
    this.deps.logger.warn(
      { jobId, attempt, agentId, claimedBy },
      "an agent that does not hold the job's attempt reports running it; asking it to stop",
    );
    await this.deps.bus.publishControl(agentId, { v: PROTOCOL_VERSION, type: 'cancel', jobId, attempt });
  }

  /**
   * Group commit: events that arrive while a batch is being written wait and then go together, in delivery
   * order, in one transaction (one fsync for the lot instead of one each). Each delivery is acked by the bus
   * only after its promise resolves, i.e. after the transaction holding it committed: durability is as with
   * one transaction per event. Applying in delivery order, one batch at a time, also keeps each job's events
   * in order, so live listeners never see a step change after the job's end.
   */
  private applyInOrder(event: JobEvent): Promise<AppliedEvent> {
    return new Promise<AppliedEvent>((resolve, reject) => {
      this.queued.push({ event, resolve, reject });
      if (!this.writing) {
        // Give the deliveries already read from the socket a chance to join the first batch.
        this.writing = new Promise<void>((done) => setImmediate(done)).then(() => this.writeQueued());
      }
    });
  }

  private async writeQueued(): Promise<void> {
    try {
      while (this.queued.length > 0) {
        // An executor that died under the job is not the job's fault: it may run again as a new attempt. That
        // decision reads the job as the events before it left it, so it is taken alone, after them.
        if (this.isRetryableFailure(this.queued[0]!.event)) {
          const item = this.queued.shift()!;
          try {
            const event = await this.deps.jobs.onAttemptFailure(item.event as JobEvent & { type: 'state' });
            this.settle(item, await this.deps.store.applyEvent(event));
          } catch (error) {
            item.reject(error);
          }
          continue;
        }
        const end = this.queued.findIndex((item) => this.isRetryableFailure(item.event));
        const batch = this.queued.splice(0, Math.min(MAX_BATCH, end < 0 ? this.queued.length : end));
        let results: AppliedEvent[] | undefined;
        try {
          // A `loading` event claims its attempt as it is applied (the claim is no longer the executor's
          // fetch); a later agent's events for that attempt are refused.
          results = await this.deps.store.applyEvents(batch.map((item) => item.event));
        } catch {
          // One bad event must not hold back the others: apply them one by one; a failure rejects only its
          // own delivery (which the bus requeues).
        }
        if (results) {
          batch.forEach((item, index) => this.settle(item, results[index]!));
          continue;
        }
        for (const item of batch) {
          try {
            this.settle(item, await this.deps.store.applyEvent(item.event));
          } catch (error) {
            item.reject(error);
          }
        }
      }
    } finally {
      this.writing = undefined;
    }
  }

  /**
   * Tells live listeners what the event changed, then resolves its delivery. Listeners hear changes here, in
   * the order they were applied: were they told by each delivery's own continuation, two deliveries of one
   * group commit would interleave (a step's `succeeded` from the second, then its `running` from the first),
   * and `run --wait` printed steps out of order and twice.
   */
  private settle(item: QueuedEvent, result: AppliedEvent): void {
    if (result.claimedBy === undefined) {
      if (result.job) this.deps.watch.publishJob(result.job);
      if (result.job && result.from !== undefined) this.deps.observeTransition?.(result.job, result.from);
      if (result.step) this.deps.watch.publishStep(result.step);
    }
    item.resolve(result);
  }

  private isRetryableFailure(event: JobEvent): boolean {
    return (
      event.type === 'state' && event.state === 'failed' && this.deps.jobs.isRetryableFailure(event.error)
    );
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
    let from: readonly JobState[] = ['queued', 'offered'];
    const poison = letter.reason === 'delivery-limit' ? await this.poisonCause(offer) : undefined;
    if (poison !== undefined) {
      // Not retried: a new attempt would only go round the same agents and kill their executors again.
      to = 'failed';
      from = ['offered', 'loading'];
      error = {
        code: 'STEWARD_POISON_JOB',
        message:
          `offer dead-lettered after ${letter.deliveryCount} deliveries (the bus's delivery limit is ` +
          `${this.deps.bus.deliveryLimit}): the agents that took it lost its executor before the workflow ` +
          `loaded (last: ${poison}); not retried. See the per-user executor logs on the agents in the job's ` +
          `attempts, fix the workflow or those machines, and submit it again`,
      };
    } else if (letter.reason === 'delivery-limit') {
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
      await this.deps.jobs.transition(offer.jobId, to, { error }, { from, attempt: offer.attempt });
      await this.deps.store.durable();
    } catch (err) {
      this.deps.logger.error({ err, jobId: offer.jobId }, 'could not record a dead-lettered offer');
    }
  }

  /**
   * Why a job whose offer reached the delivery limit is poison, or undefined when it is not. Agents that took
   * the offer report `loading`; one that loses its executor before the ack hands the offer back with an
   * `offered` event carrying the cause; one that dies itself just falls silent, leaving the job `loading`.
   * Either way an agent took it and could not keep it. A job still `offered` without such a cause was never
   * taken (no agent with its labels or room): that is the plain delivery limit.
   */
  private async poisonCause(offer: { jobId: string; attempt: number }): Promise<string | undefined> {
    const job = await this.deps.store.getJob(offer.jobId);
    if (!job || job.attempt !== offer.attempt) return undefined;
    if (job.state === 'loading')
      return `agent ${job.agentId ?? '?'} stopped reporting while its executor loaded the job`;
    if (job.state === 'offered' && job.error && LOST_EXECUTOR.has(job.error.code)) return job.error.message;
    return undefined;
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

/**
 * The delivery loop every server runs: every `pollInterval` it claims the outbox rows that are due
 * (`NotificationStore.claimDue`: a conditional update, so two servers never send one attempt), sends each
 * through its rule's channel and settles it: delivered, retried later with exponential backoff and jitter,
 * given up after `maxAttempts` (audited as `notification.failed` in the same transaction), or dropped when
 * its rule is gone or a later attempt of the job superseded the end it announces. A failing tick is logged
 * and the loop goes on.
 */
import type { Logger } from 'pino';
import type { CompiledNotificationsConfig } from '../../config/index.js';
import { retryDelayMs } from '../../protocol/index.js';
import type { ClaimedDelivery, DeliverySettlement, Store } from '../../store/index.js';
import type { NotificationChannels } from './channels.js';
import { jobEndMessage } from './message.js';

/** Deliveries claimed per round. */
const BATCH = 8;
/** Settled deliveries are kept this long for `steward notify deliveries`, then pruned. */
const KEEP_SETTLED_MS = 30 * 86_400_000;
const PRUNE_EVERY_MS = 3_600_000;

export interface DispatcherDeps {
  store: Store;
  config: CompiledNotificationsConfig;
  channels: NotificationChannels;
  logger: Logger;
  /** The portal's base URL for links (the server's public URL). */
  baseUrl: () => string;
}

export class NotificationDispatcher {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly stopping = new AbortController();
  private lastPrune = 0;
  /** How long a claim lasts: well past the longest a send may take, so a live sender never loses it. */
  private readonly leaseMs: number;

  constructor(private readonly deps: DispatcherDeps) {
    const smtpMs = deps.config.smtp ? deps.config.smtp.timeoutMs * 3 : 0;
    this.leaseMs = 2 * Math.max(deps.config.webhookTimeoutMs, smtpMs) + 30_000;
  }

  start(): void {
    if (this.timer || this.stopping.signal.aborted) return;
    this.timer = setInterval(() => void this.tick(), this.deps.config.pollIntervalMs);
    this.timer.unref();
    void this.tick();
  }

  /** Sends what is due now (one round at a time; a round still running makes this a no-op). */
  tick(): Promise<void> {
    this.running ??= this.round()
      .catch((error: unknown) => this.deps.logger.error({ err: error }, 'notification round failed'))
      .finally(() => {
        this.running = undefined;
      });
    return this.running;
  }

  /** Stops the loop; webhook requests in flight are aborted and their claims given back. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.stopping.abort();
    await this.running;
  }

  private async round(): Promise<void> {
    for (;;) {
      if (this.stopping.signal.aborted) return;
      const now = Date.now();
      const claimed = await this.deps.store.notifications.claimDue(now, this.leaseMs, BATCH);
      if (claimed.length === 0) break;
      await Promise.all(claimed.map((delivery) => this.deliver(delivery)));
      if (claimed.length < BATCH) break;
    }
    await this.pruneNow();
  }

  private async deliver(delivery: ClaimedDelivery): Promise<void> {
    const { store, logger } = this.deps;
    try {
      const outcome = await this.attempt(delivery);
      if (outcome === 'released') {
        await store.notifications.release(delivery.id, delivery.claimToken);
        return;
      }
      const settled = await store.notifications.settle(delivery.id, delivery.claimToken, outcome);
      const fields = { deliveryId: delivery.id, jobId: delivery.jobId, attempts: delivery.attempts };
      if (!settled) logger.warn(fields, 'notification claim expired before its attempt ended');
      else if (outcome.kind === 'failed')
        logger.warn({ ...fields, error: outcome.error }, 'notification given up');
      else if (outcome.kind === 'retry')
        logger.info({ ...fields, error: outcome.error }, 'notification failed; retrying');
    } catch (error) {
      // The claim runs out and the delivery comes due again.
      logger.error({ err: error, deliveryId: delivery.id }, 'notification delivery failed');
    }
  }

  /** One attempt at a claimed delivery and how to settle it (`released`: stopped mid-way, not counted). */
  private async attempt(delivery: ClaimedDelivery): Promise<DeliverySettlement | 'released'> {
    const { store, channels, config } = this.deps;
    const rule = await store.notifications.getRule(delivery.ruleId);
    if (!rule) return { kind: 'dropped', reason: 'its rule was removed' };
    const detail = await store.getJobDetail(delivery.jobId);
    if (!detail) return { kind: 'dropped', reason: 'the job no longer exists' };
    if (detail.job.attempt !== delivery.jobAttempt)
      return {
        kind: 'dropped',
        reason: `superseded: the job was retried as attempt ${detail.job.attempt} after this end`,
      };
    const schedule =
      detail.job.schedule === null ? undefined : await store.schedules.getSchedule(detail.job.schedule);
    const message = jobEndMessage(delivery.id, rule, detail, this.deps.baseUrl(), schedule?.name ?? null);
    const result = await channels.send(rule, message, this.stopping.signal);
    if (result.ok) return { kind: 'delivered' };
    if (this.stopping.signal.aborted) return 'released';
    if (delivery.attempts >= config.maxAttempts) {
      return {
        kind: 'failed',
        error: result.error,
        audit: {
          time: Date.now(),
          actor: 'system',
          action: 'notification.failed',
          target: delivery.jobId,
          source: null,
          detail: {
            delivery: delivery.id,
            rule: rule.id,
            user: delivery.user,
            channel: rule.channel,
            attempts: delivery.attempts,
            error: result.error,
          },
        },
      };
    }
    const delay = retryDelayMs(delivery.attempts, {
      initialMs: config.initialBackoffMs,
      maxMs: config.maxBackoffMs,
    });
    return { kind: 'retry', error: result.error, at: Date.now() + delay };
  }

  private async pruneNow(): Promise<void> {
    const now = Date.now();
    if (now - this.lastPrune < PRUNE_EVERY_MS) return;
    this.lastPrune = now;
    const pruned = await this.deps.store.notifications.pruneSettled(now - KEEP_SETTLED_MS);
    if (pruned > 0) this.deps.logger.info({ pruned }, 'pruned settled notification deliveries');
  }
}

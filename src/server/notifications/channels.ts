/** Sends one message through a rule's channel: the webhook poster or the mailer. */
import type { CompiledNotificationsConfig } from '../../config/index.js';
import type { NotificationMessage } from '../../protocol/index.js';
import type { NotificationRuleRecord } from '../../store/index.js';
import { Mailer } from './email.js';
import { postWebhook, type SendResult } from './webhook.js';

export class NotificationChannels {
  private readonly mailer: Mailer | undefined;

  constructor(
    private readonly config: CompiledNotificationsConfig,
    private readonly userAgent: string,
  ) {
    this.mailer = config.smtp ? new Mailer(config.smtp) : undefined;
  }

  /** Whether email rules can be served. */
  get emailConfigured(): boolean {
    return this.mailer !== undefined;
  }

  /** One attempt; never throws. */
  async send(
    rule: NotificationRuleRecord,
    message: NotificationMessage,
    signal?: AbortSignal,
  ): Promise<SendResult> {
    if (rule.channel === 'email') {
      if (!this.mailer)
        return { ok: false, error: 'email is not configured on this server (server.notifications.smtp)' };
      return this.mailer.send(rule.target, message);
    }
    if (rule.secret === null) return { ok: false, error: 'the webhook rule has no secret' };
    return postWebhook({
      url: rule.target,
      secret: rule.secret,
      message,
      timeoutMs: this.config.webhookTimeoutMs,
      userAgent: this.userAgent,
      ...(signal ? { signal } : {}),
    });
  }

  close(): void {
    this.mailer?.close();
  }
}

/**
 * The audit trail: who did what to which object, from where. Writing an entry never fails the request it
 * describes (the failure is logged), except that the store being down fails both anyway.
 */
import type { Logger } from 'pino';
import type { Store } from '../store/index.js';

export interface AuditEvent {
  actor: string;
  action: string;
  target?: string | null;
  source?: string | null;
  detail?: Record<string, unknown> | null;
}

export class AuditLog {
  constructor(
    private readonly store: Store,
    private readonly logger: Logger,
    /** Sees every event recorded (the metrics count failed logins here). Default: nobody. */
    private readonly observe?: (event: AuditEvent) => void,
  ) {}

  async record(event: AuditEvent): Promise<void> {
    this.observe?.(event);
    const entry = {
      time: Date.now(),
      actor: event.actor,
      action: event.action,
      target: event.target ?? null,
      source: event.source ?? null,
      detail: event.detail ?? null,
    };
    try {
      await this.store.appendAudit(entry);
    } catch (error) {
      this.logger.error({ err: error, audit: entry }, 'could not write audit entry');
    }
  }
}

/**
 * Notification rules as users manage them: each user adds, lists, tests and removes their own; admins list
 * and remove anyone's. A webhook's secret is generated here (unless the user gives one) and returned once;
 * listings never carry it, and show another user's webhook URL only as its origin (such URLs often hold
 * a token in their path). Changes are audited.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import {
  StewardError,
  type CreateNotificationRuleRequest,
  type NotificationDelivery,
  type NotificationRule,
} from '../../protocol/index.js';
import type { DeliveryRecord, NotificationRuleRecord, Store } from '../../store/index.js';
import type { AuditLog } from '../audit.js';
import type { Principal } from '../auth.js';
import { iso } from '../views.js';
import type { NotificationChannels } from './channels.js';
import { testMessage } from './message.js';

export interface NotificationServiceDeps {
  store: Store;
  audit: AuditLog;
  channels: NotificationChannels;
  maxRulesPerUser: number;
}

export class NotificationService {
  constructor(private readonly deps: NotificationServiceDeps) {}

  async create(
    principal: Principal,
    request: CreateNotificationRuleRequest,
    source: string,
  ): Promise<NotificationRule & { secret: string | null }> {
    const { channel } = request;
    if (channel.type === 'email' && !this.deps.channels.emailConfigured)
      throw new StewardError(
        'STEWARD_EMAIL_NOT_CONFIGURED',
        'this server sends no email (no server.notifications.smtp); use a webhook, or ask an admin to configure SMTP',
      );
    if (
      request.schedule !== undefined &&
      !(await this.deps.store.schedules.findScheduleByName(principal.user, request.schedule))
    )
      throw new StewardError(
        'STEWARD_NOT_FOUND',
        `you have no schedule ${JSON.stringify(request.schedule)} (see \`steward schedule list\`)`,
      );
    const generated = channel.type === 'webhook' && channel.secret === undefined;
    const secret =
      channel.type === 'webhook' ? (channel.secret ?? randomBytes(32).toString('base64url')) : null;
    const record = await this.deps.store.notifications.createRule(
      {
        user: principal.user,
        when: request.when,
        schedule: request.schedule ?? null,
        channel: channel.type,
        target: channel.type === 'webhook' ? channel.url : channel.address,
        secret,
        createdAt: Date.now(),
      },
      this.deps.maxRulesPerUser,
    );
    if (!record)
      throw new StewardError(
        'STEWARD_NOTIFICATION_RULE_LIMIT',
        `you have ${this.deps.maxRulesPerUser} notification rules, the most allowed; remove one first (\`steward notify remove ID\`)`,
        { details: { limit: this.deps.maxRulesPerUser } },
      );
    await this.deps.audit.record({
      actor: principal.user,
      action: 'notification.rule.add',
      target: record.id,
      source,
      detail: {
        when: record.when,
        schedule: record.schedule,
        channel: record.channel,
        target: record.target,
      },
    });
    return { ...ruleView(record, principal.user), secret: generated ? secret : null };
  }

  async list(principal: Principal, all: boolean, source: string): Promise<NotificationRule[]> {
    if (all) await this.requireAdmin(principal, 'notification rules of every user', source);
    const rules = await this.deps.store.notifications.listRules(all ? undefined : principal.user);
    return rules.map((rule) => ruleView(rule, principal.user));
  }

  async remove(principal: Principal, id: string, source: string): Promise<void> {
    const rule = await this.visibleRule(principal, id);
    await this.deps.store.notifications.deleteRule(rule.id);
    await this.deps.audit.record({
      actor: principal.user,
      action: 'notification.rule.remove',
      target: rule.id,
      source,
      detail: { user: rule.user, channel: rule.channel },
    });
  }

  /** One attempt with a test message, now, outside the outbox. */
  async test(principal: Principal, id: string): Promise<{ delivered: boolean; error: string | null }> {
    const rule = await this.visibleRule(principal, id);
    const result = await this.deps.channels.send(rule, testMessage(`test-${randomUUID()}`, rule));
    return result.ok ? { delivered: true, error: null } : { delivered: false, error: result.error };
  }

  async deliveries(
    principal: Principal,
    options: { all: boolean; limit: number },
    source: string,
  ): Promise<NotificationDelivery[]> {
    if (options.all) await this.requireAdmin(principal, 'notification deliveries of every user', source);
    const rows = await this.deps.store.notifications.listDeliveries({
      ...(options.all ? {} : { user: principal.user }),
      limit: options.limit,
    });
    return rows.map(deliveryView);
  }

  /** The caller's own rule, or anyone's for an admin; another user's looks missing. */
  private async visibleRule(principal: Principal, id: string): Promise<NotificationRuleRecord> {
    const rule = await this.deps.store.notifications.getRule(id);
    if (!rule || (rule.user !== principal.user && principal.role !== 'admin'))
      throw new StewardError(
        'STEWARD_NOT_FOUND',
        `no notification rule ${id} of yours (\`steward notify list\`)`,
      );
    return rule;
  }

  private async requireAdmin(principal: Principal, what: string, source: string): Promise<void> {
    if (principal.role === 'admin') return;
    await this.deps.audit.record({ actor: principal.user, action: 'forbidden', target: what, source });
    throw new StewardError(
      'STEWARD_FORBIDDEN',
      `only admins can list the ${what}; leave out --all for yours`,
    );
  }
}

function ruleView(rule: NotificationRuleRecord, viewer: string): NotificationRule {
  return {
    id: rule.id,
    user: rule.user,
    when: rule.when,
    schedule: rule.schedule,
    channel: rule.channel,
    target:
      rule.channel === 'webhook' && rule.user !== viewer ? `${new URL(rule.target).origin}/…` : rule.target,
    createdAt: iso(rule.createdAt),
  };
}

function deliveryView(delivery: DeliveryRecord): NotificationDelivery {
  return {
    id: delivery.id,
    ruleId: delivery.ruleId,
    user: delivery.user,
    jobId: delivery.jobId,
    jobState: delivery.jobState,
    channel: delivery.channel,
    state: delivery.state,
    attempts: delivery.attempts,
    lastError: delivery.lastError,
    nextAttemptAt: iso(delivery.nextAttemptAt),
    createdAt: iso(delivery.createdAt),
    deliveredAt: iso(delivery.deliveredAt),
  };
}

/**
 * Notification rules and the delivery outbox.
 *
 * Invariants:
 * - A job's end and its deliveries commit together: `enqueueJobEndIn` runs inside the transaction of the
 *   job's terminal transition (`transitionIn`), which only one server can win, so a job's end is announced
 *   once per matching rule however many servers there are, and a crash after the commit loses nothing.
 * - A delivery is sent only under a claim: `claimDue` moves a due row's `next_attempt_at` past a lease and
 *   gives it a new `claim_token` in one conditional UPDATE (PostgreSQL skips rows another server is claiming),
 *   and only that token settles it. A claim whose server died comes due again when the lease runs out, so
 *   delivery is at least once; receivers de-duplicate by the delivery id.
 */
import { randomUUID } from 'node:crypto';
import { sql, type Transaction } from 'kysely';
import { rulesFor, type NotifyWhen } from '../protocol/index.js';
import { insertAudit, type NewAuditRecord } from './audit.js';
import type { Executor, StoreContext } from './context.js';
import type { JobRecord } from './job-records.js';
import type { Database, NotificationDeliveriesTable, NotificationRulesTable } from './schema.js';

export interface NotificationRuleRecord {
  id: string;
  user: string;
  when: NotifyWhen;
  schedule: string | null;
  channel: 'webhook' | 'email';
  /** The webhook URL or the email address. */
  target: string;
  /** The webhook's HMAC key (null for email). */
  secret: string | null;
  createdAt: number;
}

export type NewNotificationRule = Omit<NotificationRuleRecord, 'id'>;

export interface DeliveryRecord {
  id: string;
  ruleId: string;
  user: string;
  jobId: string;
  jobAttempt: number;
  jobState: string;
  channel: 'webhook' | 'email';
  state: NotificationDeliveriesTable['state'];
  attempts: number;
  nextAttemptAt: number | null;
  lastError: string | null;
  createdAt: number;
  deliveredAt: number | null;
}

/** A delivery this server claimed: `claimToken` settles it. `attempts` counts this attempt. */
export interface ClaimedDelivery extends DeliveryRecord {
  claimToken: string;
}

/** How an attempt ended. */
export type DeliverySettlement =
  | { kind: 'delivered' }
  /** Failed; try again at `at`. */
  | { kind: 'retry'; error: string; at: number }
  /** Failed for the last time; the audit entry is written in the same transaction. */
  | { kind: 'failed'; error: string; audit: NewAuditRecord }
  /** No longer wanted (its rule was removed, or a later attempt of the job supersedes the end). */
  | { kind: 'dropped'; reason: string };

export class NotificationStore {
  constructor(private readonly ctx: StoreContext) {}

  /**
   * Adds a rule unless the user has `maxPerUser` already (returns undefined then). The user's row is locked
   * on PostgreSQL so that two concurrent additions cannot both pass the count.
   */
  async createRule(
    rule: NewNotificationRule,
    maxPerUser: number,
  ): Promise<NotificationRuleRecord | undefined> {
    return this.ctx.db.transaction().execute(async (trx) => {
      if (this.ctx.dialect === 'postgres')
        await trx.selectFrom('users').select('name').where('name', '=', rule.user).forUpdate().execute();
      const { n } = await trx
        .selectFrom('notification_rules')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('user_name', '=', rule.user)
        .executeTakeFirstOrThrow();
      if (Number(n) >= maxPerUser) return undefined;
      const record = { id: randomUUID(), ...rule };
      await trx
        .insertInto('notification_rules')
        .values({
          id: record.id,
          user_name: rule.user,
          schedule: rule.schedule,
          when: rule.when,
          channel: rule.channel,
          target: rule.target,
          secret: rule.secret,
          created_at: rule.createdAt,
        })
        .execute();
      return record;
    });
  }

  /** One user's rules, or everyone's (`user` undefined), oldest first. */
  async listRules(user?: string): Promise<NotificationRuleRecord[]> {
    let query = this.ctx.db.selectFrom('notification_rules').selectAll();
    if (user !== undefined) query = query.where('user_name', '=', user);
    return (await query.orderBy('created_at').orderBy('id').execute()).map(toRule);
  }

  async getRule(id: string): Promise<NotificationRuleRecord | undefined> {
    const row = await this.ctx.db
      .selectFrom('notification_rules')
      .selectAll()
      .where('id', '=', id)
      .executeTakeFirst();
    return row && toRule(row);
  }

  /** Removes a rule and drops its pending deliveries; false when there was no such rule. */
  async deleteRule(id: string, now = this.ctx.clock()): Promise<boolean> {
    return this.ctx.db.transaction().execute(async (trx) => {
      const removed = await trx.deleteFrom('notification_rules').where('id', '=', id).executeTakeFirst();
      if (Number(removed.numDeletedRows) !== 1) return false;
      await trx
        .updateTable('notification_deliveries')
        .set({ state: 'dropped', last_error: 'its rule was removed', next_attempt_at: null, updated_at: now })
        .where('rule_id', '=', id)
        .where('state', '=', 'pending')
        .execute();
      return true;
    });
  }

  /** Deliveries, newest first: one user's or everyone's. */
  async listDeliveries(filter: { user?: string; limit: number }): Promise<DeliveryRecord[]> {
    let query = this.ctx.db.selectFrom('notification_deliveries').selectAll();
    if (filter.user !== undefined) query = query.where('user_name', '=', filter.user);
    const rows = await query
      .orderBy('created_at', 'desc')
      .orderBy('id', 'desc')
      .limit(filter.limit)
      .execute();
    return rows.map(toDelivery);
  }

  async getDelivery(id: string, executor: Executor = this.ctx.db): Promise<DeliveryRecord | undefined> {
    const row = await executor
      .selectFrom('notification_deliveries')
      .selectAll()
      .where('id', '=', id)
      .executeTakeFirst();
    return row && toDelivery(row);
  }

  /**
   * Claims up to `limit` deliveries due at `now` for `leaseMs` (see the invariant above) and counts the
   * attempt each is about to get.
   */
  async claimDue(now: number, leaseMs: number, limit: number): Promise<ClaimedDelivery[]> {
    const token = randomUUID();
    let due = this.ctx.db
      .selectFrom('notification_deliveries')
      .select('id')
      .where('state', '=', 'pending')
      .where('next_attempt_at', '<=', now)
      .orderBy('next_attempt_at')
      .limit(limit);
    if (this.ctx.dialect === 'postgres') due = due.forUpdate().skipLocked();
    const rows = await this.ctx.db
      .updateTable('notification_deliveries')
      .set({
        claim_token: token,
        next_attempt_at: now + leaseMs,
        attempts: sql<number>`attempts + 1`,
        updated_at: now,
      })
      .where('id', 'in', due)
      // Again here: on PostgreSQL a row another server claimed meanwhile is re-checked after its lock.
      .where('state', '=', 'pending')
      .where('next_attempt_at', '<=', now)
      .returningAll()
      .execute();
    return rows.map((row) => ({ ...toDelivery(row), claimToken: token }));
  }

  /** Records how a claimed attempt ended; false when the claim was no longer this token's (lease lost). */
  async settle(
    id: string,
    claimToken: string,
    outcome: DeliverySettlement,
    now = this.ctx.clock(),
  ): Promise<boolean> {
    return this.ctx.db.transaction().execute(async (trx) => {
      const values = settledValues(outcome, now);
      const result = await trx
        .updateTable('notification_deliveries')
        .set(values)
        .where('id', '=', id)
        .where('claim_token', '=', claimToken)
        .where('state', '=', 'pending')
        .executeTakeFirst();
      if (Number(result.numUpdatedRows) !== 1) return false;
      if (outcome.kind === 'failed') await insertAudit(trx, outcome.audit);
      return true;
    });
  }

  /** Gives a claim back unsent (the server is stopping): due again at once, the attempt not counted. */
  async release(id: string, claimToken: string, now = this.ctx.clock()): Promise<void> {
    await this.ctx.db
      .updateTable('notification_deliveries')
      .set({ next_attempt_at: now, claim_token: null, attempts: sql<number>`attempts - 1`, updated_at: now })
      .where('id', '=', id)
      .where('claim_token', '=', claimToken)
      .where('state', '=', 'pending')
      .execute();
  }

  /** Deletes settled deliveries last changed before `before`; returns how many. */
  async pruneSettled(before: number): Promise<number> {
    const result = await this.ctx.db
      .deleteFrom('notification_deliveries')
      .where('state', '!=', 'pending')
      .where('updated_at', '<', before)
      .executeTakeFirst();
    return Number(result.numDeletedRows);
  }
}

/**
 * Inside a job's terminal transition: one pending delivery per rule of the job's user that fires for this
 * end (`rulesFor`). `schedule`: the schedule that started the job, else null.
 */
export async function enqueueJobEndIn(
  trx: Transaction<Database>,
  job: JobRecord,
  schedule: string | null,
  now: number,
): Promise<void> {
  const rows = await trx
    .selectFrom('notification_rules')
    .selectAll()
    .where('user_name', '=', job.user)
    .execute();
  if (rows.length === 0) return;
  const firing = rulesFor(rows.map(toRule), { state: job.state, schedule });
  if (firing.length === 0) return;
  await trx
    .insertInto('notification_deliveries')
    .values(
      firing.map((rule) => ({
        id: randomUUID(),
        rule_id: rule.id,
        user_name: job.user,
        job_id: job.id,
        job_attempt: job.attempt,
        job_state: job.state,
        channel: rule.channel,
        state: 'pending' as const,
        attempts: 0,
        next_attempt_at: now,
        claim_token: null,
        last_error: null,
        created_at: now,
        delivered_at: null,
        updated_at: now,
      })),
    )
    .onConflict((oc) => oc.columns(['rule_id', 'job_id', 'job_attempt']).doNothing())
    .execute();
}

function settledValues(outcome: DeliverySettlement, now: number): Partial<NotificationDeliveriesTable> {
  switch (outcome.kind) {
    case 'delivered':
      return {
        state: 'delivered',
        delivered_at: now,
        next_attempt_at: null,
        claim_token: null,
        updated_at: now,
      };
    case 'retry':
      return { last_error: outcome.error, next_attempt_at: outcome.at, claim_token: null, updated_at: now };
    case 'failed':
      return {
        state: 'failed',
        last_error: outcome.error,
        next_attempt_at: null,
        claim_token: null,
        updated_at: now,
      };
    case 'dropped':
      return {
        state: 'dropped',
        last_error: outcome.reason,
        next_attempt_at: null,
        claim_token: null,
        updated_at: now,
      };
  }
}

function toRule(row: NotificationRulesTable): NotificationRuleRecord {
  return {
    id: row.id,
    user: row.user_name,
    when: row.when,
    schedule: row.schedule,
    channel: row.channel,
    target: row.target,
    secret: row.secret,
    createdAt: Number(row.created_at),
  };
}

function toDelivery(row: NotificationDeliveriesTable): DeliveryRecord {
  return {
    id: row.id,
    ruleId: row.rule_id,
    user: row.user_name,
    jobId: row.job_id,
    jobAttempt: Number(row.job_attempt),
    jobState: row.job_state,
    channel: row.channel,
    state: row.state,
    attempts: Number(row.attempts),
    nextAttemptAt: row.next_attempt_at === null ? null : Number(row.next_attempt_at),
    lastError: row.last_error,
    createdAt: Number(row.created_at),
    deliveredAt: row.delivered_at === null ? null : Number(row.delivered_at),
  };
}

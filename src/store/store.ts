/**
 * The durable store: users, tokens, workflow versions, jobs and their steps, results, audit and the agent
 * registry. One class over Kysely, for SQLite (embedded) and PostgreSQL (several servers at once).
 *
 * Invariants:
 * - Every job state change goes through `transitionJob`, which locks the job's row (`SELECT … FOR UPDATE`
 *   on PostgreSQL), checks `canTransition` and updates with `WHERE state = <the state it read>` inside a
 *   transaction, so two servers racing serialize and cannot both win.
 * - Agent events are applied by `applyEvent`, which locks the job's row first and records (job, attempt,
 *   seq) in the same transaction as its effect: a duplicate delivery, on this server or another one, finds
 *   the record and changes nothing.
 * - On PostgreSQL every committed job or step change is announced with NOTIFY (see `changes.ts`), so a
 *   server's live listeners also hear what other servers applied. SQLite serves one server only.
 */
import { createHash, randomUUID } from 'node:crypto';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, PostgresDialect, sql, SqliteDialect, type Transaction } from 'kysely';
import pg from 'pg';
import type { StoreConfig } from '../config/index.js';
import {
  canStartNewAttempt,
  canTransition,
  isTerminal,
  terminalJobStates,
  type ErrorInfo,
  type ExecutorIdentity,
  type Heartbeat,
  type JobEvent,
  type JobState,
  type ParamValue,
  type StepState,
} from '../protocol/index.js';
import { ChangeListener, type ChangeListenerOptions, type JobChangeNotice } from './changes.js';
import { migrateToLatest, type StoreDialect } from './migrations/index.js';
import { WalFlusher, withCommitTracking } from './sqlite-durable.js';
import type { Database, JobsTable } from './schema.js';
import { SpaceStore } from './spaces.js';
import { JobFileStore } from './job-files.js';
import { Listings } from './listings.js';

export interface OpenStoreOptions {
  /** Called with a line for each applied migration. Default: silent. */
  onMigration?: (name: string) => void;
  /** SQLite busy timeout in ms. Default 5000. */
  busyTimeoutMs?: number;
  /** PostgreSQL pool size. Default 10. */
  poolSize?: number;
  /**
   * Stop after applying this migration (by name, e.g. `0007_agent_draining`), leaving later ones pending:
   * for tests that build a database as an older release left it. Default: apply every migration.
   */
  migrateUntil?: string;
}

export interface UserRecord {
  name: string;
  role: 'admin' | 'user';
  passwordHash: string | null;
  disabled: boolean;
  createdAt: number;
  /** `ldap` users were created by their first LDAP login and have no local password. */
  source: 'local' | 'ldap';
  /** When an admin deleted the user (the row stays, disabled, so its history keeps its name); else null. */
  deletedAt: number | null;
}

/** A change to a user that `changeUser` makes only if at least one enabled admin remains. */
export type UserChange =
  | { kind: 'disable' }
  | { kind: 'enable' }
  | { kind: 'role'; role: 'admin' | 'user' }
  | { kind: 'delete'; time: number };

export type UserChangeOutcome =
  | { ok: true; user: UserRecord; before: UserRecord; revokedTokens: number }
  | { ok: false; reason: 'not-found' }
  | { ok: false; reason: 'last-admin'; user: UserRecord }
  | { ok: false; reason: 'live-jobs'; user: UserRecord; jobs: number };

export interface TokenRecord {
  id: string;
  user: string;
  name: string;
  /** `login`: CLI sign-in; `api`: named; `session`: a portal browser session (sent as a cookie). */
  kind: 'login' | 'api' | 'session';
  createdAt: number;
  expiresAt: number | null;
  lastUsedAt: number | null;
  revoked: boolean;
}

export interface ParamDefinitionRecord {
  name: string;
  type: 'string' | 'number' | 'integer' | 'boolean' | 'date' | 'enum' | 'file';
  required: boolean;
  default?: ParamValue;
  values?: string[];
  description?: string;
  /** `file` params (see the engine's ParamSpec). */
  accept?: string[];
  maxSize?: number;
}

export interface AssetRecord {
  path: string;
  digest: string;
  size: number;
}

export interface WorkflowRecord {
  /** The space the workflow lives in; (space, name, version) is its key. */
  space: string;
  name: string;
  version: number;
  source: string;
  format: 'yaml' | 'json';
  digest: string;
  description: string;
  params: ParamDefinitionRecord[];
  steps: { id: string; kind: string; needs: string[] }[];
  assets: AssetRecord[];
  createdBy: string;
  createdAt: number;
}

export type NewWorkflowVersion = Omit<WorkflowRecord, 'version'>;

export interface WorkflowSummaryRecord {
  space: string;
  name: string;
  latestVersion: number;
  description: string;
  updatedAt: number;
  updatedBy: string;
}

export interface JobRecord {
  id: string;
  user: string;
  workflow: { space: string; name: string; version: number; digest: string };
  params: Record<string, ParamValue>;
  labels: string[];
  state: JobState;
  attempt: number;
  agentId: string | null;
  executor: ExecutorIdentity | null;
  error: ErrorInfo | null;
  timeoutMs: number | null;
  jobTokenHash: string;
  loadDeadline: number | null;
  /** When the bus confirmed the current attempt's offer; null while unpublished. */
  offerPublishedAt: number | null;
  cancelRequested: boolean;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  updatedAt: number;
  /** The job's own retry budget; null when the server's policy applies. */
  retries: number | null;
  /** The agent holding the current attempt's claim (see `claimAttempt`); null until its first fetch. */
  claimedBy: string | null;
}

/** One attempt of a job: a run on one agent. Attempt numbers start at 1; a retry adds the next. */
export interface AttemptRecord {
  jobId: string;
  attempt: number;
  /** The job's state while this is its current attempt; afterwards how the attempt ended. */
  state: JobState;
  agentId: string | null;
  offeredAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  error: ErrorInfo | null;
}

/** What a retry ends and what it begins (see `Store.retryJob`). */
export interface RetryPlan {
  /** The attempt being ended; the retry happens only while it is still the job's current attempt. */
  attempt: number;
  /** How the old attempt ended: `lost` (agent silent) or `failed` (executor crashed). */
  endState: 'lost' | 'failed';
  error: ErrorInfo;
  /** The new attempt's job token (hash): the old attempt's token stops working at once. */
  jobTokenHash: string;
  loadDeadline: number;
  now?: number;
}

export interface NewJob {
  id: string;
  user: string;
  workflow: { space: string; name: string; version: number; digest: string };
  params: Record<string, ParamValue>;
  labels: string[];
  timeoutMs: number | null;
  jobTokenHash: string;
  createdAt: number;
  /** Steps known from the workflow, recorded `pending` so a job's detail lists them from the start. */
  steps: { id: string; kind: string }[];
  /** The job's own retry budget. Default: none (the server's policy). */
  retries?: number | null;
  /**
   * When the job expires if no executor loaded it. Stored with the job so any server's sweeper can end it,
   * even one whose submitting server died before publishing the offer. Default none.
   */
  loadDeadline?: number | null;
  /** The client's idempotency key (unique per user). Default none. */
  submitKey?: string | null;
  /**
   * Record the job straight as `offered` (the server is about to publish its offer): one commit instead of
   * an insert and a `queued → offered` transition. Default: `queued`.
   */
  offered?: boolean;
}

/** A job with its steps and attempts, all read from one snapshot of the database (`Store.getJobDetail`). */
export interface JobDetailRecord {
  job: JobRecord;
  /** In workflow order. */
  steps: StepRecord[];
  /** Oldest first. */
  attempts: AttemptRecord[];
}

export interface StepRecord {
  jobId: string;
  id: string;
  kind: string;
  state: StepState;
  startedAt: number | null;
  finishedAt: number | null;
  durationMs: number | null;
  rows: number | null;
  progress: number | null;
  message: string | null;
}

/** Fields a transition may set along with the new state. */
export interface JobPatch {
  agentId?: string | null;
  /** A new job token's hash (the old token stops working). */
  jobTokenHash?: string;
  executor?: ExecutorIdentity | null;
  error?: ErrorInfo | null;
  loadDeadline?: number | null;
  startedAt?: number | null;
  finishedAt?: number | null;
  cancelRequested?: boolean;
  /** Gives up the attempt's claim (null): its agent handed the offer back before loading it. */
  claimedBy?: null;
}

export type TransitionResult =
  | { ok: true; job: JobRecord }
  /** `job` is the current record (null when the job does not exist). */
  | { ok: false; job: JobRecord | null };

/**
 * What `Store.retryJob` did. On success `steps` are the job's steps as the retry left them (all `pending`),
 * read in the same transaction as `job`.
 */
export type RetryResult =
  { ok: true; job: JobRecord; steps: StepRecord[] } | { ok: false; job: JobRecord | null };

export interface AppliedEvent {
  /** False when (jobId, attempt, seq) was seen before: nothing changed. */
  applied: boolean;
  /** The job after the event, when the event changed it. */
  job?: JobRecord;
  /** The step after the event, for step events. */
  step?: StepRecord;
  /**
   * Set when the event was recorded as seen but not applied because another agent holds the attempt's
   * claim: the agent holding it.
   */
  claimedBy?: string;
}

/** What `claimAttempt` found: the claim is the caller's (new or already), or another agent's. */
export type ClaimResult =
  | { ok: true }
  /** `job` is the current record (null when the job does not exist any more). */
  | { ok: false; job: JobRecord | null };

export interface ResultRecord {
  jobId: string;
  name: string;
  kind: 'table' | 'file';
  formats: string[];
  size: number;
  rows: number | null;
  createdAt: number;
}

export interface AuditRecord {
  id: number;
  time: number;
  actor: string;
  action: string;
  target: string | null;
  source: string | null;
  detail: Record<string, unknown> | null;
}

export type NewAuditRecord = Omit<AuditRecord, 'id'>;

export interface AgentRecord {
  id: string;
  labels: string[];
  isolation: 'per-user' | 'single-user';
  capacity: { slots: number; free: number };
  executors: Heartbeat['executors'];
  lastSeen: number;
  /** Drained by an administrator: takes no new jobs, finishes those it has. */
  draining: boolean;
}

export interface ListJobsFilter {
  user?: string;
  state?: JobState;
  workflow?: string;
  /** Only jobs with an id before this one (ids sort by creation time). */
  before?: string;
  limit: number;
}

type Db = Kysely<Database>;
type Executor = Db | Transaction<Database>;

/** Stored workflow versions kept in memory (see getWorkflow). */
const WORKFLOW_VERSIONS_KEPT = 256;

export class Store {
  /** Identifies this open store among the servers sharing one database (its notices carry it). */
  readonly instanceId = randomUUID();
  private readonly workflowVersions = new Map<string, WorkflowRecord>();
  /** Spaces, space members and local groups. */
  readonly spaces: SpaceStore;
  /** Uploads, job inputs and live log notices. */
  readonly files: JobFileStore;
  /** Paged job and audit listings (portal, CLI). */
  readonly listings: Listings;

  private constructor(
    readonly db: Db,
    readonly dialect: StoreDialect,
    /** The NOTIFY channel of this database + schema; undefined on SQLite. */
    readonly changeChannel: string | undefined,
    private readonly config: StoreConfig,
    private readonly flusher?: WalFlusher,
  ) {
    this.spaces = new SpaceStore(db);
    this.files = new JobFileStore(db, changeChannel, this.instanceId);
    this.listings = new Listings(db, toJob);
  }

  /** Opens the database and applies pending migrations. */
  static async open(config: StoreConfig, options: OpenStoreOptions = {}): Promise<Store> {
    const { db, dialect, flusher } = await connect(config, options);
    try {
      for (const name of await migrateToLatest(db as Kysely<unknown>, dialect, options.migrateUntil))
        options.onMigration?.(name);
      await flusher?.durable();
    } catch (error) {
      await flusher?.close();
      await db.destroy();
      throw error;
    }
    return new Store(
      db,
      dialect,
      config.kind === 'postgres' ? changeChannelFor(config.schema) : undefined,
      config,
      flusher,
    );
  }

  /**
   * Resolves once every write committed so far is on disk. PostgreSQL commits durably itself (immediate);
   * SQLite flushes its WAL in groups (sqlite-durable.ts): await this before telling anyone a write is done.
   */
  durable(): Promise<void> {
    return this.flusher ? this.flusher.durable() : Promise.resolve();
  }

  /**
   * Listens for the changes other servers commit (PostgreSQL only; returns undefined on SQLite, where this
   * server is the only writer).
   */
  async listenForChanges(
    handlers: Pick<ChangeListenerOptions, 'onNotice' | 'onReconnect' | 'onError'>,
  ): Promise<ChangeListener | undefined> {
    if (this.config.kind !== 'postgres' || this.changeChannel === undefined) return undefined;
    const listener = new ChangeListener({
      url: this.config.url,
      channel: this.changeChannel,
      ownOrigin: this.instanceId,
      ...handlers,
    });
    await listener.start();
    return listener;
  }

  async close(): Promise<void> {
    await this.flusher?.close();
    await this.db.destroy();
  }

  // ---- users ------------------------------------------------------------------------------------------

  async countUsers(): Promise<number> {
    const row = await this.db
      .selectFrom('users')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }

  /** Returns false when the name is taken. */
  async createUser(user: {
    name: string;
    role: 'admin' | 'user';
    passwordHash: string | null;
    createdAt: number;
  }): Promise<boolean> {
    const result = await this.db
      .insertInto('users')
      .values({
        name: user.name,
        role: user.role,
        password_hash: user.passwordHash,
        disabled: 0,
        created_at: user.createdAt,
      })
      .onConflict((oc) => oc.column('name').doNothing())
      .executeTakeFirst();
    return Number(result.numInsertedOrUpdatedRows ?? 0n) === 1;
  }

  /**
   * Creates or refreshes the record of a directory (LDAP) user: created with no password, role updated on
   * later logins. A local user of the same name is left untouched; returns the stored record either way.
   */
  async upsertDirectoryUser(user: {
    name: string;
    role: 'admin' | 'user';
    time: number;
  }): Promise<UserRecord> {
    await this.db
      .insertInto('users')
      .values({
        name: user.name,
        role: user.role,
        password_hash: null,
        disabled: 0,
        created_at: user.time,
        source: 'ldap',
      })
      .onConflict((oc) => oc.column('name').doNothing())
      .execute();
    await this.db
      .updateTable('users')
      .set({ role: user.role })
      .where('name', '=', user.name)
      .where('source', '=', 'ldap')
      .where('role', '!=', user.role)
      .execute();
    const stored = await this.getUser(user.name);
    if (!stored) throw new Error(`user ${user.name} vanished while being stored`);
    return stored;
  }

  async getUser(name: string): Promise<UserRecord | undefined> {
    const row = await this.db.selectFrom('users').selectAll().where('name', '=', name).executeTakeFirst();
    return row && toUser(row);
  }

  async listUsers(): Promise<UserRecord[]> {
    const rows = await this.db.selectFrom('users').selectAll().orderBy('name').execute();
    return rows.map(toUser);
  }

  async setUserDisabled(name: string, disabled: boolean): Promise<boolean> {
    const result = await this.db
      .updateTable('users')
      .set({ disabled: disabled ? 1 : 0 })
      .where('name', '=', name)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 1;
  }

  async setUserPassword(name: string, passwordHash: string): Promise<boolean> {
    const result = await this.db
      .updateTable('users')
      .set({ password_hash: passwordHash })
      .where('name', '=', name)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 1;
  }

  /**
   * Disables, enables, re-roles or deletes a user in one transaction, refusing (`last-admin`) a change that
   * would leave no enabled admin, and a delete (`live-jobs`) while the user has jobs that have not ended.
   * Disabling and deleting revoke every token of the user in the same transaction, so no request
   * authenticated after the commit passes with any of them. A deleted user keeps its row (disabled, no
   * password, no tokens): jobs reference it, and the name cannot be created again.
   *
   * On PostgreSQL the enabled admins' rows are locked first, so two admins disabling each other at once
   * cannot both succeed; SQLite serialises write transactions anyway.
   */
  async changeUser(name: string, change: UserChange): Promise<UserChangeOutcome> {
    return this.db.transaction().execute(async (trx) => {
      let admins = trx
        .selectFrom('users')
        .select('name')
        .where('role', '=', 'admin')
        .where('disabled', '=', 0)
        .where('deleted_at', 'is', null);
      if (this.dialect === 'postgres') admins = admins.forUpdate();
      const enabledAdmins = (await admins.execute()).map((row) => row.name);
      let target = trx.selectFrom('users').selectAll().where('name', '=', name);
      if (this.dialect === 'postgres') target = target.forUpdate();
      const row = await target.executeTakeFirst();
      if (!row || row.deleted_at !== null) return { ok: false, reason: 'not-found' };
      const before = toUser(row);
      const leavesAdmins =
        change.kind === 'disable' ||
        change.kind === 'delete' ||
        (change.kind === 'role' && change.role !== 'admin');
      if (leavesAdmins && enabledAdmins.includes(name) && enabledAdmins.length === 1)
        return { ok: false, reason: 'last-admin', user: before };
      if (change.kind === 'delete') {
        const live = await trx
          .selectFrom('jobs')
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .where('user_name', '=', name)
          .where('state', 'not in', [...terminalJobStates])
          .executeTakeFirstOrThrow();
        if (Number(live.n) > 0) return { ok: false, reason: 'live-jobs', user: before, jobs: Number(live.n) };
      }
      let revokedTokens = 0;
      if (change.kind === 'disable' || change.kind === 'delete') {
        const revoked = await trx
          .updateTable('api_tokens')
          .set({ revoked: 1 })
          .where('user_name', '=', name)
          .where('revoked', '=', 0)
          .executeTakeFirst();
        revokedTokens = Number(revoked.numUpdatedRows);
      }
      if (change.kind === 'disable') {
        await trx.updateTable('users').set({ disabled: 1 }).where('name', '=', name).execute();
      } else if (change.kind === 'enable') {
        await trx.updateTable('users').set({ disabled: 0 }).where('name', '=', name).execute();
      } else if (change.kind === 'role') {
        await trx.updateTable('users').set({ role: change.role }).where('name', '=', name).execute();
      } else {
        // The tokens go entirely: nothing of a deleted user's can ever authenticate again.
        await trx.deleteFrom('api_tokens').where('user_name', '=', name).execute();
        await trx
          .updateTable('users')
          .set({ disabled: 1, password_hash: null, deleted_at: change.time })
          .where('name', '=', name)
          .execute();
      }
      const after = await trx
        .selectFrom('users')
        .selectAll()
        .where('name', '=', name)
        .executeTakeFirstOrThrow();
      return { ok: true, user: toUser(after), before, revokedTokens };
    });
  }

  /** Ids of `user`'s jobs that have not ended (queued, offered, loading, running), oldest first. */
  async listLiveJobIds(user: string): Promise<string[]> {
    const rows = await this.db
      .selectFrom('jobs')
      .select('id')
      .where('user_name', '=', user)
      .where('state', 'not in', [...terminalJobStates])
      .orderBy('id')
      .execute();
    return rows.map((row) => row.id);
  }

  // ---- login failures (the login throttle) -------------------------------------------------------------

  /**
   * Records one failed login under each of `keys` (one insert) and deletes every failure at or before
   * `forgetBefore`: the table holds only the failures of the current window.
   */
  async recordLoginFailure(keys: readonly string[], time: number, forgetBefore: number): Promise<void> {
    if (keys.length === 0) return;
    await this.db
      .insertInto('login_failures')
      .values(keys.map((key) => ({ key, time })))
      .execute();
    await this.db.deleteFrom('login_failures').where('time', '<=', forgetBefore).execute();
  }

  /**
   * For each `{ key, nth }`, the time of the key's `nth` most recent failure after `since`, or null when it
   * has fewer: the failure that must leave the window before the key is under a limit of `nth`. One query
   * for all keys.
   */
  async nthRecentLoginFailures(
    queries: readonly { key: string; nth: number }[],
    since: number,
  ): Promise<(number | null)[]> {
    if (queries.length === 0) return [];
    const row = (await this.db
      .selectNoFrom((eb) =>
        queries.map((query, index) =>
          eb
            .selectFrom('login_failures')
            .select('time')
            .where('key', '=', query.key)
            .where('time', '>', since)
            .orderBy('time', 'desc')
            .limit(1)
            .offset(query.nth - 1)
            .as(`t${index}`),
        ),
      )
      .executeTakeFirstOrThrow()) as Record<string, number | string | null>;
    return queries.map((_, index) => {
      const time = row[`t${index}`];
      return time === null || time === undefined ? null : Number(time);
    });
  }

  /** Forgets the failures recorded under `key` (a successful login clears its user's count). */
  async clearLoginFailures(key: string): Promise<void> {
    await this.db.deleteFrom('login_failures').where('key', '=', key).execute();
  }

  // ---- tokens -----------------------------------------------------------------------------------------

  async createToken(
    token: Omit<TokenRecord, 'lastUsedAt' | 'revoked'> & { tokenHash: string },
  ): Promise<void> {
    await this.db
      .insertInto('api_tokens')
      .values({
        id: token.id,
        user_name: token.user,
        name: token.name,
        kind: token.kind,
        token_hash: token.tokenHash,
        created_at: token.createdAt,
        expires_at: token.expiresAt,
        last_used_at: null,
        revoked: 0,
      })
      .execute();
  }

  /** The token with this hash and its user; expiry, revocation and disabled users are the caller's checks. */
  async findToken(tokenHash: string): Promise<{ token: TokenRecord; user: UserRecord } | undefined> {
    const row = await this.db
      .selectFrom('api_tokens as t')
      .innerJoin('users as u', 'u.name', 't.user_name')
      .select([
        't.id',
        't.user_name',
        't.name as token_name',
        't.kind',
        't.created_at as token_created_at',
        't.expires_at',
        't.last_used_at',
        't.revoked',
        'u.name',
        'u.role',
        'u.password_hash',
        'u.disabled',
        'u.created_at',
        'u.source',
        'u.deleted_at',
      ])
      .where('t.token_hash', '=', tokenHash)
      .executeTakeFirst();
    if (!row) return undefined;
    return {
      token: {
        id: row.id,
        user: row.user_name,
        name: row.token_name,
        kind: row.kind,
        createdAt: row.token_created_at,
        expiresAt: row.expires_at,
        lastUsedAt: row.last_used_at,
        revoked: row.revoked === 1,
      },
      user: toUser(row),
    };
  }

  async touchToken(id: string, time: number): Promise<void> {
    await this.db.updateTable('api_tokens').set({ last_used_at: time }).where('id', '=', id).execute();
  }

  async listTokens(user: string, kind: TokenRecord['kind'] = 'api'): Promise<TokenRecord[]> {
    const rows = await this.db
      .selectFrom('api_tokens')
      .selectAll()
      .where('user_name', '=', user)
      .where('kind', '=', kind)
      .where('revoked', '=', 0)
      .orderBy('created_at')
      .execute();
    return rows.map((row) => ({
      id: row.id,
      user: row.user_name,
      name: row.name,
      kind: row.kind,
      createdAt: row.created_at,
      expiresAt: row.expires_at,
      lastUsedAt: row.last_used_at,
      revoked: row.revoked === 1,
    }));
  }

  /** A token by id (without its hash), or undefined. */
  async getToken(id: string): Promise<TokenRecord | undefined> {
    const row = await this.db.selectFrom('api_tokens').selectAll().where('id', '=', id).executeTakeFirst();
    return (
      row && {
        id: row.id,
        user: row.user_name,
        name: row.name,
        kind: row.kind,
        createdAt: row.created_at,
        expiresAt: row.expires_at,
        lastUsedAt: row.last_used_at,
        revoked: row.revoked === 1,
      }
    );
  }

  /**
   * Revokes `user`'s live login tokens and portal sessions, except `keep`: a changed password ends the
   * other sessions. Returns how many it revoked.
   */
  async revokeLoginTokens(user: string, keep?: string): Promise<number> {
    let query = this.db
      .updateTable('api_tokens')
      .set({ revoked: 1 })
      .where('user_name', '=', user)
      .where('kind', 'in', ['login', 'session'])
      .where('revoked', '=', 0);
    if (keep !== undefined) query = query.where('id', '!=', keep);
    const result = await query.executeTakeFirst();
    return Number(result.numUpdatedRows);
  }

  /** Revokes one of `user`'s tokens; false when there is no such live token. */
  async revokeToken(user: string, id: string): Promise<boolean> {
    const result = await this.db
      .updateTable('api_tokens')
      .set({ revoked: 1 })
      .where('id', '=', id)
      .where('user_name', '=', user)
      .where('revoked', '=', 0)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 1;
  }

  // ---- workflows --------------------------------------------------------------------------------------

  /**
   * Stores a new immutable version in its space: previous + 1 (deleted versions count, so a number is never
   * given twice), decided inside the transaction. Two servers pushing the same name at once collide on the
   * primary key; the loser retries with the next number.
   */
  async insertWorkflowVersion(workflow: NewWorkflowVersion): Promise<WorkflowRecord> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.db.transaction().execute(async (trx) => {
          const row = await trx
            .selectFrom('workflows')
            .select((eb) => eb.fn.max<number | null>('version').as('v'))
            .where('space', '=', workflow.space)
            .where('name', '=', workflow.name)
            .executeTakeFirst();
          const version = Number(row?.v ?? 0) + 1;
          await trx
            .insertInto('workflows')
            .values({
              space: workflow.space,
              name: workflow.name,
              version,
              source: workflow.source,
              format: workflow.format,
              digest: workflow.digest,
              description: workflow.description,
              params_json: JSON.stringify(workflow.params),
              steps_json: JSON.stringify(workflow.steps),
              created_by: workflow.createdBy,
              created_at: workflow.createdAt,
              deleted_at: null,
              deleted_by: null,
            })
            .execute();
          if (workflow.assets.length > 0) {
            await trx
              .insertInto('workflow_assets')
              .values(
                workflow.assets.map((a) => ({
                  space: workflow.space,
                  name: workflow.name,
                  version,
                  path: a.path,
                  digest: a.digest,
                  size: a.size,
                })),
              )
              .execute();
          }
          return { ...workflow, version };
        });
      } catch (error) {
        if (attempt < 5 && isUniqueViolation(error)) continue;
        throw error;
      }
    }
  }

  /**
   * A version of a live (not deleted) workflow, or its latest when `version` is omitted. With
   * `includeDeleted` (a job's pinned version, for its executor and its detail) deleted versions are found
   * too. A stored version's content never changes, so versions read once are kept in memory: every submit
   * and every executor's workflow fetch reads one. Which version is the latest, and whether it is deleted, is
   * always asked of the database (another server may have pushed or deleted).
   */
  async getWorkflow(
    space: string,
    name: string,
    version?: number,
    options: { includeDeleted?: boolean } = {},
  ): Promise<WorkflowRecord | undefined> {
    const key = (v: number) => `${space}/${name}@${v}`;
    if (version !== undefined && options.includeDeleted) {
      const cached = this.workflowVersions.get(key(version));
      if (cached) return cached;
    }
    let query = this.db.selectFrom('workflows').where('space', '=', space).where('name', '=', name);
    if (!options.includeDeleted) query = query.where('deleted_at', 'is', null);
    if (version === undefined || !options.includeDeleted) {
      let find = query.select('version');
      find =
        version === undefined
          ? find.orderBy('version', 'desc').limit(1)
          : find.where('version', '=', version);
      const found = await find.executeTakeFirst();
      if (!found) return undefined;
      const cached = this.workflowVersions.get(key(found.version));
      if (cached) return cached;
      query = query.where('version', '=', found.version);
    } else query = query.where('version', '=', version);
    const row = await query.selectAll().executeTakeFirst();
    if (!row) return undefined;
    const assets = await this.db
      .selectFrom('workflow_assets')
      .select(['path', 'digest', 'size'])
      .where('space', '=', space)
      .where('name', '=', name)
      .where('version', '=', row.version)
      .orderBy('path')
      .execute();
    const record = toWorkflow(row, assets);
    this.workflowVersions.set(key(row.version), record);
    if (this.workflowVersions.size > WORKFLOW_VERSIONS_KEPT) {
      const oldest = this.workflowVersions.keys().next().value;
      if (oldest !== undefined) this.workflowVersions.delete(oldest);
    }
    return record;
  }

  /** Every version of a live workflow, oldest first (empty when it does not exist or was deleted). */
  async listWorkflowVersions(space: string, name: string): Promise<WorkflowRecord[]> {
    const rows = await this.db
      .selectFrom('workflows')
      .selectAll()
      .where('space', '=', space)
      .where('name', '=', name)
      .where('deleted_at', 'is', null)
      .orderBy('version')
      .execute();
    if (rows.length === 0) return [];
    const assets = await this.db
      .selectFrom('workflow_assets')
      .selectAll()
      .where('space', '=', space)
      .where('name', '=', name)
      .orderBy('path')
      .execute();
    return rows.map((row) =>
      toWorkflow(
        row,
        assets.filter((a) => a.version === row.version),
      ),
    );
  }

  /** The live workflows of one space with their latest version. */
  async listWorkflows(space: string): Promise<WorkflowSummaryRecord[]> {
    const rows = await this.db
      .selectFrom('workflows as w')
      .innerJoin(
        (eb) =>
          eb
            .selectFrom('workflows')
            .select(['name'])
            .select((e) => e.fn.max<number>('version').as('latest'))
            .where('space', '=', space)
            .where('deleted_at', 'is', null)
            .groupBy('name')
            .as('m'),
        (join) => join.onRef('m.name', '=', 'w.name').onRef('m.latest', '=', 'w.version'),
      )
      .select(['w.space', 'w.name', 'w.version', 'w.description', 'w.created_at', 'w.created_by'])
      .where('w.space', '=', space)
      .orderBy('w.name')
      .execute();
    return rows.map((r) => ({
      space: r.space,
      name: r.name,
      latestVersion: r.version,
      description: r.description,
      updatedAt: r.created_at,
      updatedBy: r.created_by,
    }));
  }

  /** How many live workflows a space holds. */
  async countWorkflows(space: string): Promise<number> {
    const row = await this.db
      .selectFrom('workflows')
      .select((eb) => eb.fn.count<number>('name').distinct().as('n'))
      .where('space', '=', space)
      .where('deleted_at', 'is', null)
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }

  /**
   * Marks every version of a live workflow deleted: it cannot be run or listed any more, and the rows stay
   * for the jobs that ran them. Returns how many versions it deleted (0: no such live workflow).
   */
  async deleteWorkflow(space: string, name: string, by: string, time: number): Promise<number> {
    const result = await this.db
      .updateTable('workflows')
      .set({ deleted_at: time, deleted_by: by })
      .where('space', '=', space)
      .where('name', '=', name)
      .where('deleted_at', 'is', null)
      .executeTakeFirst();
    return Number(result.numUpdatedRows);
  }

  /** Whether an asset with this digest belongs to the given workflow version. */
  async workflowHasAsset(
    workflow: { space: string; name: string; version: number },
    digest: string,
  ): Promise<AssetRecord | undefined> {
    return this.db
      .selectFrom('workflow_assets')
      .select(['path', 'digest', 'size'])
      .where('space', '=', workflow.space)
      .where('name', '=', workflow.name)
      .where('version', '=', workflow.version)
      .where('digest', '=', digest)
      .executeTakeFirst();
  }

  // ---- jobs -------------------------------------------------------------------------------------------

  /**
   * Stores a new job. With a `submitKey` the user already used, nothing is inserted and the job created with
   * that key is returned with `created: false` (two servers racing on one key: the unique index decides).
   */
  async insertJob(job: NewJob): Promise<JobRecord> {
    return (await this.insertJobOnce(job)).job;
  }

  async insertJobOnce(job: NewJob): Promise<{ job: JobRecord; created: boolean }> {
    if (job.submitKey) {
      const existing = await this.findJobBySubmitKey(job.user, job.submitKey);
      if (existing) return { job: existing, created: false };
    }
    try {
      await this.insertJobRows(job);
    } catch (error) {
      if (job.submitKey && isUniqueViolation(error)) {
        const existing = await this.findJobBySubmitKey(job.user, job.submitKey);
        if (existing) return { job: existing, created: false };
      }
      throw error;
    }
    const created = await this.getJob(job.id);
    if (!created) throw new Error(`job ${job.id} vanished after insert`);
    return { job: created, created: true };
  }

  /** The job `user` created with idempotency key `key`, if any. */
  async findJobBySubmitKey(user: string, key: string): Promise<JobRecord | undefined> {
    const row = await this.db
      .selectFrom('jobs')
      .selectAll()
      .where('user_name', '=', user)
      .where('submit_key', '=', key)
      .executeTakeFirst();
    return row && toJob(row);
  }

  private async insertJobRows(job: NewJob): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      await trx
        .insertInto('jobs')
        .values({
          id: job.id,
          user_name: job.user,
          workflow_space: job.workflow.space,
          workflow_name: job.workflow.name,
          workflow_version: job.workflow.version,
          workflow_digest: job.workflow.digest,
          params_json: JSON.stringify(job.params),
          labels_json: JSON.stringify(job.labels),
          state: job.offered ? 'offered' : 'queued',
          attempt: 1,
          agent_id: null,
          executor_json: null,
          error_code: null,
          error_message: null,
          timeout_ms: job.timeoutMs,
          job_token_hash: job.jobTokenHash,
          load_deadline: job.loadDeadline ?? null,
          cancel_requested: 0,
          created_at: job.createdAt,
          started_at: null,
          finished_at: null,
          updated_at: job.createdAt,
          retries: job.retries ?? null,
          submit_key: job.submitKey ?? null,
          offer_published_at: null,
        })
        .execute();
      await this.beginAttempt(trx, job.id, 1, job.offered ? 'offered' : 'queued', job.createdAt);
      if (job.steps.length > 0) {
        await trx
          .insertInto('job_steps')
          .values(
            job.steps.map((step, position) => ({
              job_id: job.id,
              step_id: step.id,
              kind: step.kind,
              position,
              state: 'pending',
              started_at: null,
              finished_at: null,
              duration_ms: null,
              rows: null,
              progress: null,
              message: null,
            })),
          )
          .execute();
      }
      // New jobs appear in the jobs list streams of every server.
      await this.notifyChange(trx, job.id);
    });
  }

  async getJob(id: string, executor: Executor = this.db): Promise<JobRecord | undefined> {
    const row = await executor.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirst();
    return row && toJob(row);
  }

  /**
   * Reads a job inside a transaction and, on PostgreSQL, locks its row until the transaction ends: another
   * server's transition or event for the same job waits here instead of working from a stale read. SQLite
   * needs no row lock: its transactions are serialized by the database lock.
   */
  private async lockJob(trx: Transaction<Database>, id: string): Promise<JobRecord | undefined> {
    const row = await this.lockJobRow(trx, id);
    return row && toJob(row);
  }

  private async lockJobRow(trx: Transaction<Database>, id: string): Promise<JobsTable | undefined> {
    let query = trx.selectFrom('jobs').selectAll().where('id', '=', id);
    if (this.dialect === 'postgres') query = query.forUpdate();
    return query.executeTakeFirst();
  }

  /**
   * Announces a change to the other servers; PostgreSQL delivers it only if and when the transaction
   * commits, so listeners never hear of a change that was rolled back.
   */
  private async notifyChange(trx: Transaction<Database>, jobId: string, stepId?: string): Promise<void> {
    if (this.changeChannel === undefined) return;
    const notice: JobChangeNotice = { origin: this.instanceId, jobId, ...(stepId ? { stepId } : {}) };
    await sql`SELECT pg_notify(${this.changeChannel}, ${JSON.stringify(notice)})`.execute(trx);
  }

  async listJobs(filter: ListJobsFilter): Promise<JobRecord[]> {
    let query = this.db.selectFrom('jobs').selectAll();
    if (filter.user !== undefined) query = query.where('user_name', '=', filter.user);
    if (filter.state !== undefined) query = query.where('state', '=', filter.state);
    if (filter.workflow !== undefined) query = query.where('workflow_name', '=', filter.workflow);
    if (filter.before !== undefined) query = query.where('id', '<', filter.before);
    const rows = await query.orderBy('id', 'desc').limit(filter.limit).execute();
    return rows.map(toJob);
  }

  /**
   * Moves a job to `to` if the state machine allows it from the state it is in now (and, when `from` is
   * given, only from one of those states). Returns the updated job, or `ok: false` with the current one.
   */
  async transitionJob(
    id: string,
    to: JobState,
    patch: JobPatch = {},
    options: { from?: readonly JobState[]; attempt?: number; now?: number } = {},
  ): Promise<TransitionResult> {
    return this.db.transaction().execute((trx) => this.transitionIn(trx, id, to, patch, options));
  }

  /**
   * `locked`: the job's row as this transaction already read (and locked) it, which saves reading it again.
   * The updated job is that row with the new values: the row lock (or SQLite's database lock) means nobody
   * else changed it in between.
   */
  private async transitionIn(
    trx: Transaction<Database>,
    id: string,
    to: JobState,
    patch: JobPatch,
    options: { from?: readonly JobState[]; attempt?: number; now?: number },
    locked?: JobsTable,
  ): Promise<TransitionResult> {
    const row = locked ?? (await this.lockJobRow(trx, id));
    if (!row) return { ok: false, job: null };
    const current = toJob(row);
    if (options.from && !options.from.includes(current.state)) return { ok: false, job: current };
    if (options.attempt !== undefined && options.attempt !== current.attempt)
      return { ok: false, job: current };
    if (!canTransition(current.state, to)) return { ok: false, job: current };
    const now = options.now ?? Date.now();
    const values: Partial<JobsTable> = { state: to, updated_at: now };
    if (patch.agentId !== undefined) values.agent_id = patch.agentId;
    if (patch.executor !== undefined)
      values.executor_json = patch.executor === null ? null : JSON.stringify(patch.executor);
    if (patch.error !== undefined) {
      values.error_code = patch.error?.code ?? null;
      values.error_message = patch.error?.message ?? null;
    }
    if (patch.loadDeadline !== undefined) values.load_deadline = patch.loadDeadline;
    if (patch.jobTokenHash !== undefined) values.job_token_hash = patch.jobTokenHash;
    if (patch.startedAt !== undefined) values.started_at = patch.startedAt;
    if (patch.finishedAt !== undefined) values.finished_at = patch.finishedAt;
    else if (isTerminal(to)) values.finished_at = now;
    if (patch.cancelRequested !== undefined) values.cancel_requested = patch.cancelRequested ? 1 : 0;
    if (patch.claimedBy !== undefined) values.claimed_by = patch.claimedBy;
    // Optimistic: the row must still be in the state we read (another server may have moved it).
    const result = await trx
      .updateTable('jobs')
      .set(values)
      .where('id', '=', id)
      .where('state', '=', current.state)
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) !== 1) return { ok: false, job: (await this.getJob(id, trx)) ?? null };
    await this.recordAttemptState(trx, current.attempt, id, to, patch, now);
    await this.notifyChange(trx, id);
    return { ok: true, job: toJob({ ...row, ...values }) };
  }

  /** Records a new attempt of a job, not yet taken by any agent. */
  private async beginAttempt(
    trx: Transaction<Database>,
    jobId: string,
    attempt: number,
    state: JobState,
    offeredAt: number,
  ): Promise<void> {
    await trx
      .insertInto('job_attempts')
      .values({
        job_id: jobId,
        attempt,
        state,
        agent_id: null,
        offered_at: offeredAt,
        started_at: null,
        finished_at: null,
        error_code: null,
        error_message: null,
      })
      .execute();
  }

  /** Mirrors a transition of the job onto its current attempt's row. */
  private async recordAttemptState(
    trx: Transaction<Database>,
    attempt: number,
    id: string,
    to: JobState,
    patch: JobPatch,
    now: number,
  ): Promise<void> {
    const values: Partial<Database['job_attempts']> = { state: to };
    if (patch.agentId !== undefined) values.agent_id = patch.agentId;
    if (patch.error !== undefined) {
      values.error_code = patch.error?.code ?? null;
      values.error_message = patch.error?.message ?? null;
    }
    if (isTerminal(to)) values.finished_at = patch.finishedAt ?? now;
    await trx
      .updateTable('job_attempts')
      .set(values)
      .where('job_id', '=', id)
      .where('attempt', '=', attempt)
      .execute();
    if (to === 'running') {
      // The attempt's own start (the job's startedAt is its first attempt's).
      await trx
        .updateTable('job_attempts')
        .set({ started_at: patch.startedAt ?? now })
        .where('job_id', '=', id)
        .where('attempt', '=', attempt)
        .where('started_at', 'is', null)
        .execute();
    }
  }

  /**
   * Ends the job's current attempt (`plan.endState`, with its error) and begins the next one in one
   * transaction: attempt + 1 in state `offered`, a new job token, no agent, executor or error, and every step
   * back to `pending`. Happens only while `plan.attempt` is still current and the job has not ended (see
   * `canStartNewAttempt`), so two servers (or a duplicate event) cannot both retry one attempt. The caller
   * publishes the new attempt's offer after this commits.
   */
  async retryJob(id: string, plan: RetryPlan): Promise<RetryResult> {
    const now = plan.now ?? Date.now();
    return this.db.transaction().execute(async (trx) => {
      const current = await this.lockJob(trx, id);
      if (!current) return { ok: false, job: null };
      if (current.attempt !== plan.attempt || !canStartNewAttempt(current.state))
        return { ok: false, job: current };
      const next = current.attempt + 1;
      const moved = await trx
        .updateTable('jobs')
        .set({
          state: 'offered',
          attempt: next,
          agent_id: null,
          executor_json: null,
          error_code: null,
          error_message: null,
          job_token_hash: plan.jobTokenHash,
          load_deadline: plan.loadDeadline,
          offer_published_at: null,
          cancel_requested: 0,
          claimed_by: null,
          finished_at: null,
          updated_at: now,
        })
        .where('id', '=', id)
        .where('attempt', '=', current.attempt)
        .where('state', '=', current.state)
        .executeTakeFirst();
      if (Number(moved.numUpdatedRows) !== 1) return { ok: false, job: (await this.getJob(id, trx)) ?? null };
      // A job already `lost` keeps the end recorded when it was lost.
      await trx
        .updateTable('job_attempts')
        .set({
          state: plan.endState,
          error_code: plan.error.code,
          error_message: plan.error.message,
          finished_at: current.state === 'lost' ? (current.finishedAt ?? now) : now,
        })
        .where('job_id', '=', id)
        .where('attempt', '=', current.attempt)
        .execute();
      await this.beginAttempt(trx, id, next, 'offered', now);
      await trx
        .updateTable('job_steps')
        .set({
          state: 'pending',
          started_at: null,
          finished_at: null,
          duration_ms: null,
          rows: null,
          progress: null,
          message: null,
        })
        .where('job_id', '=', id)
        .execute();
      await this.notifyChange(trx, id);
      return { ok: true, job: (await this.getJob(id, trx))!, steps: await this.listSteps(id, trx) };
    });
  }

  /** A job's attempts, oldest first. */
  async listAttempts(jobId: string, executor: Executor = this.db): Promise<AttemptRecord[]> {
    const rows = await executor
      .selectFrom('job_attempts')
      .selectAll()
      .where('job_id', '=', jobId)
      .orderBy('attempt')
      .execute();
    return rows.map(toAttempt);
  }

  /** Marks a loading/running job as cancel-requested; the agent's final event ends it. */
  async requestCancel(id: string, now = Date.now()): Promise<JobRecord | undefined> {
    return this.db.transaction().execute(async (trx) => {
      const result = await trx
        .updateTable('jobs')
        .set({ cancel_requested: 1, updated_at: now })
        .where('id', '=', id)
        .where('state', 'in', ['loading', 'running'])
        .executeTakeFirst();
      if (Number(result.numUpdatedRows) === 1) await this.notifyChange(trx, id);
      return this.getJob(id, trx);
    });
  }

  /**
   * Grants the job's attempt `attempt` to `agentId`, atomically across servers: one conditional UPDATE that
   * succeeds only while the attempt is current, its token is the one presented, and nobody else holds its
   * claim. The first agent to claim gets it; the same agent claiming again (its executor retried the fetch,
   * or the broker redelivered the offer to it) is fine; any other agent is refused and told who holds it.
   * The claim also makes its agent the job's agent: another agent's `loading` may have been recorded first,
   * and a cancel must reach the agent that loads the job.
   */
  async claimAttempt(
    id: string,
    attempt: number,
    jobTokenHash: string,
    agentId: string,
    now = Date.now(),
  ): Promise<ClaimResult> {
    const result = await this.db
      .updateTable('jobs')
      .set({ claimed_by: agentId, agent_id: agentId, updated_at: now })
      .where('id', '=', id)
      .where('attempt', '=', attempt)
      .where('job_token_hash', '=', jobTokenHash)
      .where('claimed_by', 'is', null)
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) === 1) return { ok: true };
    const job = (await this.getJob(id)) ?? null;
    const same = job?.attempt === attempt && job.jobTokenHash === jobTokenHash && job.claimedBy === agentId;
    return same ? { ok: true } : { ok: false, job };
  }

  /**
   * Clears the claim of `agentId` on the job's attempt `attempt` while nothing of it ran (`offered` or
   * `loading`), with the same token check as `claimAttempt`. Returns whether a claim was released; a claim
   * held by another agent, an attempt that moved on, or a job that started are left alone.
   */
  async releaseClaim(
    id: string,
    attempt: number,
    jobTokenHash: string,
    agentId: string,
    now = Date.now(),
  ): Promise<boolean> {
    // Nothing a job's reader sees changes (the job keeps its agent until the next one claims it).
    const result = await this.db
      .updateTable('jobs')
      .set({ claimed_by: null, updated_at: now })
      .where('id', '=', id)
      .where('attempt', '=', attempt)
      .where('job_token_hash', '=', jobTokenHash)
      .where('claimed_by', '=', agentId)
      .where('state', 'in', ['offered', 'loading'])
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 1;
  }

  /**
   * Jobs waiting for an executor whose load deadline has passed, including `queued` ones: a server that died
   * between storing a job and publishing its offer leaves it queued, and another server must end it.
   */
  async listJobsPastLoadDeadline(now: number, limit = 500): Promise<JobRecord[]> {
    const rows = await this.db
      .selectFrom('jobs')
      .selectAll()
      .where('state', 'in', ['queued', 'offered', 'loading'])
      .where('load_deadline', 'is not', null)
      .where('load_deadline', '<', now)
      .orderBy('load_deadline')
      .limit(limit)
      .execute();
    return rows.map(toJob);
  }

  /** Records that the bus confirmed the offer of this attempt. */
  async markOfferPublished(id: string, attempt: number, now = Date.now()): Promise<void> {
    await this.db
      .updateTable('jobs')
      .set({ offer_published_at: now })
      .where('id', '=', id)
      .where('attempt', '=', attempt)
      .where('offer_published_at', 'is', null)
      .execute();
  }

  /** `offered` jobs whose offer was never confirmed published, unchanged since `updatedBefore`. */
  async listUnpublishedOffers(updatedBefore: number, limit = 500): Promise<JobRecord[]> {
    const rows = await this.db
      .selectFrom('jobs')
      .selectAll()
      .where('state', '=', 'offered')
      .where('offer_published_at', 'is', null)
      .where('updated_at', '<', updatedBefore)
      .orderBy('updated_at')
      .limit(limit)
      .execute();
    return rows.map(toJob);
  }

  /**
   * Makes an unpublished `offered` job a new attempt with a new token: its first offer may have been
   * published after all, and must then fail to load (old token) and have its events ignored (old attempt)
   * rather than run the job a second time unseen. Only if the job is still as read (offered, that attempt,
   * unpublished): one of several servers doing this at once wins. Returns the job, or undefined.
   */
  async reofferAsNewAttempt(
    id: string,
    fromAttempt: number,
    jobTokenHash: string,
    now = Date.now(),
  ): Promise<JobRecord | undefined> {
    return this.db.transaction().execute(async (trx) => {
      const job = await this.lockJob(trx, id);
      if (!job || job.state !== 'offered' || job.attempt !== fromAttempt || job.offerPublishedAt !== null)
        return undefined;
      await trx
        .updateTable('jobs')
        .set({
          attempt: fromAttempt + 1,
          job_token_hash: jobTokenHash,
          agent_id: null,
          executor_json: null,
          claimed_by: null,
          updated_at: now,
        })
        .where('id', '=', id)
        .execute();
      // The attempt whose offer may never have gone out ends here; the new one starts offered.
      await trx
        .updateTable('job_attempts')
        .set({
          state: 'lost',
          error_code: 'STEWARD_UNAVAILABLE',
          error_message:
            "the bus never confirmed this attempt's offer (its server may have died); offered again as a new attempt",
          finished_at: now,
        })
        .where('job_id', '=', id)
        .where('attempt', '=', fromAttempt)
        .execute();
      await this.beginAttempt(trx, id, fromAttempt + 1, 'offered', now);
      await this.notifyChange(trx, id);
      return this.getJob(id, trx);
    });
  }

  /** Jobs still `queued` that were created before `createdBefore` (left behind by a server that died). */
  async listQueuedJobsCreatedBefore(createdBefore: number, limit = 500): Promise<JobRecord[]> {
    const rows = await this.db
      .selectFrom('jobs')
      .selectAll()
      .where('state', '=', 'queued')
      .where('created_at', '<', createdBefore)
      .orderBy('created_at')
      .limit(limit)
      .execute();
    return rows.map(toJob);
  }

  /**
   * Jobs whose agent's last heartbeat is older than `lastSeenBefore` (or that never sent one): the candidates
   * for `lost` or a retry. Running jobs count by the agent that reported them running; loading jobs only
   * once an agent claimed them (by the claim's agent): the bus would hand their offer to another agent by
   * itself, but that agent's fetch is refused while the claim stands, so nothing else would ever run them.
   * Loading jobs nobody claimed are left to the bus.
   *
   * A job changed since `lastSeenBefore` is not a candidate either: its claim or its last event is a sign of
   * its agent's life as good as a heartbeat. A new agent's executor can claim a job before the server has
   * applied that agent's first heartbeat; without this, a sweep in between would retry the job it just
   * started loading.
   */
  async listRunningJobsOfSilentAgents(lastSeenBefore: number, limit = 500): Promise<JobRecord[]> {
    const rows = await this.db
      .selectFrom('jobs')
      .selectAll()
      .where('updated_at', '<', lastSeenBefore)
      .where((eb) => {
        const live = eb.selectFrom('agents').select('id').where('last_seen', '>=', lastSeenBefore);
        return eb.or([
          eb.and([
            eb('state', '=', 'running'),
            eb('agent_id', 'is not', null),
            eb.not(eb('agent_id', 'in', live)),
          ]),
          // Claimed and not started: `loading`, or still `offered` when the agent died before its
          // `loading` event reached a server.
          eb.and([
            eb('state', 'in', ['loading', 'offered']),
            eb('claimed_by', 'is not', null),
            eb.not(eb('claimed_by', 'in', live)),
          ]),
        ]);
      })
      .orderBy('id')
      .limit(limit)
      .execute();
    return rows.map(toJob);
  }

  /**
   * A job with its steps and attempts as of one moment. Read separately, the job row and its steps can come
   * from different commits (PostgreSQL's READ COMMITTED takes a new snapshot per statement; an event batch
   * commits steps and job together), so a reader could see a step `succeeded` under a job still `loading`.
   * Here the three reads share one transaction: REPEATABLE READ and read-only on PostgreSQL (one snapshot
   * for the whole transaction, taken at its first read); on SQLite a transaction holds the one connection,
   * so no write can commit between the reads.
   */
  async getJobDetail(id: string): Promise<JobDetailRecord | undefined> {
    let transaction = this.db.transaction();
    if (this.dialect === 'postgres')
      transaction = transaction.setIsolationLevel('repeatable read').setAccessMode('read only');
    return transaction.execute(async (trx) => {
      const job = await this.getJob(id, trx);
      if (!job) return undefined;
      return { job, steps: await this.listSteps(id, trx), attempts: await this.listAttempts(id, trx) };
    });
  }

  async listSteps(jobId: string, executor: Executor = this.db): Promise<StepRecord[]> {
    const rows = await executor
      .selectFrom('job_steps')
      .selectAll()
      .where('job_id', '=', jobId)
      .orderBy('position')
      .orderBy('step_id')
      .execute();
    return rows.map(toStep);
  }

  /**
   * Applies an agent event exactly once per (jobId, attempt, seq). State events move the job when the state
   * machine allows it (late or reordered events that cannot apply are recorded and skipped); events of an
   * older attempt only count as seen. Step events upsert the step row.
   */
  async applyEvent(event: JobEvent, now = Date.now()): Promise<AppliedEvent> {
    return this.db.transaction().execute((trx) => this.applyEventIn(trx, event, now));
  }

  /**
   * Applies several events in one transaction, in the given order (a group commit: one fsync for all).
   * Each event is applied exactly as `applyEvent` would; all of them are durable when this resolves, and
   * none is if it rejects.
   */
  async applyEvents(events: readonly JobEvent[], now = Date.now()): Promise<AppliedEvent[]> {
    if (events.length === 0) return [];
    return this.db.transaction().execute(async (trx) => {
      const results: AppliedEvent[] = [];
      for (const event of events) results.push(await this.applyEventIn(trx, event, now));
      return results;
    });
  }

  private async applyEventIn(
    trx: Transaction<Database>,
    event: JobEvent,
    now: number,
  ): Promise<AppliedEvent> {
    {
      // The row lock makes two servers applying events of one job (a redelivery after a server died, or
      // two events consumed at once) take turns: the second sees the first's record and effect.
      const jobRow = await this.lockJobRow(trx, event.jobId);
      // Events for unknown jobs cannot be recorded (foreign key); they are harmless and dropped.
      if (!jobRow) return { applied: false };
      const job = toJob(jobRow);
      const inserted = await trx
        .insertInto('applied_events')
        .values({ job_id: event.jobId, attempt: event.attempt, seq: event.seq, applied_at: now })
        .onConflict((oc) => oc.columns(['job_id', 'attempt', 'seq']).doNothing())
        .executeTakeFirst();
      if (Number(inserted.numInsertedOrUpdatedRows ?? 0n) !== 1) return { applied: false };
      if (event.attempt !== job.attempt) return { applied: true };
      // Only the agent holding the attempt's claim may report on it. Before any claim (an agent reports
      // `loading` before its executor fetches) every agent's events apply as before.
      if (job.claimedBy !== null && event.agentId !== job.claimedBy)
        return { applied: true, claimedBy: job.claimedBy };

      if (event.type === 'state') {
        if (event.state === job.state) {
          if (event.executor) {
            await trx
              .updateTable('jobs')
              .set({ executor_json: JSON.stringify(event.executor), updated_at: now })
              .where('id', '=', job.id)
              .execute();
            await this.notifyChange(trx, job.id);
            return { applied: true, job: (await this.getJob(job.id, trx))! };
          }
          return { applied: true };
        }
        const patch: JobPatch = { agentId: event.agentId };
        if (event.executor) patch.executor = event.executor;
        if (event.error) patch.error = event.error;
        // An offer handed back after an executor loss carries that error; a later delivery that gets further
        // must not keep showing it.
        else if (event.state === 'loading' || event.state === 'running' || event.state === 'succeeded')
          patch.error = null;
        if (event.state === 'running' && job.startedAt === null) patch.startedAt = event.time;
        if (isTerminal(event.state)) patch.finishedAt = event.time;
        // The claim's agent handed the offer back before loading it (its executor died): the attempt is
        // free again for whichever agent the bus gives the offer to next.
        if (event.state === 'offered') patch.claimedBy = null;
        const result = await this.transitionIn(
          trx,
          job.id,
          event.state,
          patch,
          { attempt: event.attempt, now },
          jobRow,
        );
        return result.ok ? { applied: true, job: result.job } : { applied: true };
      }

      const step = event.step;
      const existing = await trx
        .selectFrom('job_steps')
        .selectAll()
        .where('job_id', '=', job.id)
        .where('step_id', '=', step.stepId)
        .executeTakeFirst();
      const startedAt =
        step.state === 'running' ? (existing?.started_at ?? step.time) : (existing?.started_at ?? null);
      const finished = step.state !== 'running' && step.state !== 'pending';
      const values = {
        state: step.state,
        started_at: startedAt,
        finished_at: finished ? step.time : (existing?.finished_at ?? null),
        duration_ms:
          step.durationMs ??
          (finished && startedAt !== null ? step.time - startedAt : (existing?.duration_ms ?? null)),
        rows: step.rows ?? existing?.rows ?? null,
        progress: step.progress ?? (step.state === 'succeeded' ? 1 : (existing?.progress ?? null)),
        message: step.message ?? step.error?.message ?? existing?.message ?? null,
      };
      if (existing) {
        await trx
          .updateTable('job_steps')
          .set(values)
          .where('job_id', '=', job.id)
          .where('step_id', '=', step.stepId)
          .execute();
      } else {
        const position = await trx
          .selectFrom('job_steps')
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .where('job_id', '=', job.id)
          .executeTakeFirstOrThrow();
        await trx
          .insertInto('job_steps')
          .values({
            job_id: job.id,
            step_id: step.stepId,
            kind: 'unknown',
            position: Number(position.n),
            ...values,
          })
          .execute();
      }
      await trx.updateTable('jobs').set({ updated_at: now }).where('id', '=', job.id).execute();
      // An updated step is the row read above with the new values (the job's lock keeps others out).
      const row = existing
        ? { ...existing, ...values }
        : await trx
            .selectFrom('job_steps')
            .selectAll()
            .where('job_id', '=', job.id)
            .where('step_id', '=', step.stepId)
            .executeTakeFirstOrThrow();
      await this.notifyChange(trx, job.id, step.stepId);
      return { applied: true, step: toStep(row) };
    }
  }

  // ---- results ----------------------------------------------------------------------------------------

  /** Records an uploaded result file. For tables, formats accumulate (`parquet` then `csv`). */
  async upsertResult(result: {
    jobId: string;
    name: string;
    kind: 'table' | 'file';
    format: string | null;
    size: number;
    rows: number | null;
    createdAt: number;
  }): Promise<ResultRecord> {
    return this.db.transaction().execute(async (trx) => {
      const existing = await trx
        .selectFrom('results')
        .selectAll()
        .where('job_id', '=', result.jobId)
        .where('name', '=', result.name)
        .executeTakeFirst();
      if (!existing) {
        const formats = result.format ? [result.format] : [];
        await trx
          .insertInto('results')
          .values({
            job_id: result.jobId,
            name: result.name,
            kind: result.kind,
            formats_json: JSON.stringify(formats),
            size: result.size,
            rows: result.rows,
            created_at: result.createdAt,
          })
          .execute();
      } else {
        const formats = new Set(JSON.parse(existing.formats_json) as string[]);
        if (result.format) formats.add(result.format);
        // For tables `size` is the Parquet file's size when there is one: that is what a download costs.
        const size =
          existing.kind === 'table' && result.format !== 'parquet' && formats.has('parquet')
            ? existing.size
            : result.size;
        await trx
          .updateTable('results')
          .set({
            kind: result.kind,
            formats_json: JSON.stringify([...formats].sort()),
            size,
            rows: result.rows ?? existing.rows,
          })
          .where('job_id', '=', result.jobId)
          .where('name', '=', result.name)
          .execute();
      }
      const row = await trx
        .selectFrom('results')
        .selectAll()
        .where('job_id', '=', result.jobId)
        .where('name', '=', result.name)
        .executeTakeFirstOrThrow();
      return toResult(row);
    });
  }

  async listResults(jobId: string): Promise<ResultRecord[]> {
    const rows = await this.db
      .selectFrom('results')
      .selectAll()
      .where('job_id', '=', jobId)
      .orderBy('name')
      .execute();
    return rows.map(toResult);
  }

  async getResult(jobId: string, name: string): Promise<ResultRecord | undefined> {
    const row = await this.db
      .selectFrom('results')
      .selectAll()
      .where('job_id', '=', jobId)
      .where('name', '=', name)
      .executeTakeFirst();
    return row && toResult(row);
  }

  // ---- audit ------------------------------------------------------------------------------------------

  async appendAudit(entry: NewAuditRecord): Promise<void> {
    await this.db
      .insertInto('audit')
      .values({
        time: entry.time,
        actor: entry.actor,
        action: entry.action,
        target: entry.target,
        source: entry.source,
        detail_json: entry.detail === null ? null : JSON.stringify(entry.detail),
      })
      .execute();
  }

  /** Newest first. */
  async listAudit(filter: { actor?: string; action?: string; limit: number }): Promise<AuditRecord[]> {
    let query = this.db.selectFrom('audit').selectAll();
    if (filter.actor !== undefined) query = query.where('actor', '=', filter.actor);
    if (filter.action !== undefined) query = query.where('action', '=', filter.action);
    const rows = await query.orderBy('id', 'desc').limit(filter.limit).execute();
    return rows.map((row) => ({
      id: Number(row.id),
      time: row.time,
      actor: row.actor,
      action: row.action,
      target: row.target,
      source: row.source,
      detail: row.detail_json === null ? null : (JSON.parse(row.detail_json) as Record<string, unknown>),
    }));
  }

  // ---- agents -----------------------------------------------------------------------------------------

  async upsertAgent(heartbeat: Heartbeat, now = Date.now()): Promise<void> {
    const values = {
      labels_json: JSON.stringify(heartbeat.labels),
      isolation: heartbeat.isolation,
      capacity_json: JSON.stringify(heartbeat.capacity),
      executors_json: JSON.stringify(heartbeat.executors),
      last_seen: now,
      draining: heartbeat.draining === true ? 1 : 0,
    };
    await this.db
      .insertInto('agents')
      .values({ id: heartbeat.agentId, ...values })
      .onConflict((oc) => oc.column('id').doUpdateSet(values))
      .execute();
  }

  /** Agents seen at or after `since`. */
  async listAgents(since = 0): Promise<AgentRecord[]> {
    const rows = await this.db
      .selectFrom('agents')
      .selectAll()
      .where('last_seen', '>=', since)
      .orderBy('id')
      .execute();
    return rows.map((row) => ({
      id: row.id,
      labels: JSON.parse(row.labels_json) as string[],
      isolation: row.isolation,
      capacity: JSON.parse(row.capacity_json) as { slots: number; free: number },
      executors: JSON.parse(row.executors_json) as Heartbeat['executors'],
      lastSeen: row.last_seen,
      draining: Number(row.draining) === 1,
    }));
  }
}

/** Opens (and migrates) the store described by `config`. */
export function openStore(config: StoreConfig, options: OpenStoreOptions = {}): Promise<Store> {
  return Store.open(config, options);
}

// ---- connections ----------------------------------------------------------------------------------------

const INT8_OID = 20;

async function connect(
  config: StoreConfig,
  options: OpenStoreOptions,
): Promise<{ db: Db; dialect: StoreDialect; flusher?: WalFlusher }> {
  if (config.kind === 'sqlite') {
    const file = config.path ?? path.resolve('.steward', 'steward.db');
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    // The store holds every password and token hash: it is 0600 from its first byte, whatever the umask.
    // SQLite gives the -wal and -shm it creates next to it the database file's mode.
    closeSync(openSync(file, 'a', 0o600));
    const database = new BetterSqlite3(file, { timeout: options.busyTimeoutMs ?? 5000 });
    // WAL + synchronous=NORMAL: a commit is written but not flushed; the flusher makes commits durable in
    // groups, off the event loop (see sqlite-durable.ts). A file system without WAL support keeps SQLite's
    // own durable commit instead. foreign_keys is per connection and off by default.
    const wal = database.pragma('journal_mode = WAL', { simple: true }) === 'wal';
    database.pragma(wal ? 'synchronous = NORMAL' : 'synchronous = FULL');
    database.pragma('foreign_keys = ON');
    const flusher = wal ? new WalFlusher(file) : undefined;
    return {
      db: new Kysely<Database>({
        dialect: new SqliteDialect({ database: withCommitTracking(database, flusher) }),
      }),
      dialect: 'sqlite',
      flusher,
    };
  }

  const schema = config.schema;
  if (schema !== undefined) {
    // The schema must exist before a pooled connection can put it on its search_path.
    const client = new pg.Client({ connectionString: config.url });
    await client.connect();
    try {
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdentifier(schema)}`);
    } catch (error) {
      // IF NOT EXISTS is not atomic: a server creating the same schema at this moment wins, and that is fine.
      if (!isUniqueViolation(error) && (error as { code?: unknown }).code !== '42P06') throw error;
    } finally {
      await client.end();
    }
  }
  const pool = new pg.Pool({
    connectionString: config.url,
    max: options.poolSize ?? 10,
    ...(schema !== undefined ? { options: `-c search_path=${schema}` } : {}),
    // Epoch-ms times are int8; they fit a JS number exactly, so read them as numbers rather than strings.
    types: { getTypeParser: int8AsNumber as typeof pg.types.getTypeParser },
  });
  return { db: new Kysely<Database>({ dialect: new PostgresDialect({ pool }) }), dialect: 'postgres' };
}

function int8AsNumber(oid: number, format?: 'text' | 'binary'): (value: string) => unknown {
  if (oid === INT8_OID) return (value: string) => Number(value);
  return pg.types.getTypeParser(oid, format ?? 'text') as (value: string) => unknown;
}

/**
 * NOTIFY channels are per database, not per schema: servers on different schemas of one database must not
 * hear each other, so the channel is named after the schema (hashed: identifiers stop at 63 bytes).
 */
function changeChannelFor(schema: string | undefined): string {
  return `steward_changes_${createHash('sha256')
    .update(schema ?? 'public')
    .digest('hex')
    .slice(0, 24)}`;
}

function quoteIdentifier(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

function isUniqueViolation(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === '23505' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE';
}

// ---- row mapping ----------------------------------------------------------------------------------------

function toUser(row: {
  name: string;
  role: 'admin' | 'user';
  password_hash: string | null;
  disabled: number;
  created_at: number;
  source: 'local' | 'ldap';
  deleted_at: number | null;
}): UserRecord {
  return {
    name: row.name,
    role: row.role,
    passwordHash: row.password_hash,
    disabled: row.disabled === 1,
    createdAt: row.created_at,
    source: row.source,
    deletedAt: row.deleted_at === null ? null : Number(row.deleted_at),
  };
}

function toWorkflow(row: Database['workflows'], assets: readonly AssetRecord[]): WorkflowRecord {
  return {
    space: row.space,
    name: row.name,
    version: row.version,
    source: row.source,
    format: row.format,
    digest: row.digest,
    description: row.description,
    params: JSON.parse(row.params_json) as ParamDefinitionRecord[],
    steps: JSON.parse(row.steps_json) as WorkflowRecord['steps'],
    assets: assets.map((a) => ({ path: a.path, digest: a.digest, size: a.size })),
    createdBy: row.created_by,
    createdAt: row.created_at,
  };
}

function toJob(row: JobsTable): JobRecord {
  return {
    id: row.id,
    user: row.user_name,
    workflow: {
      space: row.workflow_space,
      name: row.workflow_name,
      version: row.workflow_version,
      digest: row.workflow_digest,
    },
    params: JSON.parse(row.params_json) as Record<string, ParamValue>,
    labels: JSON.parse(row.labels_json) as string[],
    state: row.state as JobState,
    attempt: row.attempt,
    agentId: row.agent_id,
    executor: row.executor_json === null ? null : (JSON.parse(row.executor_json) as ExecutorIdentity),
    error:
      row.error_code === null
        ? null
        : ({ code: row.error_code, message: row.error_message ?? '' } as ErrorInfo),
    timeoutMs: row.timeout_ms,
    jobTokenHash: row.job_token_hash,
    loadDeadline: row.load_deadline,
    offerPublishedAt: row.offer_published_at,
    cancelRequested: row.cancel_requested === 1,
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    updatedAt: row.updated_at,
    retries: row.retries,
    claimedBy: row.claimed_by,
  };
}

function toAttempt(row: Database['job_attempts']): AttemptRecord {
  return {
    jobId: row.job_id,
    attempt: row.attempt,
    state: row.state as JobState,
    agentId: row.agent_id,
    offeredAt: row.offered_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    error:
      row.error_code === null
        ? null
        : ({ code: row.error_code, message: row.error_message ?? '' } as ErrorInfo),
  };
}

function toStep(row: Database['job_steps']): StepRecord {
  return {
    jobId: row.job_id,
    id: row.step_id,
    kind: row.kind,
    state: row.state as StepState,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    durationMs: row.duration_ms,
    rows: row.rows,
    progress: row.progress,
    message: row.message,
  };
}

function toResult(row: Database['results']): ResultRecord {
  return {
    jobId: row.job_id,
    name: row.name,
    kind: row.kind,
    formats: JSON.parse(row.formats_json) as string[],
    size: row.size,
    rows: row.rows,
    createdAt: row.created_at,
  };
}

/**
 * The durable store: users, tokens, workflow versions, jobs and their steps, results, audit and the agent
 * registry, over Kysely, for SQLite (embedded) and PostgreSQL (several servers at once).
 *
 * `Store` is a façade: it opens the database (`connection.ts`), migrates it, builds the shared
 * `StoreContext` (database, dialect, clock, change notifier: `context.ts`) and delegates each call to the
 * module of its aggregate. The invariants live, and are documented, where they are kept:
 * - row locking of a job being changed: `lockJobRow` in `context.ts`;
 * - every job state change goes through one transition with a state check: `transitions.ts`;
 * - agents' events apply exactly once per (job, attempt, seq), deduplicated in the effect's transaction:
 *   `events.ts`;
 * - every committed job or step change is announced with NOTIFY on PostgreSQL: `changes.ts`.
 */
import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { CompiledStoreConfig as StoreConfig } from '../config/index.js';
import type { Heartbeat, JobEvent, JobState } from '../protocol/index.js';
import { AgentStore, type AgentRecord } from './agents.js';
import { AttemptStore, type RetryPlan, type RetryResult } from './attempts.js';
import { AuditStore, type AuditRecord, type ListAuditFilter, type NewAuditRecord } from './audit.js';
import { ChangeListener, ChangeNotifier, changeChannelFor, type ChangeListenerOptions } from './changes.js';
import { ClaimStore, type ClaimResult } from './claims.js';
import { ClusterStore } from './clusters.js';
import { connect, type Connection, type ConnectOptions } from './connection.js';
import type { Clock, Db, Executor, StoreContext } from './context.js';
import { EventStore, type AppliedEvent } from './events.js';
import {
  toJob,
  type AttemptRecord,
  type JobDetailRecord,
  type JobRecord,
  type StepRecord,
} from './job-records.js';
import { insertJobBatch, type BatchJob, type StoredBatchJob } from './job-batch.js';
import { JobStore, type ListJobsFilter, type NewJob } from './jobs.js';
import { LoginFailureStore } from './login-failures.js';
import { migrateToLatest, type StoreDialect } from './migrations/index.js';
import { ResultStore, type ResultRecord, type ResultUpload } from './results.js';
import { RetentionStore } from './retention.js';
import { StatsStore } from './stats.js';
import { JobFileStore } from './job-files.js';
import { Listings } from './listings.js';
import { NotificationStore } from './notifications.js';
import { SpaceStore } from './spaces.js';
import { StatementCounts } from './statements.js';
import type { WalFlusher } from './sqlite-durable.js';
import { ScheduleStore } from './schedules.js';
import { SweepStore } from './sweeps.js';
import { TokenStore, type FoundToken, type TokenRecord } from './tokens.js';
import type { JobPatch, TransitionOptions, TransitionResult } from './transitions.js';
import { UserStore, type UserChange, type UserChangeOutcome, type UserRecord } from './users.js';
import {
  WorkflowStore,
  type AssetRecord,
  type NewWorkflowVersion,
  type WorkflowRecord,
  type WorkflowSummaryRecord,
} from './workflows.js';

export type { AgentRecord } from './agents.js';
export type { RetryPlan, RetryResult } from './attempts.js';
export type { AuditRecord, ListAuditFilter, NewAuditRecord } from './audit.js';
export type { ClaimResult } from './claims.js';
export type { ClusterRecord, ClusterState, NewCluster } from './clusters.js';
export type { StoreErrorKind } from './connection.js';
export type { Clock, Executor } from './context.js';
export type { AppliedEvent } from './events.js';
export type { AttemptRecord, JobDetailRecord, JobRecord, StepRecord } from './job-records.js';
export type { ListJobsFilter, NewJob } from './jobs.js';
export type { BatchJob, StoredBatchJob } from './job-batch.js';
export type { ResultRecord, ResultUpload } from './results.js';
export type { FoundToken, TokenRecord } from './tokens.js';
export type { JobPatch, TransitionOptions, TransitionResult } from './transitions.js';
export type {
  AssetRecord,
  NewWorkflowVersion,
  ParamDefinitionRecord,
  WorkflowRecord,
  WorkflowSummaryRecord,
} from './workflows.js';
export type { UserChange, UserChangeOutcome, UserRecord } from './users.js';

export interface OpenStoreOptions extends ConnectOptions {
  /** Called with a line for each applied migration. Default: silent. */
  onMigration?: (name: string) => void;
  /**
   * The store's clock (epoch ms): the default time of every write a caller does not date, and what token
   * expiry is judged against. Default `Date.now`; tests inject their own.
   */
  clock?: Clock;
  /**
   * Stop after applying this migration (by name, e.g. `0007_agent_draining`), leaving later ones pending:
   * for tests that build a database as an older release left it. Default: apply every migration.
   */
  migrateUntil?: string;
}

export class Store {
  /** Identifies this open store among the servers sharing one database (its notices carry it). */
  readonly instanceId: string;
  /** The NOTIFY channel of this database + schema; undefined on SQLite. */
  readonly changeChannel: string | undefined;
  readonly db: Db;
  readonly dialect: StoreDialect;
  private readonly ctx: StoreContext;
  private readonly flusher: WalFlusher | undefined;
  /** Spaces, space members and local groups. */
  readonly spaces: SpaceStore;
  /** Paged job and audit listings (portal, CLI). */
  readonly listings: Listings;
  /** Uploads, job inputs and live log notices. */
  readonly files: JobFileStore;
  /** Notification rules and the delivery outbox (filled by jobs' terminal transitions). */
  readonly notifications: NotificationStore;
  /** Defined clusters and their jobs' counts. */
  readonly clusters: ClusterStore;
  /** Pins and the retention sweep's reads and writes. */
  readonly retention: RetentionStore;
  /** Figures for the metrics endpoint. */
  readonly stats: StatsStore;
  /** Schedules and their ticks (the claim that fires each tick once). */
  readonly schedules: ScheduleStore;
  /** Every SQL statement this store sent, by kind (see `statements.ts`). */
  readonly statements: StatementCounts;
  private readonly users: UserStore;
  private readonly tokens: TokenStore;
  private readonly loginFailures: LoginFailureStore;
  private readonly results: ResultStore;
  private readonly audit: AuditStore;
  private readonly agents: AgentStore;
  private readonly workflows: WorkflowStore;
  private readonly jobs: JobStore;
  private readonly attempts: AttemptStore;
  private readonly claims: ClaimStore;
  private readonly sweeps: SweepStore;
  private readonly events: EventStore;

  private constructor(
    connection: Connection,
    private readonly config: StoreConfig,
    clock: Clock,
    statements: StatementCounts,
  ) {
    this.statements = statements;
    this.db = connection.db;
    this.dialect = connection.dialect;
    this.flusher = connection.flusher;
    this.instanceId = randomUUID();
    this.changeChannel = config.kind === 'postgres' ? changeChannelFor(config.schema) : undefined;
    const changes = new ChangeNotifier(this.instanceId, this.changeChannel);
    this.ctx = { db: this.db, dialect: this.dialect, clock, changes };
    this.spaces = new SpaceStore(this.db);
    this.listings = new Listings(this.db, toJob);
    this.files = new JobFileStore(this.db, this.changeChannel, this.instanceId);
    this.notifications = new NotificationStore(this.ctx);
    this.retention = new RetentionStore(this.ctx);
    this.stats = new StatsStore(this.ctx);
    this.schedules = new ScheduleStore(this.ctx);
    this.users = new UserStore(this.ctx);
    this.tokens = new TokenStore(this.ctx);
    this.loginFailures = new LoginFailureStore(this.ctx);
    this.results = new ResultStore(this.ctx);
    this.audit = new AuditStore(this.ctx);
    this.agents = new AgentStore(this.ctx);
    this.clusters = new ClusterStore(this.ctx);
    this.workflows = new WorkflowStore(this.ctx);
    this.jobs = new JobStore(this.ctx);
    this.attempts = new AttemptStore(this.ctx);
    this.claims = new ClaimStore(this.ctx);
    this.sweeps = new SweepStore(this.ctx);
    this.events = new EventStore(this.ctx);
  }

  /** Opens the database and applies pending migrations. */
  static async open(config: StoreConfig, options: OpenStoreOptions = {}): Promise<Store> {
    const statements = new StatementCounts();
    const { onStatement } = options;
    const connection = await connect(config, {
      ...options,
      onStatement: (sql) => {
        statements.count(sql);
        onStatement?.(sql);
      },
    });
    const { db, dialect, flusher } = connection;
    try {
      for (const name of await migrateToLatest(db as Kysely<unknown>, dialect, options.migrateUntil))
        options.onMigration?.(name);
      await flusher?.durable();
    } catch (error) {
      await flusher?.close();
      await db.destroy();
      throw error;
    }
    return new Store(connection, config, options.clock ?? Date.now, statements);
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
      password: this.config.password,
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

  // ---- users, tokens and login failures (users.ts, tokens.ts, login-failures.ts) -----------------------

  countUsers(): Promise<number> {
    return this.users.countUsers();
  }

  /** Returns false when the name is taken. */
  createUser(user: {
    name: string;
    role: 'admin' | 'user';
    passwordHash: string | null;
    createdAt: number;
  }): Promise<boolean> {
    return this.users.createUser(user);
  }

  upsertDirectoryUser(user: { name: string; role: 'admin' | 'user'; time: number }): Promise<UserRecord> {
    return this.users.upsertDirectoryUser(user);
  }

  getUser(name: string): Promise<UserRecord | undefined> {
    return this.users.getUser(name);
  }

  listUsers(): Promise<UserRecord[]> {
    return this.users.listUsers();
  }

  setUserDisabled(name: string, disabled: boolean): Promise<boolean> {
    return this.users.setUserDisabled(name, disabled);
  }

  setUserPassword(name: string, passwordHash: string): Promise<boolean> {
    return this.users.setUserPassword(name, passwordHash);
  }

  /** See `UserStore.changeUser`: guarded so that an enabled admin always remains. */
  changeUser(name: string, change: UserChange): Promise<UserChangeOutcome> {
    return this.users.changeUser(name, change);
  }

  recordLoginFailure(keys: readonly string[], time: number, forgetBefore: number): Promise<void> {
    return this.loginFailures.recordLoginFailure(keys, time, forgetBefore);
  }

  nthRecentLoginFailures(
    queries: readonly { key: string; nth: number }[],
    since: number,
  ): Promise<(number | null)[]> {
    return this.loginFailures.nthRecentLoginFailures(queries, since);
  }

  clearLoginFailures(key: string): Promise<void> {
    return this.loginFailures.clearLoginFailures(key);
  }

  createToken(token: Omit<TokenRecord, 'lastUsedAt' | 'revoked'> & { tokenHash: string }): Promise<void> {
    return this.tokens.createToken(token);
  }

  findToken(tokenHash: string): Promise<FoundToken | undefined> {
    return this.tokens.findToken(tokenHash);
  }

  touchToken(id: string, time: number): Promise<void> {
    return this.tokens.touchToken(id, time);
  }

  listTokens(user: string, kind: TokenRecord['kind'] = 'api'): Promise<TokenRecord[]> {
    return this.tokens.listTokens(user, kind);
  }

  getToken(id: string): Promise<TokenRecord | undefined> {
    return this.tokens.getToken(id);
  }

  revokeLoginTokens(user: string, keep?: string): Promise<number> {
    return this.tokens.revokeLoginTokens(user, keep);
  }

  revokeToken(user: string, id: string): Promise<boolean> {
    return this.tokens.revokeToken(user, id);
  }

  // ---- workflows (workflows.ts) -------------------------------------------------------------------------

  /** A new immutable version, numbered previous + 1 (see `WorkflowStore.insertWorkflowVersion`). */
  insertWorkflowVersion(workflow: NewWorkflowVersion): Promise<WorkflowRecord> {
    return this.workflows.insertWorkflowVersion(workflow);
  }

  /** A version of a live workflow (or, with `includeDeleted`, of any), or its latest; cached by version. */
  getWorkflow(
    space: string,
    name: string,
    version?: number,
    options: { includeDeleted?: boolean } = {},
  ): Promise<WorkflowRecord | undefined> {
    return this.workflows.getWorkflow(space, name, version, options);
  }

  listWorkflowVersions(space: string, name: string): Promise<WorkflowRecord[]> {
    return this.workflows.listWorkflowVersions(space, name);
  }

  listWorkflows(space: string): Promise<WorkflowSummaryRecord[]> {
    return this.workflows.listWorkflows(space);
  }

  countWorkflows(space: string): Promise<number> {
    return this.workflows.countWorkflows(space);
  }

  deleteWorkflow(space: string, name: string, by: string, time: number): Promise<number> {
    return this.workflows.deleteWorkflow(space, name, by, time);
  }

  workflowHasAsset(
    workflow: { space: string; name: string; version: number },
    digest: string,
  ): Promise<AssetRecord | undefined> {
    return this.workflows.workflowHasAsset(workflow, digest);
  }

  // ---- jobs, attempts, claims and sweeps (jobs.ts, transitions.ts, attempts.ts, claims.ts, sweeps.ts) ---

  /** Stores a new job, or finds the one stored with its `submitKey` (`created: false`). */
  insertJobOnce(job: NewJob): Promise<{ job: JobRecord; created: boolean }> {
    return this.jobs.insertJobOnce(job);
  }

  /**
   * Stores a batch of jobs, with their audit entries, in one transaction (see `job-batch.ts`); a job whose
   * `submitKey` was used before is returned as stored then (`created: false`). In the batch's order.
   */
  insertJobBatch(batch: readonly BatchJob[]): Promise<StoredBatchJob[]> {
    return insertJobBatch(this.ctx, this.jobs, batch);
  }

  /** The job `user` created with idempotency key `key`, if any. */
  findJobBySubmitKey(user: string, key: string): Promise<JobRecord | undefined> {
    return this.jobs.findJobBySubmitKey(user, key);
  }

  getJob(id: string, executor?: Executor): Promise<JobRecord | undefined> {
    return this.jobs.getJob(id, executor);
  }

  listJobs(filter: ListJobsFilter): Promise<JobRecord[]> {
    return this.jobs.listJobs(filter);
  }

  /** Ids of `user`'s jobs that have not ended (queued, offered, loading, running), oldest first. */
  listLiveJobIds(user: string): Promise<string[]> {
    return this.jobs.listLiveJobIds(user);
  }

  /** The one way a job's state changes (see `transitions.ts`); `ok: false` with the current job if not. */
  transitionJob(
    id: string,
    to: JobState,
    patch: JobPatch = {},
    options: TransitionOptions = {},
  ): Promise<TransitionResult> {
    return this.jobs.transitionJob(id, to, patch, options);
  }

  /** Marks a loading/running job as cancel-requested; the agent's final event ends it. */
  requestCancel(id: string, now?: number): Promise<JobRecord | undefined> {
    return this.jobs.requestCancel(id, now);
  }

  /** Records that the bus confirmed the offer of this attempt. */
  markOfferPublished(id: string, attempt: number, now?: number): Promise<void> {
    return this.jobs.markOfferPublished(id, attempt, now);
  }

  /** A job with its steps and attempts as of one snapshot. */
  getJobDetail(id: string): Promise<JobDetailRecord | undefined> {
    return this.jobs.getJobDetail(id);
  }

  listSteps(jobId: string, executor?: Executor): Promise<StepRecord[]> {
    return this.jobs.listSteps(jobId, executor);
  }

  /** Ends the current attempt and begins the next (see `AttemptStore.retryJob`). */
  retryJob(id: string, plan: RetryPlan): Promise<RetryResult> {
    return this.attempts.retryJob(id, plan);
  }

  listAttempts(jobId: string, executor?: Executor): Promise<AttemptRecord[]> {
    return this.attempts.listAttempts(jobId, executor);
  }

  /** Offers an unpublished job again as a new attempt (see `AttemptStore.reofferAsNewAttempt`). */
  reofferAsNewAttempt(
    id: string,
    fromAttempt: number,
    jobTokenHash: string,
    now?: number,
  ): Promise<JobRecord | undefined> {
    return this.attempts.reofferAsNewAttempt(id, fromAttempt, jobTokenHash, now);
  }

  /** Grants the attempt to `agentId` unless another agent holds it (see `ClaimStore.claimAttempt`). */
  claimAttempt(
    id: string,
    attempt: number,
    jobTokenHash: string,
    agentId: string,
    now?: number,
  ): Promise<ClaimResult> {
    return this.claims.claimAttempt(id, attempt, jobTokenHash, agentId, now);
  }

  releaseClaim(
    id: string,
    attempt: number,
    jobTokenHash: string,
    agentId: string,
    now?: number,
  ): Promise<boolean> {
    return this.claims.releaseClaim(id, attempt, jobTokenHash, agentId, now);
  }

  listJobsPastLoadDeadline(now: number, limit?: number): Promise<JobRecord[]> {
    return this.sweeps.listJobsPastLoadDeadline(now, limit);
  }

  listUnpublishedOffers(updatedBefore: number, limit?: number): Promise<JobRecord[]> {
    return this.sweeps.listUnpublishedOffers(updatedBefore, limit);
  }

  listQueuedJobsCreatedBefore(createdBefore: number, limit?: number): Promise<JobRecord[]> {
    return this.sweeps.listQueuedJobsCreatedBefore(createdBefore, limit);
  }

  listRunningJobsOfSilentAgents(lastSeenBefore: number, limit?: number): Promise<JobRecord[]> {
    return this.sweeps.listRunningJobsOfSilentAgents(lastSeenBefore, limit);
  }

  // ---- agents' job events (events.ts) -------------------------------------------------------------------

  /** Applies an agent event exactly once per (jobId, attempt, seq). */
  applyEvent(event: JobEvent, now?: number): Promise<AppliedEvent> {
    return this.events.applyEvent(event, now);
  }

  /** Applies several events in one transaction (a group commit), each as `applyEvent` would. */
  applyEvents(events: readonly JobEvent[], now?: number): Promise<AppliedEvent[]> {
    return this.events.applyEvents(events, now);
  }

  // ---- results, audit and agents (results.ts, audit.ts, agents.ts) ---------------------------------

  /** Records an uploaded result file. For tables, formats accumulate (`parquet` then `csv`). */
  upsertResult(result: ResultUpload): Promise<ResultRecord> {
    return this.results.upsertResult(result);
  }

  listResults(jobId: string): Promise<ResultRecord[]> {
    return this.results.listResults(jobId);
  }

  getResult(jobId: string, name: string): Promise<ResultRecord | undefined> {
    return this.results.getResult(jobId, name);
  }

  appendAudit(entry: NewAuditRecord): Promise<void> {
    return this.audit.appendAudit(entry);
  }

  /** Newest first. */
  listAudit(filter: ListAuditFilter): Promise<AuditRecord[]> {
    return this.audit.listAudit(filter);
  }

  /** Records a heartbeat that came through `cluster`'s bus (default `local`). */
  upsertAgent(heartbeat: Heartbeat, now?: number, cluster?: string): Promise<void> {
    return this.agents.upsertAgent(heartbeat, now, cluster);
  }

  /** Agents seen at or after `since`, of one cluster when given. */
  listAgents(since?: number, cluster?: string): Promise<AgentRecord[]> {
    return this.agents.listAgents(since, cluster);
  }

  agentCluster(id: string): Promise<string | undefined> {
    return this.agents.agentCluster(id);
  }
}

/** Opens (and migrates) the store described by `config`. */
export function openStore(config: StoreConfig, options: OpenStoreOptions = {}): Promise<Store> {
  return Store.open(config, options);
}

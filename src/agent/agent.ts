/**
 * The agent: one per executor machine, the only bus client there. It takes offers, decides accept/reject,
 * resolves the OS account, prepares directories, hands the job to that user's executor over its pipe, and
 * relays events. It never parses workflows or runs user code itself.
 *
 * Invariant: an offer is acked only after the executor reports the workflow loaded. Before that, any crash
 * (agent or executor) must lead to redelivery, so the job is never lost. After the ack nothing is held
 * unacked while the job runs: agent heartbeats cover it.
 *
 * A broker connection that drops while an offer is loading makes the broker take that delivery back (the
 * bus revokes it): the agent drops its hold quietly and keeps loading; when the broker redelivers the same
 * offer to this agent, the agent recognises its own job and settles the new delivery instead of running
 * the job a second time.
 *
 * An offer that fits this machine's labels but not its current load (no free slot, the user's cap, core or
 * memory budget) is parked: kept unacked — so it counts against the prefetch and the agent receives no more
 * than it can hold — and placed as soon as a job here ends. Only after a pause spaced to the offer's
 * deadline is it handed back for other agents, so waiting for capacity does not burn the delivery limit,
 * which is for offers no agent can take at all.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Bus, Delivery, Subscription } from '../bus/index.js';
import type { CompiledAgentConfig } from '../config/index.js';
import {
  Control,
  PROTOCOL_VERSION,
  coerceError,
  createOfferVerifier,
  type ErrorInfo,
  type ExecutorIdentity,
  type ExecutorToAgent,
  type Heartbeat,
  type JobEvent,
  type JobOffer,
  type JobState,
  type OfferVerifier,
  type StepEvent,
} from '../protocol/index.js';
import {
  currentAccount,
  mapToOsName,
  resolveAccount,
  lookupAccount,
  AccountCache,
  type IdentityPolicy,
  type OsAccount,
} from './accounts.js';
import { releaseClaim } from './claim-release.js';
import { planCleanup, runCleanup } from './cleanup.js';
import { detectCgroups, removeCgroupParents, type CgroupSupport, type JobCgroup } from './cgroups.js';
import { AgentLock } from './lock.js';
import { EventBatcher } from './event-batcher.js';
import { ExecutorExitedError, ExecutorPool, outOfMemory, type UserExecutor } from './pool.js';
import type { ExitInfo } from './spawner.js';
import { UserLogs } from './user-logs.js';
import { ensureHome, prepareUserDirs, prepareWorkspaceRoot, type UserDirs } from './workspaces.js';

export interface AgentOptions {
  config: CompiledAgentConfig;
  bus: Bus;
  /** Public keys (PEM) whose signatures on offers this agent trusts. */
  publicKeys: readonly string[];
  logger: Logger;
}

interface ActiveJob {
  offer: JobOffer;
  /** The offer's delivery while this agent still owes the bus a settle; undefined once acked or revoked. */
  delivery: Delivery<unknown> | undefined;
  seq: number;
  /** The executor reported the workflow loaded (the offer is acked then, or when redelivered). */
  loaded: boolean;
  cancelRequested: boolean;
  executor?: UserExecutor;
  identity?: ExecutorIdentity;
  /** The executor cgroup's OOM-kill count when the job started, to attribute a later kill to it. */
  oomKillsBefore: number;
  /** When the offer reached this agent (performance.now()), for the start-latency record. */
  receivedAt: number;
  /** Whether the user had no executor here when the job was placed (a cold start). */
  coldStart: boolean;
  firstStepLogged: boolean;
  timing?: Record<string, number>;
  sentAt?: number;
  /** The job's own cgroup (every process of the job), when cgroups are in force. */
  cgroup?: JobCgroup;
  /** Ends the job from the agent when the executor overruns the time limit or a cancel (see enforce). */
  enforcer?: NodeJS.Timeout;
}

function formatSeconds(ms: number): string {
  return `${Math.round(ms / 100) / 10} s`;
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

const REJECT_PAUSE_MS = [150, 450] as const;
/**
 * Pause before handing back a newer attempt of a job whose older attempt is still stopping here. Longer than a
 * plain reject: every hand-back counts towards the offer's delivery limit, and stopping an executor's job may
 * take until the TERM → KILL escalation.
 */
const HOLD_PAUSE_MS = [1000, 2000] as const;
/** How long a user's checked directories are taken as they are before the next check (see preparedDirs). */
const DIRS_RECHECK_MS = 60_000;
/** How long a decrease of the prefetch waits, in case a job ending raises it again (see updatePrefetch). */
const PREFETCH_SHRINK_DELAY_MS = 250;
/** How long a hand-back keeps trying to release its claim on a server that does not answer. */
const CLAIM_RELEASE_TIMEOUT_MS = 5_000;
/** Between the two releases of a hand-back: time for a fetch the dead executor sent to reach the server. */
const CLAIM_RELEASE_SETTLE_MS = 250;
/** Bounds of the pause before a parked offer (no room here now) is handed back to other agents. */
const PARK_MS = [2_000, 30_000] as const;

interface ParkedOffer {
  offer: JobOffer;
  delivery: Delivery<unknown>;
  receivedAt: number;
  timer: NodeJS.Timeout;
}

/** Adds a key to a set that keeps at most `max` entries, dropping the oldest. */
function remember(set: Set<string>, key: string, max: number): void {
  set.add(key);
  if (set.size > max) {
    const oldest = set.values().next().value;
    if (oldest !== undefined) set.delete(oldest);
  }
}

export class Agent {
  readonly isolation: 'per-user' | 'single-user';
  private readonly config: CompiledAgentConfig;
  private readonly bus: Bus;
  private readonly log: Logger;
  private readonly verifier: OfferVerifier;
  private readonly policy: IdentityPolicy;
  private readonly accounts: AccountCache;
  private readonly pool: ExecutorPool;
  private readonly userLogs: UserLogs;
  private cgroupSupport: CgroupSupport = { version: 'none', detail: 'not detected yet' };
  private readonly active = new Map<string, ActiveJob>();
  /** (jobId, attempt) pairs this agent took, so a replayed offer is refused. Bounded. */
  private readonly taken = new Set<string>();
  /**
   * Jobs this agent took whose offer delivery the broker took back (connection drop) before the ack: their
   * redelivery to this agent is settled, not run again. Bounded.
   */
  private readonly awaitingRedelivery = new Set<string>();
  /**
   * Users whose home and directories were checked (or made) lately: their next jobs skip the checks. Root does
   * nothing else with those directories (the executor uses them as the user), so a user who changes their own
   * directories meanwhile affects only their own jobs; the check runs again after DIRS_RECHECK_MS.
   */
  private readonly preparedDirs = new Map<string, UserDirs & { uid: number; at: number }>();
  /** Offers that fit this machine but not its load right now, in arrival order. */
  private readonly parked = new Map<string, ParkedOffer>();
  private readonly deliveryLimit: number;
  private readonly events: EventBatcher;
  private offers: Subscription | undefined;
  /** The prefetch last given to the offers subscription, and a pending decrease of it. */
  private prefetchApplied = 0;
  private prefetchShrink: NodeJS.Timeout | undefined;
  private control: Subscription | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private housekeeping: NodeJS.Timeout | undefined;
  private draining = false;
  /** `stop()` was called (it may still be draining; `stopped` is set once it really stops). */
  private stopping = false;
  private stopped = false;
  /** Names this run's cgroups: cgroups of any other instance of this id are a dead run's (see cgroups.ts). */
  readonly instance = randomBytes(4).toString('hex');
  private lock: AgentLock | undefined;
  /**
   * Job directories (`<job>-<attempt>`) left by executors the agent killed, by OS user: the user's next
   * executor removes them (as the user; root never deletes inside a user's tree). Bounded.
   */
  private readonly leftDirs = new Map<string, Set<string>>();

  constructor(options: AgentOptions) {
    this.config = options.config;
    this.bus = options.bus;
    this.log = options.logger.child({ component: 'agent', agentId: options.config.id });
    this.verifier = createOfferVerifier(options.publicKeys);
    this.events = new EventBatcher(options.config.id, (message) => this.bus.publishEvent(message));
    this.deliveryLimit = this.bus.deliveryLimit;
    this.isolation = process.getuid?.() === 0 ? 'per-user' : 'single-user';
    this.policy = { ...this.config.identity, userMap: this.config.userMap };
    const lookupTimeoutMs = this.config.accountLookupTimeoutMs;
    this.accounts = new AccountCache(this.config.accountCacheTtlMs, (name) =>
      lookupAccount(name, lookupTimeoutMs),
    );
    this.userLogs = new UserLogs(this.config.logDir, this.config.logRetentionDays);
    this.pool = new ExecutorPool({
      warmExecutors: this.config.warmExecutors,
      idleTimeoutMs: this.config.idleTimeoutMs,
      stopTimeoutMs: this.config.stopTimeoutMs,
      duckdb: this.config.duckdb,
      keepJobDirs: this.config.keepJobDirs,
      cgroups: this.cgroupSupport,
      limits: this.config.limits,
      heartbeat: this.config.executorHeartbeat,
      onOutput: (owner, pid, stream, line) => {
        if (owner) this.userLogs.write(owner, pid, stream, line);
        else this.log.info({ pid, stream }, line);
      },
      onMessage: (executor, message) => this.onExecutorMessage(executor, message),
      onExit: (executor, exit, jobs) => {
        this.log.info(
          {
            user: executor.account.name,
            pid: executor.pid,
            kind: exit.kind,
            cause: exit.cause,
            code: exit.code,
            signal: exit.signal,
            jobs,
          },
          'executor exited',
        );
        for (const jobId of jobs) this.executorLost(jobId, exit);
      },
    });
  }

  /** Which cgroup interface enforces executor limits (`none` with the reason when none does). */
  get cgroups(): CgroupSupport {
    return this.cgroupSupport;
  }

  get limits(): CompiledAgentConfig['limits'] {
    return this.config.limits;
  }

  get freeSlots(): number {
    return this.draining || this.stopped ? 0 : Math.max(0, this.config.slots - this.active.size);
  }

  async start(): Promise<void> {
    // First: a second agent with this id must not touch anything (cgroups, queues) of the first.
    this.lock = await AgentLock.acquire(this.config.lockDir, this.config.id);
    try {
      await this.startHoldingLock();
    } catch (error) {
      await this.lock.release();
      throw error;
    }
  }

  private async startHoldingLock(): Promise<void> {
    await prepareWorkspaceRoot(this.config.workspaceRoot, this.isolation === 'per-user');
    this.cgroupSupport = await detectCgroups(this.config.id, this.instance);
    this.pool.setCgroups(this.cgroupSupport);
    await this.pool.prime();
    this.control = await this.bus.consumeControl(this.config.id, (delivery) => this.onControl(delivery));
    this.prefetchApplied = this.freeSlots;
    this.offers = await this.bus.consumeOffers((delivery) => this.onOffer(delivery), {
      prefetch: this.prefetchApplied,
    });
    this.heartbeat = setInterval(() => void this.sendHeartbeat(), this.config.heartbeatIntervalMs);
    this.heartbeat.unref();
    this.housekeeping = setInterval(
      () => void this.houseKeep(),
      Math.min(this.config.cleanup?.everyMs ?? 86_400_000, 86_400_000),
    );
    this.housekeeping.unref();
    void this.houseKeep();
    await this.sendHeartbeat();
    this.log.info(
      {
        isolation: this.isolation,
        slots: this.config.slots,
        labels: this.config.labels,
        cgroups: this.cgroupSupport.version,
        cgroupDetail: this.cgroupSupport.detail,
        limits: this.config.limits,
      },
      'agent started',
    );
  }

  /**
   * Stops the agent. With `graceMs` (the daemons pass `agent.stopGrace`) and jobs running, it drains first:
   * takes no new jobs, hands back parked offers, and waits up to `graceMs` for its jobs to end, or until
   * `interrupt` aborts (a second signal). Jobs still running then end with their executors.
   */
  async stop(options: { graceMs?: number; interrupt?: AbortSignal } = {}): Promise<void> {
    if (this.stopped || this.stopping) return;
    this.stopping = true;
    const graceMs = options.graceMs ?? 0;
    if (graceMs > 0 && this.active.size > 0 && !options.interrupt?.aborted)
      await this.drainBeforeStop(graceMs, options.interrupt);
    this.stopped = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.housekeeping) clearInterval(this.housekeeping);
    if (this.prefetchShrink) clearTimeout(this.prefetchShrink);
    await this.handBackParked();
    await this.offers?.cancel();
    await this.control?.cancel();
    await this.pool.close();
    await removeCgroupParents(this.cgroupSupport);
    this.userLogs.close();
    await this.lock?.release();
  }

  private async drainBeforeStop(graceMs: number, interrupt: AbortSignal | undefined): Promise<void> {
    this.draining = true;
    this.log.info(
      { running: this.active.size, graceMs },
      'stopping: taking no new jobs; waiting for the running ones to end (a second signal stops at once)',
    );
    await this.handBackParked();
    await this.updatePrefetch();
    await this.sendHeartbeat().catch(() => undefined);
    const deadline = Date.now() + graceMs;
    while (this.active.size > 0 && !interrupt?.aborted) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      await new Promise((resolve) => setTimeout(resolve, Math.min(200, left)));
    }
    if (this.active.size > 0)
      this.log.warn(
        { running: this.active.size, interrupted: interrupt?.aborted ?? false },
        'stopping with jobs still running: they end with their executors',
      );
  }

  /** Log retention, and the scheduled workspace cleanup when configured. Never throws. */
  private async houseKeep(): Promise<void> {
    try {
      const prunedLogs = await this.userLogs.prune();
      let removed = 0;
      let failed = 0;
      if (this.config.cleanup && this.isolation === 'per-user') {
        const report = await runCleanup(
          await planCleanup(this.config.workspaceRoot, this.config.cleanup.olderThanMs),
        );
        removed = report.removed.length;
        failed = report.failed.length;
        for (const { item, error } of report.failed)
          this.log.warn({ path: item.path, error }, 'cleanup failed');
      }
      if (prunedLogs + removed + failed > 0) this.log.info({ prunedLogs, removed, failed }, 'housekeeping');
    } catch (error) {
      this.log.error({ err: error }, 'housekeeping failed');
    }
  }

  // --- offers --------------------------------------------------------------------------------------------

  private async onOffer(delivery: Delivery<unknown>): Promise<void> {
    const receivedAt = performance.now();
    let offer: JobOffer;
    try {
      offer = this.verifier.verify(delivery.body);
    } catch (error) {
      const reason = coerceError(error, 'STEWARD_MESSAGE_INVALID');
      this.log.warn(
        { code: reason.code, deliveryCount: delivery.deliveryCount },
        `dead-lettering offer: ${reason.message}`,
      );
      await delivery.deadLetter(`${reason.code}: ${reason.message}`);
      return;
    }
    const key = `${offer.jobId}:${offer.attempt}`;
    // A redelivery of a job this agent took (its first delivery was taken back in a drop, or its ack was
    // lost with the connection) is settled, never run again here.
    const ours = this.active.has(key) || this.taken.has(key);
    if (this.awaitingRedelivery.has(key) || (ours && delivery.deliveryCount > 1)) {
      await this.redelivered(key, delivery);
      return;
    }
    if (this.active.has(key) || this.taken.has(key) || this.parked.has(key)) {
      await delivery.deadLetter(
        `STEWARD_OFFER_REPLAYED: job ${offer.jobId} attempt ${offer.attempt} was already taken by agent ${this.config.id}`,
      );
      return;
    }
    if (this.holdsOlderAttempt(offer)) {
      // Two attempts of one job must never run side by side here (same workspace, same results). The newer
      // attempt, signed by the server, proves the older one was given up: stop it, and hand the new offer
      // back meanwhile so another agent can take it (or this one, once the old attempt has ended).
      const [low, high] = HOLD_PAUSE_MS;
      await delivery.requeue(low + Math.random() * (high - low));
      return;
    }
    const missing = offer.labels.filter((label) => !this.config.labels.includes(label));
    if (missing.length > 0 || this.draining || this.stopped) {
      // Not for us (or never again): hand it back after a jittered pause so it goes round to other agents.
      const [low, high] = REJECT_PAUSE_MS;
      await delivery.requeue(low + Math.random() * (high - low));
      return;
    }
    const verdict = this.freeSlots === 0 ? 'no free slot' : this.fits(offer);
    if (verdict) {
      this.park(key, offer, delivery, receivedAt, verdict);
      return;
    }
    await this.accept(key, offer, delivery, receivedAt);
  }

  /**
   * The broker delivered again an offer whose first delivery it took back while this agent loaded the job:
   * the job is this agent's. Ack the new delivery once the job has loaded (or ended); until then hold it.
   */
  private async redelivered(key: string, delivery: Delivery<unknown>): Promise<void> {
    this.awaitingRedelivery.delete(key);
    const job = this.active.get(key);
    this.log.info(
      { jobId: key.split(':')[0], deliveryCount: delivery.deliveryCount, state: job ? 'active' : 'ended' },
      'offer redelivered after a broker drop; the job is already ours',
    );
    if (job && !job.loaded && !job.delivery) {
      this.hold(key, job, delivery);
      return;
    }
    await delivery.ack();
    if (!job) await this.updatePrefetch();
  }

  /** Keeps the job's offer delivery unsettled until the job loads; a revocation drops the hold quietly. */
  private hold(key: string, job: ActiveJob, delivery: Delivery<unknown>): void {
    job.delivery = delivery;
    delivery.onRevoked(() => {
      if (job.delivery !== delivery) return;
      job.delivery = undefined;
      // Still ours if still running here (or ended here): its redelivery is settled, not run again.
      if (this.active.get(key) === job || this.taken.has(key)) {
        remember(this.awaitingRedelivery, key, 10_000);
        this.log.info({ jobId: job.offer.jobId }, 'broker took back a loading offer; keeping the job');
      }
    });
  }

  /** Settles the job's offer delivery (ack) if this agent still holds it. */
  private async release(job: ActiveJob): Promise<void> {
    const delivery = job.delivery;
    if (!delivery) return;
    job.delivery = undefined;
    await delivery.ack();
  }

  /**
   * No room here now: hold the offer (unacked, so the prefetch keeps further offers away) and place it when a
   * job ends. Hand it back only after a pause that spreads its remaining deliveries over its remaining time:
   * waiting for capacity must not exhaust the delivery limit before the server's load timeout decides.
   */
  private park(
    key: string,
    offer: JobOffer,
    delivery: Delivery<unknown>,
    receivedAt: number,
    reason: string,
  ): void {
    const remainingMs = Math.max(0, offer.deadline - Date.now());
    const deliveriesLeft = Math.max(1, this.deliveryLimit - delivery.deliveryCount);
    const [low, high] = PARK_MS;
    const pause = Math.min(high, Math.max(low, remainingMs / deliveriesLeft)) * (0.8 + Math.random() * 0.4);
    const timer = setTimeout(() => {
      if (this.parked.get(key)?.delivery !== delivery) return;
      this.parked.delete(key);
      void delivery.requeue(0).then(() => this.updatePrefetch());
    }, pause);
    timer.unref();
    this.parked.set(key, { offer, delivery, receivedAt, timer });
    delivery.onRevoked(() => {
      if (this.parked.get(key)?.delivery !== delivery) return;
      clearTimeout(timer);
      this.parked.delete(key);
    });
    this.log.debug(
      { jobId: offer.jobId, user: offer.user, reason, handBackMs: Math.round(pause) },
      'no room for the offer now; holding it until a job ends',
    );
  }

  /**
   * A job ended: place parked offers that fit now, most-delivered first (an offer that came back often is
   * closest to its delivery limit), then oldest first.
   */
  private async placeParked(): Promise<void> {
    const order = [...this.parked].sort(
      ([, a], [, b]) => b.delivery.deliveryCount - a.delivery.deliveryCount || a.receivedAt - b.receivedAt,
    );
    for (const [key, parked] of order) {
      if (this.freeSlots === 0) return;
      if (this.parked.get(key) !== parked || this.fits(parked.offer)) continue;
      clearTimeout(parked.timer);
      this.parked.delete(key);
      await this.accept(key, parked.offer, parked.delivery, parked.receivedAt);
    }
  }

  private async handBackParked(): Promise<void> {
    const parked = [...this.parked.values()];
    this.parked.clear();
    for (const { timer } of parked) clearTimeout(timer);
    await Promise.all(parked.map(({ delivery }) => delivery.requeue(0)));
  }

  private async accept(
    key: string,
    offer: JobOffer,
    delivery: Delivery<unknown>,
    receivedAt: number,
  ): Promise<void> {
    // Each delivery of an offer numbers its events in its own range: when an agent died after reporting and
    // the offer went to another agent, the new agent's events must not look like duplicates of the old ones.
    const seq = (delivery.deliveryCount - 1) * 1_000_000;
    const job: ActiveJob = {
      offer,
      delivery: undefined,
      seq,
      loaded: false,
      cancelRequested: false,
      oomKillsBefore: 0,
      receivedAt,
      coldStart: false,
      firstStepLogged: false,
    };
    this.active.set(key, job);
    remember(this.taken, key, 100_000);
    this.hold(key, job, delivery);
    await this.updatePrefetch();
    // Placing does not wait for the broker's confirm of `loading`: it is published now, on the channel every
    // later event of the job goes out on, so the server still sees it first; and whatever was confirmed, the
    // offer stays unacked until `loaded`, so a crash before that leads to redelivery.
    void this.emitState(job, 'loading');
    try {
      await this.place(job);
    } catch (error) {
      if (error instanceof ExecutorExitedError && this.active.get(key) === job) {
        // Killed while becoming the user: a crash before the load, handed back like one during it.
        this.log.warn({ jobId: offer.jobId, cause: error.exit.cause }, error.message);
        this.handBackLoading(key, job, error.exit);
        return;
      }
      const failure = coerceError(error, 'STEWARD_EXECUTOR_START_FAILED');
      this.log.warn({ jobId: offer.jobId, code: failure.code }, failure.message);
      // Identity refusals and start failures end the job with a clear reason: no retry loop.
      await this.finish(job, 'failed', { code: failure.code, message: failure.message });
    }
  }

  /** Whether an older attempt of the offer's job is still held here; if so, asks it to stop. */
  private holdsOlderAttempt(offer: JobOffer): boolean {
    let held = false;
    for (const job of this.active.values()) {
      if (job.offer.jobId !== offer.jobId || job.offer.attempt >= offer.attempt) continue;
      held = true;
      if (!job.cancelRequested) {
        this.log.warn(
          { jobId: offer.jobId, heldAttempt: job.offer.attempt, newAttempt: offer.attempt },
          'a newer attempt of a job held here arrived; stopping the older attempt',
        );
        this.requestCancel(job);
      }
    }
    return held;
  }

  /**
   * Whether the offer fits this machine's budget now: the user's own cap, then — if the user needs a new
   * executor — core tokens and memory for it (an idle executor of another user is evicted to make room).
   * Returns the reason it does not fit, or undefined. Names the identity policy would refuse fit: placing
   * them ends the job with the refusal, which costs nothing.
   */
  private fits(offer: JobOffer): string | undefined {
    const { capacity } = this.config;
    let userJobs = 0;
    for (const job of this.active.values()) if (job.offer.user === offer.user) userJobs += 1;
    if (userJobs >= capacity.maxJobsPerUser)
      return `user ${offer.user} already runs ${userJobs} job(s), the per-user cap`;
    if (this.isolation !== 'per-user') return undefined;
    let osName: string;
    try {
      osName = mapToOsName(offer.user, this.policy);
    } catch {
      return undefined;
    }
    if (this.pool.hasExecutorFor(osName)) return undefined;
    const needed = (executors: number) => ({
      tokens: (executors + 1) * capacity.tokensPerExecutor,
      memory: (executors + 1) * this.config.limits.memoryBytes,
    });
    // Users accepted a moment ago whose executors are not in the pool yet hold their share too.
    const pending = new Set<string>();
    for (const job of this.active.values()) {
      if (job.executor || job.offer.user === offer.user || pending.has(job.offer.user)) continue;
      let name: string;
      try {
        name = mapToOsName(job.offer.user, this.policy);
      } catch {
        continue;
      }
      if (!this.pool.hasExecutorFor(name)) pending.add(job.offer.user);
    }
    for (;;) {
      const want = needed(this.pool.userExecutorCount + pending.size);
      if (want.tokens <= capacity.tokens && want.memory <= capacity.memoryBytes) return undefined;
      if (!this.pool.evictIdle())
        return `no capacity for another executor (${want.tokens} of ${capacity.tokens} core tokens, ${want.memory} of ${capacity.memoryBytes} bytes)`;
    }
  }

  private async place(job: ActiveJob): Promise<void> {
    const account: OsAccount =
      this.isolation === 'per-user'
        ? await resolveAccount(job.offer.user, this.policy, this.config.id, (name) => this.accounts.get(name))
        : currentAccount();
    const t1 = performance.now();
    let homeDone = t1;
    let dirs = this.preparedDirs.get(account.name);
    if (!dirs || dirs.uid !== account.uid || Date.now() - dirs.at > DIRS_RECHECK_MS) {
      // The home directory and the workspace are independent: prepared side by side.
      const [, prepared] = await Promise.all([
        (this.isolation === 'per-user' ? ensureHome(account) : Promise.resolve()).then(() => {
          homeDone = performance.now();
        }),
        prepareUserDirs(this.config.workspaceRoot, account, this.isolation === 'per-user', {
          auditorsGroup: this.config.auditorsGroup,
        }),
      ]);
      dirs = { ...prepared, uid: account.uid, at: Date.now() };
      this.preparedDirs.set(account.name, dirs);
      if (this.preparedDirs.size > 10_000) {
        const oldest = this.preparedDirs.keys().next().value;
        if (oldest !== undefined) this.preparedDirs.delete(oldest);
      }
    }
    const t3 = performance.now();
    const t2 = homeDone;
    job.coldStart = !this.pool.hasExecutorFor(account.name);
    const executor = await this.pool.acquire(account, dirs);
    const t4 = performance.now();
    const left = this.leftDirs.get(account.name);
    if (left) {
      this.leftDirs.delete(account.name);
      executor.process.send({ type: 'remove-job-dirs', names: [...left] });
    }
    // Where a start's time goes (ms), logged with the start latency: the figures to look at when it is slow.
    job.timing = {
      acceptAndResolve: round(t1 - job.receivedAt),
      home: round(t2 - t1),
      homeAndDirs: round(t3 - t1),
      executor: round(t4 - t3),
      load: 0,
    };
    if (job.cancelRequested) {
      await this.finish(job, 'canceled', {
        code: 'STEWARD_JOB_CANCELED',
        message: 'canceled before it started',
      });
      return;
    }
    job.executor = executor;
    job.identity = executor.identity;
    job.oomKillsBefore = executor.cgroup?.oomKills() ?? 0;
    if (executor.cgroup?.jobCgroups) {
      // Made by root, writable (its cgroup.procs only) by the user: every step of the job starts in it.
      job.cgroup = await executor.cgroup.createJob(
        `job-${job.offer.jobId}-${job.offer.attempt}`.replace(/[^A-Za-z0-9_.-]/g, '_'),
        executor.pid,
        account.uid,
        account.gid,
      );
    }
    this.pool.jobStarted(executor, job.offer.jobId);
    executor.process.send({
      type: 'job',
      jobId: job.offer.jobId,
      attempt: job.offer.attempt,
      serverUrl: job.offer.serverUrl,
      jobToken: job.offer.jobToken,
      agentId: this.config.id,
      params: job.offer.params,
      ...(job.offer.limits.timeoutMs ? { timeoutMs: job.offer.limits.timeoutMs } : {}),
      ...(job.cgroup ? { cgroupProcs: job.cgroup.procsFile } : {}),
    });
    job.sentAt = performance.now();
    // A cancel that came while the executor was being prepared is the executor's to honour now.
    if (job.cancelRequested) this.requestCancel(job);
  }

  private onExecutorMessage(executor: UserExecutor, message: ExecutorToAgent): void {
    if (message.type !== 'loaded' && message.type !== 'step' && message.type !== 'finished') return;
    const job = this.findJob(message.jobId, executor);
    if (!job) return;
    switch (message.type) {
      case 'loaded':
        void this.loaded(job);
        return;
      case 'step':
        if (message.step.state === 'running' && !job.firstStepLogged) {
          job.firstStepLogged = true;
          // Offer arrival → first step running: the figure `bench/cold-start.mjs` reports.
          this.log.info(
            {
              jobId: job.offer.jobId,
              attempt: job.offer.attempt,
              user: executor.account.name,
              coldStart: job.coldStart,
              startLatencyMs: round(performance.now() - job.receivedAt),
              phasesMs: job.timing,
            },
            'first step started',
          );
        }
        void this.emitStep(job, message.step);
        return;
      case 'finished':
        if (!job.loaded && message.error?.code === 'STEWARD_ATTEMPT_CLAIMED') {
          void this.dropClaimed(job, message.error);
          return;
        }
        void this.finish(job, message.state, message.error);
        return;
    }
  }

  private async loaded(job: ActiveJob): Promise<void> {
    if (job.timing && job.sentAt !== undefined) job.timing.load = round(performance.now() - job.sentAt);
    job.loaded = true;
    // The engine's clock for the time limit starts now; the agent's runs alongside, plus the grace.
    const { timeoutMs } = job.offer.limits;
    if (timeoutMs && !job.enforcer) {
      job.enforcer = setTimeout(
        () =>
          void this.endByAgent(
            job,
            'failed',
            `the job exceeded its time limit of ${formatSeconds(timeoutMs)} and the executor had not ended it ${formatSeconds(this.config.deadlineGraceMs)} later`,
          ),
        timeoutMs + this.config.deadlineGraceMs,
      );
      job.enforcer.unref();
    }
    await this.updatePrefetch();
    // `running` is published before the ack, so the broker has it before anything can make the offer
    // go elsewhere; the final state, published later on the same channel, can never overtake it.
    const running = this.emitState(job, 'running');
    await this.release(job);
    await running;
  }

  /**
   * The executor died under a job: before the ack the offer goes back for redelivery (saying why, so that a
   * job that kills every executor loading it is reported as poison once the bus gives up on it); after the
   * ack, the job failed and the server decides whether to retry it.
   */
  private executorLost(jobId: string, exit: ExitInfo): void {
    const { cause } = exit;
    for (const [key, job] of this.active) {
      if (job.offer.jobId !== jobId) continue;
      if (!job.loaded) {
        this.handBackLoading(key, job, exit);
      } else if (exit.kind === 'unresponsive') {
        this.leftBehind(job);
        void this.finish(job, job.cancelRequested ? 'canceled' : 'failed', {
          code: 'STEWARD_AGENT_ENDED_JOB',
          message: `agent ${this.config.id} ended the job: the executor for ${job.identity?.osUser ?? job.offer.user} was ${cause}, so the agent killed it and every process of the job`,
        });
      } else {
        const oom = exit.kind === 'out-of-memory';
        void this.finish(job, 'failed', {
          code: oom ? 'STEWARD_OUT_OF_MEMORY' : 'STEWARD_EXECUTOR_CRASHED',
          message: oom
            ? `${cause}: the executor for ${job.identity?.osUser ?? job.offer.user} was killed by the kernel`
            : `executor for ${job.identity?.osUser ?? job.offer.user} ended during the job: ${cause}`,
        });
      }
    }
  }

  /**
   * The job's executor died before the workflow loaded: the offer goes back to the bus (its delivery count
   * grows, so an offer that kills every executor ends at the delivery limit as poison), with an `offered`
   * event that says why.
   */
  private handBackLoading(key: string, job: ActiveJob, exit: Pick<ExitInfo, 'kind' | 'cause'>): void {
    const { cause } = exit;
    this.active.delete(key);
    this.dropJobResources(job);
    this.taken.delete(key);
    // Without a hold (the broker took the delivery back in a drop) the redelivery is a fresh offer.
    this.awaitingRedelivery.delete(key);
    const delivery = job.delivery;
    job.delivery = undefined;
    const handBack = async (): Promise<void> => {
      // The claim is freed over HTTP, alongside the event: the event waits behind any backlog in the events
      // queue, and an agent given the redelivered offer before it lands would be refused. Twice: the dead
      // executor's fetch may still be on its way and claim the attempt after the first release. The second
      // cannot free a newer claim of this agent's: it holds the delivery until the requeue below.
      const released = this.releaseClaim(job)
        .then(() => new Promise((resolve) => setTimeout(resolve, CLAIM_RELEASE_SETTLE_MS)))
        .then(() => this.releaseClaim(job));
      await this.emitState(job, 'offered', {
        code: exit.kind === 'out-of-memory' ? 'STEWARD_OUT_OF_MEMORY' : 'STEWARD_EXECUTOR_CRASHED',
        message: `agent ${this.config.id}: the executor for ${job.identity?.osUser ?? job.offer.user} ended while loading the job (${cause}); offer handed back after delivery ${delivery?.deliveryCount ?? '?'}`,
      });
      await released;
      if (delivery) await delivery.requeue(0);
      await this.updatePrefetch();
      await this.placeParked();
    };
    void handBack();
  }

  /**
   * Gives up this agent's claim on a job's attempt that never started (a no-op on the server when the
   * executor had not fetched yet). A failure is only logged: the hand-back event frees the claim too, later.
   */
  private async releaseClaim(job: ActiveJob): Promise<void> {
    const { offer } = job;
    try {
      await releaseClaim(offer, this.config.id, AbortSignal.timeout(CLAIM_RELEASE_TIMEOUT_MS));
    } catch (error) {
      this.log.warn(
        { jobId: offer.jobId, attempt: offer.attempt, err: error },
        "could not release this agent's claim on the job; another agent may load it only once the hand-back event reaches the server",
      );
    }
  }

  /**
   * The server refused this agent's load: another agent holds the attempt (the broker gave it the same offer
   * after taking it back from this agent in a connection drop, or the other way round). The job is that
   * agent's: settle this agent's delivery, if it still holds one, and free the slot, without a state event
   * (the job's record is the other agent's to write). The key stays in `taken`: should the broker bring the
   * offer here again, it is settled, not loaded.
   */
  private async dropClaimed(job: ActiveJob, error: ErrorInfo): Promise<void> {
    const key = `${job.offer.jobId}:${job.offer.attempt}`;
    if (this.active.get(key) !== job) return;
    this.active.delete(key);
    this.dropJobResources(job);
    if (job.executor) this.pool.jobEnded(job.executor, job.offer.jobId);
    this.log.info(
      { jobId: job.offer.jobId, attempt: job.offer.attempt, held: job.delivery !== undefined },
      `another agent loads the job; dropping this agent's copy (${error.message})`,
    );
    await this.release(job);
    await this.placeParked();
    await this.updatePrefetch();
  }

  private async finish(job: ActiveJob, state: JobState, error?: ErrorInfo): Promise<void> {
    const key = `${job.offer.jobId}:${job.offer.attempt}`;
    if (this.active.get(key) !== job) return;
    this.active.delete(key);
    if (job.enforcer) clearTimeout(job.enforcer);
    // Everything of the job dies with it — daemons that left the step's process group included — before
    // the end is reported; and anything of a job that slipped out of its job's cgroup goes too.
    if (job.cgroup) {
      const killed = await job.cgroup.remove().catch(() => 0);
      if (killed > 0)
        this.log.info(
          { jobId: job.offer.jobId, killed },
          'killed processes the job left behind in its cgroup',
        );
    }
    if (job.executor?.cgroup) await job.executor.cgroup.killStrays(job.executor.pid).catch(() => 0);
    const cgroup = job.executor?.cgroup;
    if (state === 'failed' && error?.code !== 'STEWARD_OUT_OF_MEMORY' && cgroup) {
      // A step the kernel killed for the memory limit looks like any killed process to the engine; the
      // cgroup's own counter says what happened.
      if (cgroup.oomKills() > job.oomKillsBefore) {
        error = {
          code: 'STEWARD_OUT_OF_MEMORY',
          message: `${outOfMemory(cgroup.limits)}${error ? `: ${error.message}` : ''}`,
        };
      }
    }
    if (job.executor) this.pool.jobEnded(job.executor, job.offer.jobId);
    // Final state first, then ack: if we die in between, a redelivered offer finds the job ended.
    await this.emitState(job, state, error);
    await this.release(job);
    await this.placeParked();
    await this.updatePrefetch();
  }

  /**
   * Asks the job's executor to cancel it, and holds the cancel: should the executor not end the job within
   * the grace, the agent ends it itself.
   */
  private requestCancel(job: ActiveJob): void {
    job.cancelRequested = true;
    if (!job.executor) return; // Still being placed: place() passes the cancel on.
    job.executor.process.send({ type: 'cancel', jobId: job.offer.jobId });
    if (job.enforcer) clearTimeout(job.enforcer);
    job.enforcer = setTimeout(
      () =>
        void this.endByAgent(
          job,
          'canceled',
          `the executor had not ended the job ${formatSeconds(this.config.deadlineGraceMs)} after its cancel`,
        ),
      this.config.deadlineGraceMs,
    );
    job.enforcer.unref();
  }

  /**
   * The executor did not end the job in time (a time limit or a cancel, plus the grace): the agent does.
   * It kills every process of the job; an executor that does not answer either (stopped, hung) is killed too,
   * with everything it runs. The job ends `failed` or `canceled` with STEWARD_AGENT_ENDED_JOB, and its slot
   * is free.
   */
  private async endByAgent(job: ActiveJob, state: 'failed' | 'canceled', why: string): Promise<void> {
    const key = `${job.offer.jobId}:${job.offer.attempt}`;
    if (this.active.get(key) !== job) return;
    const executor = job.executor;
    const unresponsive = executor !== undefined && !this.pool.responsive(executor);
    this.log.warn(
      { jobId: job.offer.jobId, attempt: job.offer.attempt, user: executor?.account.name, unresponsive },
      `ending the job from the agent: ${why}`,
    );
    if (executor && (unresponsive || !job.cgroup)) {
      this.leftBehind(job);
      // Without a job cgroup the executor's is the only way to reach every process of the job.
      this.pool.killHung(
        executor,
        unresponsive ? 'unresponsive (ended by the agent)' : 'killed by the agent to end a job',
      );
    }
    await this.finish(job, state, {
      code: 'STEWARD_AGENT_ENDED_JOB',
      message: `agent ${this.config.id} ended the job: ${why}${unresponsive ? '; the executor did not answer and was killed' : ''}`,
    });
  }

  /** Stops the job's enforcement timer and removes its cgroup with anything in it (in the background). */
  private dropJobResources(job: ActiveJob): void {
    if (job.enforcer) clearTimeout(job.enforcer);
    void job.cgroup?.remove().catch(() => 0);
  }

  /** Notes the directories of a job whose executor the agent killed, for the user's next executor. */
  private leftBehind(job: ActiveJob): void {
    const user = job.executor?.account.name;
    if (!user || this.config.keepJobDirs) return;
    let names = this.leftDirs.get(user);
    if (!names) {
      if (this.leftDirs.size >= 10_000) return;
      names = new Set();
      this.leftDirs.set(user, names);
    }
    if (names.size < 1000) names.add(`${job.offer.jobId}-${job.offer.attempt}`);
  }

  // --- control -------------------------------------------------------------------------------------------

  private async onControl(delivery: Delivery<unknown>): Promise<void> {
    const parsed = Control.safeParse(delivery.body);
    if (!parsed.success) {
      await delivery.deadLetter('STEWARD_MESSAGE_INVALID: malformed control message');
      return;
    }
    const control = parsed.data;
    if (control.type === 'drain' || control.type === 'resume') {
      const draining = control.type === 'drain';
      if (draining !== this.draining) {
        this.draining = draining;
        this.log.info(
          { running: this.active.size, parked: this.parked.size },
          draining
            ? 'drained: taking no new jobs; the ones taken run to their end'
            : 'resumed: taking jobs again',
        );
        if (draining) await this.handBackParked();
        await this.updatePrefetch();
        // The registry shows the change at once, not at the next heartbeat.
        await this.sendHeartbeat();
      }
    } else {
      const job = this.active.get(`${control.jobId}:${control.attempt}`);
      if (job) this.requestCancel(job);
    }
    await delivery.ack();
  }

  // --- events --------------------------------------------------------------------------------------------

  private async emitState(job: ActiveJob, state: JobState, error?: ErrorInfo): Promise<void> {
    await this.publishJobEvent({
      v: PROTOCOL_VERSION,
      type: 'state',
      jobId: job.offer.jobId,
      attempt: job.offer.attempt,
      seq: ++job.seq,
      time: Date.now(),
      agentId: this.config.id,
      state,
      ...(error ? { error } : {}),
      ...(job.identity ? { executor: job.identity } : {}),
    });
  }

  private async emitStep(job: ActiveJob, step: StepEvent): Promise<void> {
    await this.publishJobEvent({
      v: PROTOCOL_VERSION,
      type: 'step',
      jobId: job.offer.jobId,
      attempt: job.offer.attempt,
      seq: ++job.seq,
      time: Date.now(),
      agentId: this.config.id,
      step,
    });
  }

  /** Job events go through the batcher: those ready together leave in one message. */
  private async publishJobEvent(event: JobEvent): Promise<void> {
    try {
      await this.events.send(event);
    } catch (error) {
      this.log.error({ err: error, type: event.type }, 'could not publish event');
    }
  }

  /** Through the bus's heartbeats queue: no backlog of job events delays it. */
  private async sendHeartbeat(): Promise<void> {
    const heartbeat: Heartbeat = {
      v: PROTOCOL_VERSION,
      type: 'heartbeat',
      agentId: this.config.id,
      time: Date.now(),
      labels: [...this.config.labels],
      // Slots not in use (a drained agent reports `draining` and still shows how many jobs it has left).
      capacity: { slots: this.config.slots, free: Math.max(0, this.config.slots - this.active.size) },
      executors: this.pool.executors(),
      isolation: this.isolation,
      draining: this.draining,
    };
    try {
      await this.bus.publishHeartbeat(heartbeat);
    } catch (error) {
      this.log.error({ err: error }, 'could not publish heartbeat');
    }
  }

  /**
   * Prefetch = free slots plus the offer deliveries this agent still holds for its loading jobs: the bus
   * counts those held deliveries against the prefetch already, and counting them as busy slots too would
   * let only half the free slots load at once.
   */
  private wantedPrefetch(): number {
    if (this.draining || this.stopped) return 0;
    let holding = 0;
    for (const job of this.active.values()) if (job.delivery) holding += 1;
    return this.freeSlots + holding;
  }

  /**
   * A larger prefetch applies at once. A smaller one waits a moment: every job lowers it when it loads and
   * raises it again when it ends, and each change costs a re-consume (three broker round trips); for short
   * jobs the two cancel out before the pause is over. An offer that arrives meanwhile with no room is parked
   * and placed when the next job ends, as any offer over capacity is.
   */
  private async updatePrefetch(): Promise<void> {
    const want = this.wantedPrefetch();
    if (want > 0 && want < this.prefetchApplied) {
      this.prefetchShrink ??= setTimeout(() => {
        this.prefetchShrink = undefined;
        void this.applyPrefetch(this.wantedPrefetch());
      }, PREFETCH_SHRINK_DELAY_MS);
      this.prefetchShrink.unref();
      return;
    }
    await this.applyPrefetch(want);
  }

  private async applyPrefetch(prefetch: number): Promise<void> {
    if (this.prefetchShrink) clearTimeout(this.prefetchShrink);
    this.prefetchShrink = undefined;
    this.prefetchApplied = prefetch;
    await this.offers?.setPrefetch(prefetch);
  }

  private findJob(jobId: string, executor: UserExecutor): ActiveJob | undefined {
    for (const job of this.active.values())
      if (job.offer.jobId === jobId && job.executor === executor) return job;
    return undefined;
  }
}

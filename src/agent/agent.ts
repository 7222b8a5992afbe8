/**
 * The agent: one per executor machine, the only bus client there. It takes offers, decides accept/reject,
 * resolves the OS account, prepares directories, hands the job to that user's executor over its pipe, and
 * relays events. It never parses workflows or runs user code itself.
 *
 * Invariant: an offer is acked only after the executor reports the workflow loaded. Before that, any crash
 * (agent or executor) must lead to redelivery, so the job is never lost.
 */
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
import { planCleanup, runCleanup } from './cleanup.js';
import { detectCgroups, removeCgroupParents, type CgroupSupport } from './cgroups.js';
import { ExecutorPool, outOfMemory, type UserExecutor } from './pool.js';
import { UserLogs } from './user-logs.js';
import { ensureHome, prepareUserDirs, prepareWorkspaceRoot } from './workspaces.js';

export interface AgentOptions {
  config: CompiledAgentConfig;
  bus: Bus;
  /** Public keys (PEM) whose signatures on offers this agent trusts. */
  publicKeys: readonly string[];
  logger: Logger;
}

interface ActiveJob {
  offer: JobOffer;
  delivery: Delivery<unknown>;
  seq: number;
  acked: boolean;
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
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

const REJECT_PAUSE_MS = [150, 450] as const;
/** An offer that does not fit is held for at most this many pauses (more for offers that came back often). */
const MAX_HOLD_ROUNDS = 8;

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
  private offers: Subscription | undefined;
  private control: Subscription | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private housekeeping: NodeJS.Timeout | undefined;
  private draining = false;
  /** Offers held for a pause because they did not fit, woken when a job ends (see waitForRoom). */
  private readonly roomWaiters = new Set<{ deliveryCount: number; wake: () => void }>();
  private stopped = false;

  constructor(options: AgentOptions) {
    this.config = options.config;
    this.bus = options.bus;
    this.log = options.logger.child({ component: 'agent', agentId: options.config.id });
    this.verifier = createOfferVerifier(options.publicKeys);
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
            cause: exit.cause,
            code: exit.code,
            signal: exit.signal,
            jobs,
          },
          'executor exited',
        );
        for (const jobId of jobs) this.executorLost(jobId, exit.cause);
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
    await prepareWorkspaceRoot(this.config.workspaceRoot, this.isolation === 'per-user');
    this.cgroupSupport = await detectCgroups(this.config.id);
    this.pool.setCgroups(this.cgroupSupport);
    await this.pool.prime();
    this.control = await this.bus.consumeControl(this.config.id, (delivery) => this.onControl(delivery));
    this.offers = await this.bus.consumeOffers((delivery) => this.onOffer(delivery), {
      prefetch: this.freeSlots,
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

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    // Offers held for room go back now, not when their pause ends.
    for (const waiter of [...this.roomWaiters]) waiter.wake();
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.housekeeping) clearInterval(this.housekeeping);
    await this.offers?.cancel();
    await this.control?.cancel();
    await this.pool.close();
    await removeCgroupParents(this.cgroupSupport);
    this.userLogs.close();
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
    if (this.active.has(key) || this.taken.has(key)) {
      await delivery.deadLetter(
        `STEWARD_OFFER_REPLAYED: job ${offer.jobId} attempt ${offer.attempt} was already taken by agent ${this.config.id}`,
      );
      return;
    }
    const missing = offer.labels.filter((label) => !this.config.labels.includes(label));
    if (missing.length > 0) {
      // Not for us: hand it back after a jittered pause so it goes round to other agents.
      const [low, high] = REJECT_PAUSE_MS;
      await delivery.requeue(low + Math.random() * (high - low));
      return;
    }
    let verdict = this.roomFor(offer);
    if (verdict) {
      // The offer is held for the pause anyway: if one of this machine's jobs ends meanwhile and makes room,
      // it is taken then instead of going round the queue again (each round counts towards the delivery
      // limit, and a freed slot would otherwise go to whichever offer arrives next).
      // An offer that came back often is held longer (and served first, see waitForRoom): during a burst
      // of one user's jobs over the per-user cap it would otherwise use up its delivery limit going round.
      const [low, high] = REJECT_PAUSE_MS;
      const rounds = Math.min(delivery.deliveryCount, MAX_HOLD_ROUNDS);
      verdict = await this.waitForRoom(
        offer,
        (low + Math.random() * (high - low)) * rounds,
        delivery.deliveryCount,
      );
      // Checked again with nothing awaited until the job is recorded as active below: other offers woken
      // by the same job end must not take the same room.
      verdict ??= this.roomFor(offer);
      if (verdict || this.active.has(key) || this.stopped) {
        this.log.debug(
          { jobId: offer.jobId, user: offer.user, reason: verdict ?? 'agent stopping' },
          'offer does not fit, handing it back',
        );
        await delivery.requeue(0);
        return;
      }
    }
    // Each delivery of an offer numbers its events in its own range: when an agent died after reporting and
    // the offer went to another agent, the new agent's events must not look like duplicates of the old ones.
    const seq = (delivery.deliveryCount - 1) * 1_000_000;
    const job: ActiveJob = {
      offer,
      delivery,
      seq,
      acked: false,
      cancelRequested: false,
      oomKillsBefore: 0,
      receivedAt,
      coldStart: false,
      firstStepLogged: false,
    };
    this.active.set(key, job);
    this.remember(key);
    await this.updatePrefetch();
    // Placing does not wait for the broker's confirm of `loading`: it is published now, on the channel every
    // later event of the job goes out on, so the server still sees it first; and whatever was confirmed, the
    // offer stays unacked until `loaded`, so a crash before that leads to redelivery.
    void this.emitState(job, 'loading');
    try {
      await this.place(job);
    } catch (error) {
      const failure = coerceError(error, 'STEWARD_EXECUTOR_START_FAILED');
      this.log.warn({ jobId: offer.jobId, code: failure.code }, failure.message);
      // Identity refusals and start failures end the job with a clear reason: no retry loop.
      await this.finish(job, 'failed', { code: failure.code, message: failure.message });
    }
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

  /** Why the offer cannot be placed here now (no free slot, or see `fits`), or undefined. */
  private roomFor(offer: JobOffer): string | undefined {
    return this.freeSlots === 0 ? 'no free slot' : this.fits(offer);
  }

  /**
   * Waits up to `ms` for the offer to fit, re-checking whenever a job ends here. Resolves undefined once it
   * fits, or the reason it still does not.
   */
  private async waitForRoom(offer: JobOffer, ms: number, deliveryCount: number): Promise<string | undefined> {
    const deadline = performance.now() + ms;
    for (;;) {
      const left = deadline - performance.now();
      if (left <= 0) return this.roomFor(offer);
      await new Promise<void>((resolve) => {
        const waiter = {
          deliveryCount,
          wake: () => {
            clearTimeout(timer);
            this.roomWaiters.delete(waiter);
            resolve();
          },
        };
        const timer = setTimeout(waiter.wake, left);
        this.roomWaiters.add(waiter);
      });
      if (this.stopped) return 'agent stopping';
      const verdict = this.roomFor(offer);
      if (!verdict) return undefined;
    }
  }

  private async place(job: ActiveJob): Promise<void> {
    const account: OsAccount =
      this.isolation === 'per-user'
        ? await resolveAccount(job.offer.user, this.policy, this.config.id, (name) => this.accounts.get(name))
        : currentAccount();
    const t1 = performance.now();
    // The home directory and the workspace are independent: prepared side by side.
    let homeDone = t1;
    const [, dirs] = await Promise.all([
      (this.isolation === 'per-user' ? ensureHome(account) : Promise.resolve()).then(() => {
        homeDone = performance.now();
      }),
      prepareUserDirs(this.config.workspaceRoot, account, this.isolation === 'per-user', {
        auditorsGroup: this.config.auditorsGroup,
      }),
    ]);
    const t3 = performance.now();
    const t2 = homeDone;
    job.coldStart = !this.pool.hasExecutorFor(account.name);
    const executor = await this.pool.acquire(account, dirs);
    const t4 = performance.now();
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
    job.oomKillsBefore = (await executor.cgroup?.oomKills()) ?? 0;
    this.pool.jobStarted(executor, job.offer.jobId);
    executor.process.send({
      type: 'job',
      jobId: job.offer.jobId,
      attempt: job.offer.attempt,
      serverUrl: job.offer.serverUrl,
      jobToken: job.offer.jobToken,
      params: job.offer.params,
      ...(job.offer.limits.timeoutMs ? { timeoutMs: job.offer.limits.timeoutMs } : {}),
    });
    job.sentAt = performance.now();
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
        void this.finish(job, message.state, message.error);
        return;
    }
  }

  private async loaded(job: ActiveJob): Promise<void> {
    if (job.timing && job.sentAt !== undefined) job.timing.load = round(performance.now() - job.sentAt);
    // `running` is published before the ack, so the broker has it before anything can make the offer
    // go elsewhere; the final state, published later on the same channel, can never overtake it.
    const running = this.emitState(job, 'running');
    if (!job.acked) {
      job.acked = true;
      await job.delivery.ack();
    }
    await running;
  }

  /** The executor died under a job: before the ack the offer goes back for redelivery; after it, the job failed. */
  private executorLost(jobId: string, cause: string): void {
    for (const [key, job] of this.active) {
      if (job.offer.jobId !== jobId) continue;
      if (!job.acked) {
        this.active.delete(key);
        this.taken.delete(key);
        void job.delivery.requeue(0).then(() => this.updatePrefetch());
      } else {
        const oom = cause.startsWith('out of memory');
        void this.finish(job, 'failed', {
          code: oom ? 'STEWARD_OUT_OF_MEMORY' : 'STEWARD_EXECUTOR_CRASHED',
          message: oom
            ? `${cause}: the executor for ${job.identity?.osUser ?? job.offer.user} was killed by the kernel`
            : `executor for ${job.identity?.osUser ?? job.offer.user} ended during the job: ${cause}`,
        });
      }
    }
  }

  private async finish(job: ActiveJob, state: JobState, error?: ErrorInfo): Promise<void> {
    const key = `${job.offer.jobId}:${job.offer.attempt}`;
    if (this.active.get(key) !== job) return;
    this.active.delete(key);
    const cgroup = job.executor?.cgroup;
    if (state === 'failed' && error?.code !== 'STEWARD_OUT_OF_MEMORY' && cgroup) {
      // A step the kernel killed for the memory limit looks like any killed process to the engine; the
      // cgroup's own counter says what happened.
      if ((await cgroup.oomKills()) > job.oomKillsBefore) {
        error = {
          code: 'STEWARD_OUT_OF_MEMORY',
          message: `${outOfMemory(cgroup.limits)}${error ? `: ${error.message}` : ''}`,
        };
      }
    }
    if (job.executor) this.pool.jobEnded(job.executor, job.offer.jobId);
    // Most-delivered first: they resume in this order, and the first that fits takes the room.
    const waiters = [...this.roomWaiters].sort((a, b) => b.deliveryCount - a.deliveryCount);
    for (const waiter of waiters) waiter.wake();
    // Final state first, then ack: if we die in between, a redelivered offer finds the job ended.
    await this.emitState(job, state, error);
    if (!job.acked) {
      job.acked = true;
      await job.delivery.ack();
    }
    await this.updatePrefetch();
  }

  // --- control -------------------------------------------------------------------------------------------

  private async onControl(delivery: Delivery<unknown>): Promise<void> {
    const parsed = Control.safeParse(delivery.body);
    if (!parsed.success) {
      await delivery.deadLetter('STEWARD_MESSAGE_INVALID: malformed control message');
      return;
    }
    const control = parsed.data;
    if (control.type === 'drain') {
      this.draining = true;
      await this.updatePrefetch();
    } else {
      const job = this.active.get(`${control.jobId}:${control.attempt}`);
      if (job) {
        job.cancelRequested = true;
        job.executor?.process.send({ type: 'cancel', jobId: control.jobId });
      }
    }
    await delivery.ack();
  }

  // --- events --------------------------------------------------------------------------------------------

  private async emitState(job: ActiveJob, state: JobState, error?: ErrorInfo): Promise<void> {
    await this.publish({
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
    await this.publish({
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

  private async publish(message: Parameters<Bus['publishEvent']>[0]): Promise<void> {
    try {
      await this.bus.publishEvent(message);
    } catch (error) {
      this.log.error({ err: error, type: message.type }, 'could not publish event');
    }
  }

  private async sendHeartbeat(): Promise<void> {
    await this.publish({
      v: PROTOCOL_VERSION,
      type: 'heartbeat',
      agentId: this.config.id,
      time: Date.now(),
      labels: [...this.config.labels],
      capacity: { slots: this.config.slots, free: this.freeSlots },
      executors: this.pool.executors(),
      isolation: this.isolation,
    });
  }

  private async updatePrefetch(): Promise<void> {
    await this.offers?.setPrefetch(this.freeSlots);
  }

  private findJob(jobId: string, executor: UserExecutor): ActiveJob | undefined {
    for (const job of this.active.values())
      if (job.offer.jobId === jobId && job.executor === executor) return job;
    return undefined;
  }

  private remember(key: string): void {
    this.taken.add(key);
    if (this.taken.size > 100_000) {
      const oldest = this.taken.values().next().value;
      if (oldest !== undefined) this.taken.delete(oldest);
    }
  }
}

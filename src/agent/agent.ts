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
 *
 * Each offer's life here is one `OfferState` in an `OfferTable` (offer-state.ts); the decisions are pure
 * modules (placement, capacity, parking, prefetch); the pool, the machine and the clock are given
 * (collaborators.ts, and wiring.ts for the real ones).
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Bus, Delivery, Subscription } from '../bus/index.js';
import type { CompiledAgentConfig } from '../config/index.js';
import { Control, coerceError, type JobOffer, type OfferVerifier } from '../protocol/index.js';
import { capacityVerdict, executorShortfall, type CapacityBudget } from './capacity.js';
import type { CgroupSupport } from './cgroups.js';
import {
  systemClock,
  type AgentClock,
  type AgentDeps,
  type AgentHost,
  type AgentPool,
} from './collaborators.js';
import { DaskWorkerHost } from './dask-workers.js';
import { JobRunner } from './job-runner.js';
import { Launcher } from './launcher.js';
import { OfferTable, offerKey, type ActiveJob } from './offer-state.js';
import { HOLD_PAUSE_MS, REJECT_PAUSE_MS, jitteredPause, parkPause, placementOrder } from './parking.js';
import { decideOffer } from './placement.js';
import { PREFETCH_SHRINK_DELAY_MS, freeSlots, prefetchChange, wantedPrefetch } from './prefetch.js';
import { Reporter } from './reporter.js';
import { logResourcesOnSignal } from './resources.js';

export class Agent {
  readonly isolation: 'per-user' | 'single-user';
  /** Names this run's cgroups: cgroups of any other instance of this id are a dead run's (see cgroups.ts). */
  readonly instance = randomBytes(4).toString('hex');
  private readonly config: CompiledAgentConfig;
  private readonly bus: Bus;
  private readonly log: Logger;
  private readonly verifier: OfferVerifier;
  private readonly host: AgentHost;
  private readonly pool: AgentPool;
  private readonly clock: AgentClock;
  private readonly report: Reporter;
  private readonly jobs: JobRunner;
  /** Dask workers placed here by worker offers (dask-workers.ts); they share the agent's slots. */
  private readonly daskWorkers: DaskWorkerHost;
  /** Every offer this agent parks, runs or ran (bounded), in its one state. */
  private readonly table = new OfferTable();
  private readonly deliveryLimit: number;
  private readonly budget: CapacityBudget;
  private cgroupSupport: CgroupSupport = { version: 'none', detail: 'not detected yet' };
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
  private lock: { release(): Promise<void> } | undefined;
  private readonly selfReport: AgentDeps['selfReport'];
  private stopResourceLog: (() => void) | undefined;

  constructor(deps: AgentDeps) {
    this.config = deps.config;
    this.bus = deps.bus;
    this.log = deps.logger.child({ component: 'agent', agentId: deps.config.id });
    this.verifier = deps.verifier;
    this.host = deps.host;
    this.isolation = deps.host.isolation;
    this.clock = deps.clock ?? systemClock;
    this.selfReport = deps.selfReport;
    this.deliveryLimit = this.bus.deliveryLimit;
    this.budget = { ...this.config.capacity, executorMemoryBytes: this.config.limits.memoryBytes };
    this.report = new Reporter(this.config.id, this.bus, this.clock, this.log);
    this.pool = deps.pool({
      onOutput: (owner, pid, stream, line) => {
        if (owner) this.host.userLog(owner, pid, stream, line);
        else this.log.info({ event: 'executor.output', pid, stream }, line);
      },
      onMessage: (executor, message) => this.jobs.onExecutorMessage(executor, message),
      onExit: (executor, exit, jobs) => {
        this.log.info(
          {
            event: 'executor.exited',
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
        for (const jobId of jobs) this.jobs.executorLost(jobId, exit);
      },
      onSpareReady: (pid, ready) =>
        this.log.info({ event: 'executor.spare-ready', pid, ready }, 'spare executor ready'),
      onEvicted: (executor, residentBytes) =>
        this.log.info(
          {
            event: 'executor.evicted',
            user: executor.account.name,
            pid: executor.pid,
            residentMiB: Math.round(residentBytes / 1024 ** 2),
          },
          'stopping an idle executor: the idle budget needs its memory',
        ),
    });
    this.jobs = new JobRunner({
      config: this.config,
      log: this.log,
      clock: this.clock,
      host: this.host,
      pool: this.pool,
      table: this.table,
      report: this.report,
      launcher: new Launcher(this.host, this.pool, this.clock, this.config.keepJobDirs),
      slots: { updatePrefetch: () => this.updatePrefetch(), placeParked: () => this.placeParked() },
    });
    this.daskWorkers = new DaskWorkerHost({
      ...deps,
      log: this.log,
      cgroups: () => this.cgroupSupport,
      load: () => ({
        freeSlots: freeSlots({ open: this.open, slots: this.config.slots, jobs: this.table.jobs }),
        executors: this.runningExecutors(),
        open: this.open,
      }),
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
    const jobs = this.table.jobs + this.daskWorkers.slotsTaken;
    return freeSlots({ open: this.open, slots: this.config.slots, jobs });
  }

  /** Whether the agent takes new jobs: neither drained nor stopped. */
  private get open(): boolean {
    return !this.draining && !this.stopped;
  }

  async start(): Promise<void> {
    // First: a second agent with this id must not touch anything (cgroups, queues) of the first.
    this.lock = await this.host.lock();
    try {
      await this.startHoldingLock();
    } catch (error) {
      await this.lock.release();
      throw error;
    }
  }

  private async startHoldingLock(): Promise<void> {
    await this.host.prepareWorkspaceRoot();
    this.cgroupSupport = await this.host.detectCgroups(this.instance);
    this.pool.setCgroups(this.cgroupSupport);
    await this.pool.prime();
    this.control = await this.bus.consumeControl(this.config.id, (delivery) => this.onControl(delivery));
    this.prefetchApplied = this.freeSlots;
    this.offers = await this.bus.consumeOffers((delivery) => this.onOffer(delivery), {
      prefetch: this.prefetchApplied,
    });
    await this.daskWorkers.start();
    this.heartbeat = setInterval(() => void this.sendHeartbeat(), this.config.heartbeatIntervalMs);
    this.heartbeat.unref();
    this.housekeeping = setInterval(
      () => void this.houseKeep(),
      Math.min(this.config.cleanup?.everyMs ?? 86_400_000, 86_400_000),
    );
    this.housekeeping.unref();
    this.stopResourceLog = logResourcesOnSignal(this.pool, this.log);
    void this.houseKeep();
    await this.sendHeartbeat();
    this.log.info(
      {
        event: 'agent.started',
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
    if (graceMs > 0 && this.table.jobs > 0 && !options.interrupt?.aborted)
      await this.drainBeforeStop(graceMs, options.interrupt);
    this.stopped = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.housekeeping) clearInterval(this.housekeeping);
    if (this.prefetchShrink) clearTimeout(this.prefetchShrink);
    this.stopResourceLog?.();
    await this.handBackParked();
    await this.offers?.cancel();
    await this.control?.cancel();
    await this.daskWorkers.stop();
    await this.pool.close();
    await this.host.removeCgroupParents(this.cgroupSupport);
    this.host.closeLogs();
    await this.lock?.release();
  }

  private async drainBeforeStop(graceMs: number, interrupt: AbortSignal | undefined): Promise<void> {
    this.draining = true;
    this.log.info(
      { event: 'agent.stopping', running: this.table.jobs, graceMs },
      'stopping: taking no new jobs; waiting for the running ones to end (a second signal stops at once)',
    );
    await this.handBackParked();
    await this.updatePrefetch();
    await this.sendHeartbeat().catch(() => undefined);
    const deadline = Date.now() + graceMs;
    while (this.table.jobs > 0 && !interrupt?.aborted) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      await new Promise((resolve) => setTimeout(resolve, Math.min(200, left)));
    }
    if (this.table.jobs > 0)
      this.log.warn(
        {
          event: 'agent.stopped-with-jobs',
          running: this.table.jobs,
          interrupted: interrupt?.aborted ?? false,
        },
        'stopping with jobs still running: they end with their executors',
      );
  }

  /** Log retention, and the scheduled workspace cleanup when configured. Never throws. */
  private async houseKeep(): Promise<void> {
    try {
      const { prunedLogs, removed, failed } = await this.host.houseKeep();
      for (const { path, error } of failed)
        this.log.warn({ event: 'cleanup.failed', path, error }, 'cleanup failed');
      if (prunedLogs + removed + failed.length > 0)
        this.log.info(
          { event: 'housekeeping.done', prunedLogs, removed, failed: failed.length },
          'housekeeping',
        );
    } catch (error) {
      this.log.error({ event: 'housekeeping.failed', err: error }, 'housekeeping failed');
    }
  }

  // --- offers --------------------------------------------------------------------------------------------

  private async onOffer(delivery: Delivery<unknown>): Promise<void> {
    const receivedAt = this.clock.monotonic();
    let offer: JobOffer;
    try {
      offer = this.verifier.verify(delivery.body, this.clock.now());
    } catch (error) {
      const reason = coerceError(error, 'STEWARD_MESSAGE_INVALID');
      this.log.warn(
        { event: 'offer.rejected', code: reason.code, deliveryCount: delivery.deliveryCount },
        `dead-lettering offer: ${reason.message}`,
      );
      await delivery.deadLetter(`${reason.code}: ${reason.message}`);
      return;
    }
    this.selfReport?.learnUrl(offer.serverUrl);
    const key = offerKey(offer);
    const older = this.olderAttempts(offer);
    const action = decideOffer({
      // A redelivery of a job this agent took (its first delivery was taken back in a drop, or its ack was
      // lost with the connection) is settled, never run again here.
      redelivery: this.table.isRedelivery(key, delivery.deliveryCount),
      known: this.table.get(key) !== undefined,
      olderAttemptHeld: older.length > 0,
      missingLabels: offer.labels.filter((label) => !this.config.labels.includes(label)),
      open: this.open,
      freeSlots: this.freeSlots,
      room: () => this.fits(offer),
    });
    switch (action.kind) {
      case 'redelivered':
        return this.redelivered(key, delivery);
      case 'replayed':
        return delivery.deadLetter(
          `STEWARD_OFFER_REPLAYED: job ${offer.jobId} attempt ${offer.attempt} was already taken by agent ${this.config.id}`,
        );
      case 'older-attempt-held':
        // The newer attempt, signed by the server, proves the older one was given up: stop it, and hand the
        // new offer back meanwhile so another agent can take it (or this one, once the old attempt ended).
        this.stopOlderAttempts(offer, older);
        return delivery.requeue(jitteredPause(HOLD_PAUSE_MS));
      case 'not-for-us':
        // Not for us (or never again): hand it back after a jittered pause so it goes round to other agents.
        return delivery.requeue(jitteredPause(REJECT_PAUSE_MS));
      case 'park':
        return this.park(key, offer, delivery, receivedAt, action.reason);
      case 'accept':
        return this.jobs.accept(key, offer, delivery, receivedAt);
    }
  }

  /**
   * The broker delivered again an offer whose first delivery it took back while this agent loaded the job:
   * the job is this agent's. Ack the new delivery once the job has loaded (or ended); until then hold it.
   */
  private async redelivered(key: string, delivery: Delivery<unknown>): Promise<void> {
    const job = this.table.activeJob(key);
    this.log.info(
      {
        event: 'offer.redelivered',
        jobId: key.split(':')[0],
        deliveryCount: delivery.deliveryCount,
        state: job ? 'active' : 'ended',
      },
      'offer redelivered after a broker drop; the job is already ours',
    );
    const holder = this.table.redelivered(key, delivery);
    if (holder) {
      this.jobs.watchRevocation(holder, delivery);
      return;
    }
    await delivery.ack();
    if (!job) await this.updatePrefetch();
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
    const pause = parkPause({
      deadline: offer.deadline,
      now: this.clock.now(),
      deliveryLimit: this.deliveryLimit,
      deliveryCount: delivery.deliveryCount,
    });
    const timer = setTimeout(() => {
      if (!this.table.unpark(key, delivery)) return;
      void delivery.requeue(0).then(() => this.updatePrefetch());
    }, pause);
    timer.unref();
    this.table.park(key, { offer, delivery, receivedAt, timer });
    delivery.onRevoked(() => {
      if (this.table.unpark(key, delivery)) clearTimeout(timer);
    });
    this.log.debug(
      { event: 'offer.held', jobId: offer.jobId, user: offer.user, reason, handBackMs: Math.round(pause) },
      'no room for the offer now; holding it until a job ends',
    );
  }

  /**
   * A job ended: place parked offers that fit now, most-delivered first (an offer that came back often is
   * closest to its delivery limit), then oldest first.
   */
  private async placeParked(): Promise<void> {
    const parked = [...this.table.parked()].map((entry) => ({
      ...entry,
      deliveryCount: entry.delivery.deliveryCount,
    }));
    for (const entry of placementOrder(parked)) {
      if (this.freeSlots === 0) return;
      const current = this.table.get(entry.key);
      if (current?.kind !== 'parked' || current.delivery !== entry.delivery || this.fits(entry.offer))
        continue;
      this.table.unpark(entry.key, entry.delivery);
      clearTimeout(entry.timer);
      await this.jobs.accept(entry.key, entry.offer, entry.delivery, entry.receivedAt);
    }
  }

  private async handBackParked(): Promise<void> {
    const parked = [...this.table.parked()];
    for (const { key, delivery, timer } of parked) {
      this.table.unpark(key, delivery);
      clearTimeout(timer);
    }
    await Promise.all(parked.map(({ delivery }) => delivery.requeue(0)));
  }

  /** The older attempts of the offer's job held here (two attempts of one job never run side by side). */
  private olderAttempts(offer: JobOffer): ActiveJob[] {
    return [...this.table.activeJobs()].filter(
      (job) => job.offer.jobId === offer.jobId && job.offer.attempt < offer.attempt,
    );
  }

  private stopOlderAttempts(offer: JobOffer, older: readonly ActiveJob[]): void {
    for (const job of older) {
      if (job.cancelRequested) continue;
      this.log.warn(
        {
          event: 'job.older-attempt-stopped',
          jobId: offer.jobId,
          heldAttempt: job.offer.attempt,
          newAttempt: offer.attempt,
        },
        'a newer attempt of a job held here arrived; stopping the older attempt',
      );
      this.jobs.requestCancel(job);
    }
  }

  /**
   * Whether the offer fits this machine's budget now (see capacity.ts): the user's cap, and the core tokens
   * and memory of the executors running jobs. Idle executors hold none of it (the pool stops them when their
   * memory is needed). Returns the reason it does not fit, or undefined.
   */
  private fits(offer: JobOffer): string | undefined {
    const verdict = capacityVerdict({
      user: offer.user,
      jobs: [...this.table.activeJobs()].map((job) => ({ user: job.offer.user })),
      budget: this.budget,
      perUser: this.isolation === 'per-user',
      osNameOf: (user) => this.host.osNameOf(user),
    });
    if (verdict.kind === 'fits') return undefined;
    if (verdict.kind === 'full') return verdict.reason;
    return executorShortfall(verdict.running, this.budget);
  }

  /** Executors running jobs here: one per OS account with an active job (idle ones reserve nothing). */
  private runningExecutors(): number {
    const names = new Set<string>();
    for (const job of this.table.activeJobs())
      names.add(this.host.osNameOf(job.offer.user) ?? job.offer.user);
    return names.size;
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
      await this.setDraining(control.type === 'drain');
    } else {
      const job = this.table.activeJob(offerKey(control));
      if (job) this.jobs.requestCancel(job);
    }
    await delivery.ack();
  }

  private async setDraining(draining: boolean): Promise<void> {
    if (draining === this.draining) return;
    this.draining = draining;
    this.log.info(
      {
        event: draining ? 'agent.drained' : 'agent.resumed',
        running: this.table.jobs,
        parked: this.table.parkedOffers,
      },
      draining
        ? 'drained: taking no new jobs; the ones taken run to their end'
        : 'resumed: taking jobs again',
    );
    if (draining) await this.handBackParked();
    await this.updatePrefetch();
    // The registry shows the change at once, not at the next heartbeat.
    await this.sendHeartbeat();
  }

  // --- heartbeat and prefetch ----------------------------------------------------------------------------

  private async sendHeartbeat(): Promise<void> {
    await this.report.heartbeat({
      labels: [...this.config.labels],
      // Slots not in use (a drained agent reports `draining` and still shows how many jobs it has left).
      capacity: { slots: this.config.slots, free: Math.max(0, this.config.slots - this.table.jobs) },
      executors: this.pool.executors(),
      isolation: this.isolation,
      draining: this.draining,
      ...this.selfReport?.report(),
    });
  }

  /** See prefetch.ts: free slots plus the offer deliveries held for loading jobs; decreases wait a moment. */
  private async updatePrefetch(): Promise<void> {
    const change = prefetchChange(this.wantedPrefetch(), this.prefetchApplied);
    if (change.kind === 'shrink-later') {
      this.prefetchShrink ??= setTimeout(() => {
        this.prefetchShrink = undefined;
        void this.applyPrefetch(this.wantedPrefetch());
      }, PREFETCH_SHRINK_DELAY_MS);
      this.prefetchShrink.unref();
      return;
    }
    await this.applyPrefetch(change.prefetch);
  }

  private wantedPrefetch(): number {
    let holding = 0;
    for (const job of this.table.activeJobs()) if (job.hold.kind === 'held') holding += 1;
    return wantedPrefetch({ open: this.open, slots: this.config.slots, jobs: this.table.jobs, holding });
  }

  private async applyPrefetch(prefetch: number): Promise<void> {
    if (this.prefetchShrink) clearTimeout(this.prefetchShrink);
    this.prefetchShrink = undefined;
    this.prefetchApplied = prefetch;
    await this.offers?.setPrefetch(prefetch);
  }
}

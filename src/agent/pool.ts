/**
 * The executor pool: exactly one executor per OS user (keyed by uid, never by a process-name scan), reused
 * while warm, stopped after the idle timeout; plus `warmExecutors` spares — pre-started executors with no
 * user yet, each of which becomes one user's executor and never anyone else's. A spare taken is replaced at
 * once, so the next new user (or one whose executor was stopped) finds one ready.
 *
 * Idle executors stay resident as long as their memory is not needed: each costs its measured resident
 * memory against the idle budget (spares included), and the least recently used are stopped only when that
 * budget or the machine's MemAvailable floor needs it (see `idleEvictions` in capacity.ts).
 */
import type { ExecutorIdentity, ExecutorInfo, ExecutorToAgent } from '../protocol/index.js';
import type { OsAccount } from './accounts.js';
import { idleEvictions, pinnedForJob, spareFootprint } from './capacity.js';
import { procMemory, residentBytes, type MemoryProbe } from './memory.js';
import { ExecutorCgroup, formatBytes, type CgroupSupport, type ExecutorLimits } from './cgroups.js';
import { ExecutorProcess, type ExitInfo, type SpawnOptions } from './spawner.js';
import type { UserDirs } from './workspaces.js';

/**
 * The executor died while taking on a user's identity (killed, or out of memory), as opposed to refusing
 * it: a crash like one while loading, not a verdict on the job.
 */
export class ExecutorExitedError extends Error {
  constructor(
    message: string,
    readonly exit: ExitInfo,
  ) {
    super(message);
    this.name = 'ExecutorExitedError';
  }
}
export interface PoolOptions extends Omit<SpawnOptions, 'onOutput'> {
  /** Executor diagnostics, with the OS user once the executor has one. */
  onOutput: (
    owner: string | undefined,
    pid: number | undefined,
    stream: 'stdout' | 'stderr',
    line: string,
  ) => void;
  /** Spares kept ready (`warmExecutors`). */
  warmExecutors: number;
  idleTimeoutMs: number;
  /** The idle budget: measured memory of idle executors and spares, and MemAvailable's floor. */
  idleBudget: { idleMemoryBytes: number; minAvailableBytes: number };
  /** How memory is measured; /proc by default (tests hand in their own). */
  memory?: MemoryProbe;
  duckdb: { memoryLimit: string; threads: number };
  keepJobDirs: boolean;
  /** What the executor's steps need of the agent's config: the python interpreter, the Dask scheduler host. */
  steps?: { python: string; daskSchedulerHost: string };
  /** Where executor cgroups go (`none`: limits recorded but not enforced). */
  cgroups: CgroupSupport;
  limits: ExecutorLimits;
  /** Called for every message from a user's executor. */
  onMessage: (executor: UserExecutor, message: ExecutorToAgent) => void;
  /** Called when a user's executor exits, with the jobs it still had. */
  onExit: (executor: UserExecutor, exit: ExitInfo, jobs: string[]) => void;
  /** Called when a spare is ready, with how many are ready now. */
  onSpareReady?: (pid: number, ready: number) => void;
  /** Called when an idle executor is stopped for the idle budget, with its last measured memory. */
  onEvicted?: (executor: UserExecutor, residentBytes: number) => void;
  /**
   * The executor → agent ping on the pipe: the executor sends one every `intervalMs`; one silent for
   * `intervalMs × misses` is taken as stopped or hung and killed (see `ExecutorProcess.kill`).
   */
  heartbeat: { intervalMs: number; misses: number };
}

/** How often idle executors' resident memory is measured again (it is also measured as each goes idle). */
const RESAMPLE_MS = 10_000;

/** How a user's executor came to be: a ready spare, a spare still starting, or one started for the user. */
export type ExecutorOrigin = 'spare' | 'starting-spare' | 'spawned';

/** The exit cause of a process the kernel killed for exceeding the cgroup's memory limit. */
export function outOfMemory(limits: ExecutorLimits): string {
  return `out of memory (limit ${formatBytes(limits.memoryBytes)})`;
}

export class UserExecutor {
  readonly jobs = new Set<string>();
  idleSince: number | null = Date.now();
  identity: ExecutorIdentity | undefined;
  /** Its cgroup, when limits are enforced. */
  cgroup: ExecutorCgroup | undefined;
  /** When the agent last heard from it on the pipe (any message; the executor pings while it has a user). */
  lastHeard = Date.now();
  /** Set once it was killed for missing its heartbeats. */
  hung = false;
  /** Its resident memory when last measured (bytes; 0 before the first measurement). */
  residentBytes = 0;
  /** When it was last handed out for a job (epoch ms). */
  acquiredAt = 0;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly account: OsAccount,
    readonly process: ExecutorProcess,
    readonly origin: ExecutorOrigin,
  ) {}

  get pid(): number {
    return this.process.pid ?? -1;
  }

  info(): ExecutorInfo {
    return {
      user: this.account.name,
      uid: this.account.uid,
      pid: this.pid,
      jobs: this.jobs.size,
      idleSinceMs: this.idleSince,
      rssBytes: residentBytes(this.pid),
    };
  }

  /** @internal */
  setIdleTimer(timer: NodeJS.Timeout | undefined): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = timer;
  }
}

export class ExecutorPool {
  private readonly byUid = new Map<number, Promise<UserExecutor>>();
  /** OS user names with an executor starting or running (for capacity decisions before account lookup). */
  private readonly names = new Map<number, string>();
  /** The executor currently serving each uid, once started. */
  private readonly owners = new Map<number, UserExecutor>();
  private readonly live = new Set<UserExecutor>();
  /** The spares, oldest first. */
  private readonly warm: ExecutorProcess[] = [];
  /** Reaping and cgroup removals under way. */
  private readonly cleanups = new Set<Promise<unknown>>();
  /** Cgroups of pre-started executors, joined before any user is assigned. */
  private readonly warmCgroups = new Map<ExecutorProcess, Promise<ExecutorCgroup | undefined>>();
  private closed = false;
  private readonly memory: MemoryProbe;
  private lastResample = Date.now();
  /** The most a spare has been measured to use (bytes): what a spare still starting is counted at. */
  private spareBytesSeen = 0;

  private readonly watchdog: NodeJS.Timeout;

  constructor(private readonly options: PoolOptions) {
    this.memory = options.memory ?? procMemory;
    this.watchdog = setInterval(() => {
      this.checkHeartbeats();
      this.trimIdle();
    }, options.heartbeat.intervalMs);
    this.watchdog.unref();
  }

  /**
   * Kills every user's executor that missed its heartbeats (stopped with SIGSTOP, or its event loop stuck):
   * it can no longer end its jobs, report them, or honour a cancel. Its exit then ends its jobs
   * (`ExitInfo.kind` `unresponsive`).
   */
  private checkHeartbeats(): void {
    const limit = this.options.heartbeat.intervalMs * this.options.heartbeat.misses;
    const now = Date.now();
    for (const executor of this.live) {
      if (executor.hung || now - executor.lastHeard <= limit) continue;
      this.killHung(
        executor,
        `unresponsive: no heartbeat on its pipe for ${Math.round((now - executor.lastHeard) / 1000)} s`,
      );
    }
  }

  /** Kills an executor that does not answer, with all its processes, and takes it out of service. */
  killHung(executor: UserExecutor, cause: string): void {
    if (executor.hung) return;
    executor.hung = true;
    this.forget(executor);
    executor.setIdleTimer(undefined);
    executor.process.kill(cause, true);
    // SIGKILL reaches a stopped process too; the cgroup catches whatever left its process group.
    void executor.cgroup?.killAll();
  }

  /** Whether an executor was heard from lately (within two ping intervals). */
  responsive(executor: UserExecutor): boolean {
    return !executor.hung && Date.now() - executor.lastHeard <= 2 * this.options.heartbeat.intervalMs;
  }

  /** Set once the agent has detected the cgroup interface (before any executor is assigned). */
  setCgroups(support: CgroupSupport): void {
    this.options.cgroups = support;
  }

  /** Starts the pre-started executors. */
  async prime(): Promise<void> {
    const starting: Promise<void>[] = [];
    while (this.warm.length < this.options.warmExecutors) starting.push(this.addWarm());
    await Promise.all(starting);
  }

  /**
   * The user's executor, started (or taken from the warm ones) on first use. Concurrent calls for the
   * same uid share one start: the map holds the in-flight promise.
   */
  acquire(account: OsAccount, dirs: UserDirs): Promise<UserExecutor> {
    const existing = this.byUid.get(account.uid);
    if (existing) {
      const owner = this.owners.get(account.uid);
      if (owner) owner.acquiredAt = Date.now();
      return existing;
    }
    const starting = this.startFor(account, dirs);
    this.byUid.set(account.uid, starting);
    this.names.set(account.uid, account.name);
    starting.catch(() => {
      this.byUid.delete(account.uid);
      this.names.delete(account.uid);
    });
    return starting;
  }

  jobStarted(executor: UserExecutor, jobId: string): void {
    executor.jobs.add(jobId);
    executor.idleSince = null;
    executor.setIdleTimer(undefined);
  }

  jobEnded(executor: UserExecutor, jobId: string): void {
    this.replenish();
    executor.jobs.delete(jobId);
    if (executor.jobs.size > 0) return;
    this.markIdle(executor);
    executor.residentBytes = this.memory.residentBytes(executor.pid) ?? executor.residentBytes;
    this.trimIdle();
  }

  hasExecutorFor(osName: string): boolean {
    for (const name of this.names.values()) if (name === osName) return true;
    return false;
  }

  /**
   * Stops the least recently used idle executors while the idle ones and the spares use more than the idle
   * budget, or MemAvailable is below its floor (see `idleEvictions`). Measures idle executors again every
   * RESAMPLE_MS; each is measured as it goes idle too.
   */
  trimIdle(): void {
    if (this.closed) return;
    const now = Date.now();
    const resample = now - this.lastResample >= RESAMPLE_MS;
    if (resample) this.lastResample = now;
    const idle: { key: UserExecutor; residentBytes: number; idleSince: number; pinned: boolean }[] = [];
    for (const executor of this.live) {
      if (executor.jobs.size > 0 || executor.idleSince === null) continue;
      if (resample) executor.residentBytes = this.memory.residentBytes(executor.pid) ?? 0;
      idle.push({
        key: executor,
        residentBytes: executor.residentBytes,
        idleSince: executor.idleSince,
        pinned: pinnedForJob(executor.acquiredAt, executor.idleSince, now),
      });
    }
    const evict = idleEvictions({
      idle,
      spareBytes: spareFootprint(this.measureSpares(), this.spareBytesSeen),
      idleBudgetBytes: this.options.idleBudget.idleMemoryBytes,
      availableBytes: this.memory.availableBytes(),
      minAvailableBytes: this.options.idleBudget.minAvailableBytes,
    });
    for (const executor of evict) {
      // Told in the order chosen (least recently used first); their exits may come in any order.
      this.options.onEvicted?.(executor, executor.residentBytes);
      this.retire(executor, 'evicted: idle memory needed');
    }
  }

  /** Each spare's resident memory now (bytes), remembering the most seen. */
  private measureSpares(): number[] {
    const measured = this.warm.map((spare) => (spare.pid ? (this.memory.residentBytes(spare.pid) ?? 0) : 0));
    for (const bytes of measured) this.spareBytesSeen = Math.max(this.spareBytesSeen, bytes);
    return measured;
  }

  /** The idle executors and spares, their measured memory and the budget for it (for leak checks, benches). */
  idleMemory(): { idle: number; spares: number; residentBytes: number; budgetBytes: number } {
    let idle = 0;
    let residentBytes = 0;
    for (const executor of this.live)
      if (executor.jobs.size === 0 && executor.idleSince !== null) {
        idle += 1;
        residentBytes += executor.residentBytes;
      }
    for (const bytes of this.measureSpares()) residentBytes += bytes;
    return {
      idle,
      spares: this.warm.length,
      residentBytes,
      budgetBytes: this.options.idleBudget.idleMemoryBytes,
    };
  }

  /**
   * Takes an executor out of service and stops it. From now on a job for its user starts a new executor:
   * none is ever handed a job while it is shutting down.
   */
  private retire(executor: UserExecutor, cause: string): void {
    this.forget(executor);
    executor.setIdleTimer(undefined);
    void executor.process.stop(cause);
  }

  private forget(executor: UserExecutor): void {
    this.live.delete(executor);
    const uid = executor.account.uid;
    if (this.owners.get(uid) === executor) {
      this.owners.delete(uid);
      this.byUid.delete(uid);
      this.names.delete(uid);
    }
  }

  executors(): ExecutorInfo[] {
    return [...this.live].map((executor) => executor.info());
  }

  /** Stops every executor (TERM, then KILL after the stop timeout). */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.watchdog);
    const stops = [...this.live].map((executor) => {
      executor.setIdleTimer(undefined);
      return executor.process.stop('agent stop');
    });
    stops.push(...this.warm.splice(0).map((process) => process.stop('agent stop')));
    await Promise.all(stops);
    // Exits are reaped asynchronously (cgroup counters, removal): wait for them, so nothing is left behind.
    while (this.cleanups.size > 0) await Promise.allSettled([...this.cleanups]);
  }

  private track(cleanup: Promise<unknown>): void {
    const tracked = cleanup.catch(() => {}).finally(() => this.cleanups.delete(tracked));
    this.cleanups.add(tracked);
  }

  private async startFor(account: OsAccount, dirs: UserDirs): Promise<UserExecutor> {
    const { process, origin } = await this.takeWarm();
    const executor = new UserExecutor(account, process, origin);
    process.owner = account.name;
    process.on('message', (message) => {
      executor.lastHeard = Date.now();
      this.options.onMessage(executor, message);
    });
    process.on('exit', (exit) => {
      executor.setIdleTimer(undefined);
      this.forget(executor);
      this.track(this.reap(executor, exit));
    });
    await this.joinCgroup(executor, process, account);
    const assumed = this.assumeIdentity(executor, process, account, dirs);
    try {
      executor.identity = await assumed;
    } catch (error) {
      void process.stop('identity switch failed');
      this.replenish();
      throw error;
    }
    this.live.add(executor);
    this.owners.set(account.uid, executor);
    this.markIdle(executor);
    // Handed out to the job that started it, which is not counted as its yet (see pinnedForJob).
    executor.acquiredAt = Date.now();
    return executor;
  }

  /**
   * Puts a new user's executor into its cgroup and delegates that to the user. Limits first, identity second:
   * the process joins its cgroup while still root and idle, so nothing the user runs starts outside it.
   */
  private async joinCgroup(
    executor: UserExecutor,
    process: ExecutorProcess,
    account: OsAccount,
  ): Promise<void> {
    // A pre-started executor usually sits in its cgroup already (see addWarm): less to do on the user's clock.
    const prepared = this.warmCgroups.get(process);
    this.warmCgroups.delete(process);
    executor.cgroup = await prepared?.catch(() => undefined);
    if (this.options.cgroups.version !== 'none' && !executor.cgroup) {
      try {
        executor.cgroup = await ExecutorCgroup.create(
          this.options.cgroups,
          `exec-${process.pid ?? 0}`,
          this.options.limits,
        );
        await executor.cgroup.join(process.pid ?? -1);
      } catch (error) {
        void process.stop('cgroup setup failed');
        await executor.cgroup?.remove();
        throw new Error(
          `could not put the executor for ${account.name} into its cgroup: ${(error as Error).message}`,
        );
      }
    }
    // The user may move its own processes between the executor's cgroup and its jobs' (see cgroups.ts). A
    // spare's cgroup gets its CPU weight back (see addWarm).
    try {
      await Promise.all([
        prepared ? executor.cgroup?.setBackground(false) : undefined,
        executor.cgroup?.delegate(account.uid, account.gid, process.pid ?? -1),
      ]);
    } catch (error) {
      void process.stop('cgroup setup failed');
      throw new Error(
        `could not delegate the executor's cgroup to ${account.name}: ${(error as Error).message}`,
      );
    }
  }

  /** Tells the executor to become the user; resolves with the identity it reports once it has. */
  private assumeIdentity(
    executor: UserExecutor,
    process: ExecutorProcess,
    account: OsAccount,
    dirs: UserDirs,
  ): Promise<ExecutorIdentity> {
    const assumed = new Promise<ExecutorIdentity>((resolve, reject) => {
      const onMessage = (message: ExecutorToAgent): void => {
        if (message.type === 'assumed') {
          process.off('message', onMessage);
          executor.lastHeard = Date.now();
          resolve({
            pid: process.pid ?? -1,
            osUser: account.name,
            uid: message.uid,
            gid: message.gid,
            groups: message.groups,
            limits: {
              memoryBytes: this.options.limits.memoryBytes,
              cpus: this.options.limits.cpus,
              cgroup: this.options.cgroups.version,
              ...(executor.cgroup?.pidsLimited ? { pids: this.options.limits.pids } : {}),
            },
          });
        } else if (message.type === 'assume-failed') {
          process.off('message', onMessage);
          reject(new Error(`executor could not become ${account.name}: ${message.message}`));
        }
      };
      process.on('message', onMessage);
      process.once('exit', (exit) =>
        reject(
          new ExecutorExitedError(`executor exited while becoming ${account.name} (${exit.cause})`, exit),
        ),
      );
    });
    process.send({
      type: 'assume',
      osUser: account.name,
      uid: account.uid,
      gid: account.gid,
      home: account.home,
      shell: account.shell,
      tempDir: dirs.tempDir,
      workspaceDir: dirs.workspaceDir,
      duckdb: this.options.duckdb,
      keepJobDirs: this.options.keepJobDirs,
      ...(this.options.steps ?? {}),
      heartbeatMs: this.options.heartbeat.intervalMs,
      ...(executor.cgroup?.homeProcsFile ? { cgroupProcs: executor.cgroup.homeProcsFile } : {}),
    });
    return assumed;
  }

  /** Records an exit with its cause — from the cgroup's OOM counter when it says so — and removes the cgroup. */
  private async reap(executor: UserExecutor, exit: ExitInfo): Promise<void> {
    let info = exit;
    if (executor.cgroup) {
      if (executor.cgroup.oomKills() > 0 && exit.signal === 'SIGKILL') {
        info = { ...exit, kind: 'out-of-memory', cause: outOfMemory(this.options.limits) };
      }
      // Steps that outlived their executor go with it.
      await executor.cgroup.remove();
    }
    this.options.onExit(executor, info, [...executor.jobs]);
  }

  private markIdle(executor: UserExecutor): void {
    executor.idleSince = Date.now();
    const timer = setTimeout(() => {
      if (executor.jobs.size === 0) this.retire(executor, 'idle');
    }, this.options.idleTimeoutMs);
    timer.unref();
    executor.setIdleTimer(timer);
  }

  /**
   * A ready spare if there is one, else the spare closest to ready (started first), else a new executor.
   * Its replacement starts at once, before this one takes on its user: spares are replenished ahead of
   * demand, not after.
   */
  private async takeWarm(): Promise<{ process: ExecutorProcess; origin: ExecutorOrigin }> {
    const ready = this.warm.findIndex((process) => process.state === 'ready');
    const index = ready >= 0 ? ready : this.warm.findIndex((process) => process.state === 'starting');
    const process = index >= 0 ? this.warm.splice(index, 1)[0]! : this.spawn();
    const origin: ExecutorOrigin = ready >= 0 ? 'spare' : index >= 0 ? 'starting-spare' : 'spawned';
    // A ready spare taken is replaced once its job's first step runs (`replenish`, called by the agent): a
    // Node process starting now would take the CPU this start needs. Without a ready spare, demand is
    // outrunning them: start now.
    if (ready < 0) this.replenish();
    // A spare still starting finishes its start on the user's clock: at the default CPU weight.
    if (origin === 'starting-spare')
      void this.warmCgroups
        .get(process)
        ?.then((group) => group?.setBackground(false))
        .catch(() => {});
    await process.start();
    return { process, origin };
  }

  /** Starts spares until `warmExecutors` are ready or starting. */
  replenish(): void {
    while (!this.closed && this.warm.length < this.options.warmExecutors) void this.addWarm().catch(() => {});
  }

  /**
   * Starts a pre-started executor and, when limits are enforced, puts it into its own cgroup right away —
   * still root, still without a user, at the least CPU weight (see `ExecutorCgroup.setBackground`) — so an
   * assignment only has the identity switch left to do.
   */
  private async addWarm(): Promise<void> {
    const process = this.spawn();
    this.warm.push(process);
    let wasReady = false;
    process.once('exit', () => {
      const index = this.warm.indexOf(process);
      if (index >= 0) this.warm.splice(index, 1);
      const cgroup = this.warmCgroups.get(process);
      if (cgroup) {
        this.warmCgroups.delete(process);
        this.track(cgroup.then((group) => group?.remove()));
      }
      // A spare that had started and died (killed, OOM) is replaced; one that never started is not, so a
      // broken executor does not spawn in a loop (the next user's start tries again).
      if (index >= 0 && wasReady) this.replenish();
    });
    const started = process.start();
    // Into its cgroup at once, with the least CPU weight: it starts on the CPU time nobody else wants.
    if (this.options.cgroups.version !== 'none' && process.pid) {
      const pid = process.pid;
      const joining = ExecutorCgroup.create(this.options.cgroups, `exec-${pid}`, this.options.limits).then(
        async (group) => {
          try {
            await group.setBackground(true);
            await group.join(pid);
            return group;
          } catch (error) {
            await group.remove().catch(() => {});
            throw error;
          }
        },
      );
      this.warmCgroups.set(process, joining);
    }
    await started;
    wasReady = true;
    await this.warmCgroups.get(process)?.catch(() => {});
    if (this.warm.includes(process)) {
      const ready = this.warm.filter((spare) => spare.state === 'ready').length;
      this.options.onSpareReady?.(process.pid ?? -1, ready);
    }
    this.trimIdle();
  }

  private spawn(): ExecutorProcess {
    const process: ExecutorProcess = new ExecutorProcess({
      onOutput: (stream, line) => this.options.onOutput(process.owner, process.pid, stream, line),
      stopTimeoutMs: this.options.stopTimeoutMs,
    });
    return process;
  }
}

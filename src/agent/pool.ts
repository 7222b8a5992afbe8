/**
 * The executor pool: exactly one executor per OS user (keyed by uid, never by a process-name scan), reused
 * while warm, stopped after the idle timeout; plus a few pre-started executors with no user yet, each of
 * which becomes one user's executor and never anyone else's.
 */
import type { ExecutorIdentity, ExecutorInfo, ExecutorToAgent } from '../protocol/index.js';
import type { OsAccount } from './accounts.js';
import { ExecutorProcess, type ExitInfo, type SpawnOptions } from './spawner.js';
import type { UserDirs } from './workspaces.js';

export interface PoolOptions extends Omit<SpawnOptions, 'onOutput'> {
  /** Executor diagnostics, with the OS user once the executor has one. */
  onOutput: (
    owner: string | undefined,
    pid: number | undefined,
    stream: 'stdout' | 'stderr',
    line: string,
  ) => void;
  warmExecutors: number;
  idleTimeoutMs: number;
  duckdb: { memoryLimit: string; threads: number };
  keepJobDirs: boolean;
  /** Called for every message from a user's executor. */
  onMessage: (executor: UserExecutor, message: ExecutorToAgent) => void;
  /** Called when a user's executor exits, with the jobs it still had. */
  onExit: (executor: UserExecutor, exit: ExitInfo, jobs: string[]) => void;
}

export class UserExecutor {
  readonly jobs = new Set<string>();
  idleSince: number | null = Date.now();
  identity: ExecutorIdentity | undefined;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly account: OsAccount,
    readonly process: ExecutorProcess,
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
      rssBytes: null,
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
  private readonly live = new Set<UserExecutor>();
  private readonly warm: ExecutorProcess[] = [];
  private closed = false;

  constructor(private readonly options: PoolOptions) {}

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
    if (existing) return existing;
    const starting = this.startFor(account, dirs);
    this.byUid.set(account.uid, starting);
    starting.catch(() => this.byUid.delete(account.uid));
    return starting;
  }

  jobStarted(executor: UserExecutor, jobId: string): void {
    executor.jobs.add(jobId);
    executor.idleSince = null;
    executor.setIdleTimer(undefined);
  }

  jobEnded(executor: UserExecutor, jobId: string): void {
    executor.jobs.delete(jobId);
    if (executor.jobs.size === 0) this.markIdle(executor);
  }

  executors(): ExecutorInfo[] {
    return [...this.live].map((executor) => executor.info());
  }

  /** Stops every executor (TERM, then KILL after the stop timeout). */
  async close(): Promise<void> {
    this.closed = true;
    const stops = [...this.live].map((executor) => {
      executor.setIdleTimer(undefined);
      return executor.process.stop('agent stop');
    });
    stops.push(...this.warm.splice(0).map((process) => process.stop('agent stop')));
    await Promise.all(stops);
  }

  private async startFor(account: OsAccount, dirs: UserDirs): Promise<UserExecutor> {
    const process = await this.takeWarm();
    const executor = new UserExecutor(account, process);
    process.owner = account.name;
    process.on('message', (message) => this.options.onMessage(executor, message));
    process.on('exit', (exit) => {
      executor.setIdleTimer(undefined);
      this.live.delete(executor);
      if (this.byUid.get(account.uid) && executor.process === process) this.byUid.delete(account.uid);
      this.options.onExit(executor, exit, [...executor.jobs]);
    });
    const assumed = new Promise<ExecutorIdentity>((resolve, reject) => {
      const onMessage = (message: ExecutorToAgent): void => {
        if (message.type === 'assumed') {
          process.off('message', onMessage);
          resolve({
            pid: process.pid ?? -1,
            osUser: account.name,
            uid: message.uid,
            gid: message.gid,
            groups: message.groups,
          });
        } else if (message.type === 'assume-failed') {
          process.off('message', onMessage);
          reject(new Error(`executor could not become ${account.name}: ${message.message}`));
        }
      };
      process.on('message', onMessage);
      process.once('exit', (exit) =>
        reject(new Error(`executor exited while becoming ${account.name} (${exit.cause})`)),
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
    });
    try {
      executor.identity = await assumed;
    } catch (error) {
      void process.stop('identity switch failed');
      throw error;
    }
    this.live.add(executor);
    this.markIdle(executor);
    return executor;
  }

  private markIdle(executor: UserExecutor): void {
    executor.idleSince = Date.now();
    const timer = setTimeout(() => {
      if (executor.jobs.size === 0) void executor.process.stop('idle');
    }, this.options.idleTimeoutMs);
    timer.unref();
    executor.setIdleTimer(timer);
  }

  /** A pre-started executor if one is ready, else a new one; a replacement starts in the background. */
  private async takeWarm(): Promise<ExecutorProcess> {
    const ready = this.warm.findIndex((process) => process.state === 'ready');
    let process: ExecutorProcess;
    if (ready >= 0) {
      process = this.warm.splice(ready, 1)[0]!;
    } else {
      process = this.spawn();
      await process.start();
    }
    if (!this.closed && this.warm.length < this.options.warmExecutors) void this.addWarm().catch(() => {});
    return process;
  }

  private async addWarm(): Promise<void> {
    const process = this.spawn();
    this.warm.push(process);
    process.once('exit', () => {
      const index = this.warm.indexOf(process);
      if (index >= 0) this.warm.splice(index, 1);
    });
    await process.start();
  }

  private spawn(): ExecutorProcess {
    const process: ExecutorProcess = new ExecutorProcess({
      onOutput: (stream, line) => this.options.onOutput(process.owner, process.pid, stream, line),
      stopTimeoutMs: this.options.stopTimeoutMs,
    });
    return process;
  }
}

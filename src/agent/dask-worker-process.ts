/**
 * One Dask worker host process on this machine (dist/executor/dask-worker-main.js), the spawner side: no
 * shell, a launch environment with no secret, its own session, a cgroup of its own with the user's executor
 * limits (joined before it is told its user), the worker's TLS files over its pipe (never argv or env), its
 * output into the user's log. `stop()` asks it to stop the worker (TERM → KILL of the worker's group), then
 * kills whatever is left in its cgroup (or its process group without cgroups).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { DaskWorkerHostToAgent, type AgentToDaskWorkerHost, type DaskWorkerTls } from '../protocol/index.js';
import type { OsAccount } from './accounts.js';
import { ExecutorCgroup, type CgroupSupport, type ExecutorLimits } from './cgroups.js';
import type { UserDirs } from './workspaces.js';

const entry = fileURLToPath(new URL('../executor/dask-worker-main.js', import.meta.url));
/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ: 100 on every Linux Steward runs on). */
const CLOCK_TICKS = 100;

export type StartSpec = Extract<AgentToDaskWorkerHost, { type: 'start' }>['worker'];

export interface WorkerExit {
  code: number | null;
  signal: string | null;
}

export interface WorkerResources {
  peakRssBytes: number | null;
  cpuMs: number | null;
}

export class DaskWorkerProcess {
  /** The Dask worker's pid (not the host's), once started. */
  workerPid = 0;
  uid = 0;
  readonly exited: Promise<WorkerExit>;
  private resolveExit!: (exit: WorkerExit) => void;
  private stopping: Promise<void> | undefined;
  private last: WorkerResources = { peakRssBytes: null, cpuMs: null };

  private constructor(
    private readonly child: ChildProcess,
    private readonly cgroup: ExecutorCgroup | undefined,
  ) {
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
  }

  /**
   * Starts the host, puts it in its cgroup, hands it the user and the worker; resolves once the worker runs
   * (rejects with the host's reason when it could not start it, after cleaning up).
   */
  static async start(options: {
    name: string;
    cgroups: CgroupSupport;
    limits: ExecutorLimits;
    account: OsAccount;
    dirs: UserDirs;
    worker: StartSpec;
    tls: DaskWorkerTls;
    onOutput: (pid: number | undefined, stream: 'stdout' | 'stderr', line: string) => void;
  }): Promise<DaskWorkerProcess> {
    const child = spawn(process.execPath, [entry], {
      env: { PATH: '/usr/local/bin:/usr/bin:/bin', LANG: process.env.LANG ?? 'C.UTF-8' },
      cwd: '/',
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      detached: true,
      serialization: 'json',
    });
    for (const stream of ['stdout', 'stderr'] as const) relayLines(child, stream, options.onOutput);
    let cgroup: ExecutorCgroup | undefined;
    try {
      const ready = waitFor(child, 'ready');
      if (options.cgroups.version !== 'none') {
        cgroup = await ExecutorCgroup.create(options.cgroups, options.name, options.limits);
        await cgroup.join(child.pid ?? -1);
      }
      await ready;
      const started = waitFor(child, 'started');
      child.send({
        type: 'start',
        identity: {
          osUser: options.account.name,
          uid: options.account.uid,
          gid: options.account.gid,
          home: options.account.home,
          shell: options.account.shell,
          tempDir: options.dirs.tempDir,
          workspaceDir: options.dirs.workspaceDir,
        },
        worker: options.worker,
        tls: options.tls,
      } satisfies AgentToDaskWorkerHost);
      const message = await started;
      const host = new DaskWorkerProcess(child, cgroup);
      host.workerPid = message.pid;
      host.uid = message.uid;
      host.watch();
      return host;
    } catch (error) {
      child.kill('SIGKILL');
      await cgroup?.remove();
      throw error;
    }
  }

  /** Peak RSS and CPU time of the worker, from /proc while it runs (the last figures after). */
  async resources(): Promise<WorkerResources> {
    const pid = this.workerPid;
    const [status, stat] = await Promise.all([
      readFile(`/proc/${pid}/status`, 'utf8').catch(() => ''),
      readFile(`/proc/${pid}/stat`, 'utf8').catch(() => ''),
    ]);
    const hwmKb = /^VmHWM:\s+(\d+) kB$/m.exec(status)?.[1];
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    if (hwmKb !== undefined) this.last.peakRssBytes = Number(hwmKb) * 1024;
    if (Number.isFinite(ticks)) this.last.cpuMs = Math.round((ticks * 1000) / CLOCK_TICKS);
    return { ...this.last };
  }

  /** Stops the worker and everything left of it; idempotent, resolves once nothing of it runs. */
  stop(graceMs: number): Promise<void> {
    this.stopping ??= (async () => {
      if (this.child.connected)
        this.child.send({ type: 'stop', graceMs } satisfies AgentToDaskWorkerHost, () => undefined);
      const timer = setTimeout(() => this.killAll(), graceMs + 2000);
      await this.exited;
      clearTimeout(timer);
      await this.killAll();
      await this.cgroup?.remove();
    })();
    return this.stopping;
  }

  private async killAll(): Promise<void> {
    if (this.cgroup) await this.cgroup.killAll();
    else
      for (const pid of [this.workerPid, this.child.pid ?? 0])
        if (pid > 0)
          try {
            process.kill(-pid, 'SIGKILL');
          } catch {
            // Already gone.
          }
  }

  private watch(): void {
    let reported: WorkerExit | undefined;
    this.child.on('message', (raw: unknown) => {
      const parsed = DaskWorkerHostToAgent.safeParse(raw);
      if (parsed.success && parsed.data.type === 'exited')
        reported = { code: parsed.data.code, signal: parsed.data.signal };
    });
    this.child.once('exit', (code, signal) => {
      this.resolveExit(reported ?? { code, signal: signal ?? null });
    });
  }
}

type HostMessage<T extends DaskWorkerHostToAgent['type']> = Extract<DaskWorkerHostToAgent, { type: T }>;

/** The host's next message of `type`; rejects on `failed` or when it exits first. */
function waitFor<T extends 'ready' | 'started'>(child: ChildProcess, type: T): Promise<HostMessage<T>> {
  return new Promise((resolve, reject) => {
    const onMessage = (raw: unknown) => {
      const parsed = DaskWorkerHostToAgent.safeParse(raw);
      if (!parsed.success) return;
      if (parsed.data.type === type) {
        cleanup();
        resolve(parsed.data as HostMessage<T>);
      } else if (parsed.data.type === 'failed') {
        cleanup();
        reject(new Error(parsed.data.message));
      }
    };
    const onExit = (code: number | null, signal: string | null) => {
      cleanup();
      reject(new Error(`the Dask worker host exited (${signal ?? `code ${code}`}) before it was ${type}`));
    };
    const onError = (error: Error) => {
      cleanup();
      reject(error);
    };
    const cleanup = () => {
      child.off('message', onMessage);
      child.off('exit', onExit);
      child.off('error', onError);
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
    child.once('error', onError);
  });
}

function relayLines(
  child: ChildProcess,
  stream: 'stdout' | 'stderr',
  onOutput: (pid: number | undefined, stream: 'stdout' | 'stderr', line: string) => void,
): void {
  let buffered = '';
  const source = child[stream]!;
  source.setEncoding('utf8');
  source.on('data', (chunk: string) => {
    const lines = (buffered + chunk).split('\n');
    buffered = lines.pop()!.slice(0, 64 * 1024);
    for (const line of lines) onOutput(child.pid, stream, line);
  });
  source.on('end', () => {
    if (buffered) onOutput(child.pid, stream, buffered);
  });
}

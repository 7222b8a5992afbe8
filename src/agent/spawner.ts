/**
 * One executor process (the JupyterHub spawner contract: start / stop / poll / state).
 *
 * Executors are started *before* they know their user: Node and DuckDB load while the process waits, and
 * `assume()` makes it take on one user's identity for good (initgroups, setgid, setuid — see
 * executor/identity.ts). This is what lets a user's first job start in milliseconds, and it keeps every
 * isolation property: no shell, a clean environment with no secret, the IPC pipe as the only channel, its
 * own session (no controlling terminal), and exit when the agent's pipe closes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { fileURLToPath } from 'node:url';
import { ExecutorFrame, type AgentToExecutor, type ExecutorToAgent } from '../protocol/index.js';

export type ExecutorState = 'starting' | 'ready' | 'assuming' | 'assigned' | 'stopping' | 'exited';

/**
 * How an executor ended:
 * - `exited`: it exited by itself (see `code`);
 * - `signaled`: a signal the agent did not send killed it;
 * - `stopped`: the agent stopped it (idle, agent stop, a failed setup: see `cause`);
 * - `unresponsive`: the agent killed it for missing its heartbeats (stopped or hung), and so ended its jobs;
 * - `out-of-memory`: the kernel killed it for its cgroup's memory limit (the pool reads the cgroup's counter).
 */
export type ExitKind = 'exited' | 'signaled' | 'stopped' | 'unresponsive' | 'out-of-memory';

export interface ExitInfo {
  kind: ExitKind;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Why it ended, in words, for logs and job messages: `idle`, `killed by SIGSEGV`, … */
  cause: string;
}

export interface SpawnOptions {
  /** Receives each line the executor writes to stdout/stderr (its diagnostics). */
  onOutput: (stream: 'stdout' | 'stderr', line: string) => void;
  stopTimeoutMs: number;
}

const executorEntry = fileURLToPath(new URL('../executor/main.js', import.meta.url));

/**
 * V8 settings of every executor: a 1 MiB young generation instead of 16 MiB. An executor spends its life
 * idle or waiting on DuckDB and its steps, not allocating in JavaScript; this keeps about 9 MiB of each idle
 * executor's resident memory (bench/cold-start.mjs measures it).
 */
export const EXECUTOR_NODE_FLAGS = ['--max-semi-space-size=1'];

/** The only variables an executor starts with; it replaces them with the user's on assume. */
function launchEnvironment(): Record<string, string> {
  return {
    PATH: '/usr/local/bin:/usr/bin:/bin',
    LANG: process.env.LANG ?? 'C.UTF-8',
  };
}

export class ExecutorProcess extends EventEmitter<{
  message: [ExecutorToAgent];
  exit: [ExitInfo];
}> {
  state: ExecutorState = 'starting';
  /** The OS user it runs as, once assigned. */
  owner: string | undefined;
  readonly startedAt = Date.now();
  private child: ChildProcess | undefined;
  private readyPromise: Promise<void> | undefined;
  private stopPromise: Promise<ExitInfo> | undefined;
  private exitInfo: ExitInfo | undefined;
  private stopCause: string | undefined;
  private killedAsHung = false;

  constructor(private readonly options: SpawnOptions) {
    super();
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Starts the process; resolves when it reports `ready`. Idempotent. */
  start(): Promise<void> {
    this.readyPromise ??= new Promise<void>((resolve, reject) => {
      const child = spawn(process.execPath, [...EXECUTOR_NODE_FLAGS, executorEntry], {
        env: launchEnvironment(),
        cwd: '/',
        stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
        // Its own session: no controlling terminal, and signals to the agent's group do not reach it.
        detached: true,
        serialization: 'json',
      });
      this.child = child;
      for (const stream of ['stdout', 'stderr'] as const) {
        let buffered = '';
        child[stream]!.setEncoding('utf8');
        child[stream]!.on('data', (chunk: string) => {
          buffered += chunk;
          let newline: number;
          while ((newline = buffered.indexOf('\n')) >= 0) {
            this.options.onOutput(stream, buffered.slice(0, newline));
            buffered = buffered.slice(newline + 1);
          }
          if (buffered.length > 64 * 1024) {
            this.options.onOutput(stream, buffered);
            buffered = '';
          }
        });
      }
      child.on('message', (raw: unknown) => {
        const parsed = ExecutorFrame.safeParse(raw);
        if (!parsed.success) {
          this.options.onOutput(
            'stderr',
            `agent: ignoring malformed executor message: ${parsed.error.issues[0]?.message ?? ''}`,
          );
          return;
        }
        const messages = parsed.data.type === 'batch' ? parsed.data.messages : [parsed.data];
        for (const message of messages) {
          if (message.type === 'ready' && this.state === 'starting') {
            this.state = 'ready';
            resolve();
          }
          this.emit('message', message);
        }
      });
      child.on('error', (error) => {
        if (this.state === 'starting') reject(error);
      });
      child.on('exit', (code, signal) => {
        const wasStarting = this.state === 'starting';
        this.state = 'exited';
        this.exitInfo = {
          kind: this.exitKind(signal),
          code,
          signal,
          cause: this.stopCause ?? (signal ? `killed by ${signal}` : `exited with code ${code}`),
        };
        if (wasStarting) reject(new Error(`executor exited during start (${this.exitInfo.cause})`));
        this.emit('exit', this.exitInfo);
      });
      // The agent must not wait for executors to exit on its own shutdown path.
      child.unref();
    });
    return this.readyPromise;
  }

  private exitKind(signal: NodeJS.Signals | null): ExitKind {
    if (this.killedAsHung) return 'unresponsive';
    if (this.stopCause !== undefined) return 'stopped';
    return signal ? 'signaled' : 'exited';
  }

  send(message: AgentToExecutor): boolean {
    const child = this.child;
    if (!child?.connected || this.state === 'exited') return false;
    child.send(message);
    return true;
  }

  /** Current state without waiting; `exited` carries the exit info. */
  poll(): { state: ExecutorState; exit?: ExitInfo } {
    return this.exitInfo ? { state: this.state, exit: this.exitInfo } : { state: this.state };
  }

  /** Asks it to stop (TERM via the pipe), then SIGKILLs its session after the stop timeout. Idempotent. */
  stop(cause: string): Promise<ExitInfo> {
    if (this.exitInfo) return Promise.resolve(this.exitInfo);
    this.stopPromise ??= new Promise<ExitInfo>((resolve) => {
      this.stopCause = cause;
      this.state = 'stopping';
      this.once('exit', resolve);
      if (!this.send({ type: 'shutdown' })) this.signal('SIGTERM');
      const timer = setTimeout(() => this.signal('SIGKILL'), this.options.stopTimeoutMs);
      timer.unref();
      this.once('exit', () => clearTimeout(timer));
    });
    return this.stopPromise;
  }

  /**
   * SIGKILLs it at once (its process group and itself), for an executor that does not answer: a stopped
   * process cannot read a shutdown message, and one that ignores it would hold its jobs past their time.
   */
  kill(cause: string, hung: boolean): void {
    if (this.exitInfo) return;
    this.stopCause = cause;
    this.killedAsHung = hung;
    this.state = 'stopping';
    this.signal('SIGKILL');
    const pid = this.child?.pid;
    if (pid) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  }

  /** Signals the executor's whole process group (it leads its own session). */
  signal(signal: NodeJS.Signals): void {
    const pid = this.child?.pid;
    if (!pid || this.exitInfo) return;
    try {
      process.kill(-pid, signal);
    } catch {
      try {
        process.kill(pid, signal);
      } catch {
        // Already gone.
      }
    }
  }
}

/**
 * One Dask process (scheduler or worker) of a step's cluster: started in its own process group, inside the
 * job's cgroup (the spawn wrapper), as whoever runs the engine (the executor: the job's user, with the
 * user's groups). Its output goes, line by line and prefixed with its name, to the step's log sink; its
 * last lines are kept to explain a failure. `stop()` escalates SIGTERM → SIGKILL for the whole group.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';
import { StewardError } from '../../protocol/index.js';
import { groupAlive, stopGroup } from '../processes.js';
import type { SpawnWrapper } from '../types.js';

/** Longest line kept from a Dask process; the rest of a longer one is cut. */
const MAX_LINE_BYTES = 8 * 1024;
/** Lines kept in memory per process for error messages. */
const TAIL_LINES = 20;
/** Output held before the step's log is open (startup lines), and the most queued on a slow log. */
const MAX_PENDING_BYTES = 1024 * 1024;

/**
 * Where a step's Dask processes write: lines wait (bounded) until the step's stderr log attaches, then go
 * straight to it; lines that would exceed the bound are counted and reported as one marker line.
 */
export class DaskLogSink {
  private target: NodeJS.WritableStream | undefined;
  private pending: string[] = [];
  private pendingBytes = 0;
  private dropped = 0;

  write(line: string): void {
    const target = this.target;
    if (target && (target as { writableLength?: number }).writableLength! < MAX_PENDING_BYTES) {
      this.flushDropped(target);
      target.write(line);
    } else if (!target && this.pendingBytes + line.length <= MAX_PENDING_BYTES) {
      this.pending.push(line);
      this.pendingBytes += line.length;
    } else {
      this.dropped += 1;
    }
  }

  attach(target: NodeJS.WritableStream): void {
    this.target = target;
    for (const line of this.pending) target.write(line);
    this.pending = [];
    this.pendingBytes = 0;
    this.flushDropped(target);
  }

  detach(): void {
    this.target = undefined;
  }

  private flushDropped(target: NodeJS.WritableStream): void {
    if (this.dropped === 0) return;
    target.write(`[steward] ${this.dropped} Dask log lines dropped (the log could not keep up)\n`);
    this.dropped = 0;
  }
}

export interface DaskProcessSpec {
  /** `scheduler`, `worker-1`, …: the log prefix and the name in errors. */
  name: string;
  argv: string[];
  cwd: string;
  env: Record<string, string>;
  spawnWrapper?: SpawnWrapper;
  sink: DaskLogSink;
}

export interface DaskExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class DaskProcess {
  readonly name: string;
  readonly pid: number;
  readonly startedAt = Date.now();
  /** Resolves when the process has exited (whoever ended it). */
  readonly exited: Promise<DaskExit>;
  private readonly tailLines: string[] = [];
  private stopping: Promise<void> | undefined;

  private constructor(spec: DaskProcessSpec, child: ChildProcess) {
    this.name = spec.name;
    this.pid = child.pid!;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    for (const stream of [child.stdout, child.stderr]) {
      if (stream) readLines(stream, (line) => this.line(spec.sink, line));
    }
  }

  /** Starts the process; a program that cannot be started is a STEWARD_DASK_START_FAILED error. */
  static async start(spec: DaskProcessSpec): Promise<DaskProcess> {
    const [program, ...args] = spec.argv;
    const start = () =>
      spawn(program!, args, {
        cwd: spec.cwd,
        env: spec.env,
        // Its own process group: stopping it reaches anything it started.
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    let child: ChildProcess;
    try {
      child = spec.spawnWrapper ? spec.spawnWrapper(start) : start();
    } catch (error) {
      throw startFailed(spec, (error as Error).message);
    }
    if (child.pid === undefined) {
      const error = await new Promise<Error>((resolve) => child.once('error', resolve));
      throw startFailed(spec, error.message);
    }
    child.on('error', () => undefined);
    return new DaskProcess(spec, child);
  }

  /** The last lines it wrote, for an error message. */
  tail(): string {
    return this.tailLines.join('\n');
  }

  /** Whether anything of its process group still runs. */
  alive(): boolean {
    return groupAlive(this.pid);
  }

  /** SIGTERM to its group, SIGKILL after `graceMs`; idempotent, resolves once the group is gone. */
  stop(graceMs: number): Promise<void> {
    this.stopping ??= stopGroup(this.pid, graceMs, this.exited);
    return this.stopping;
  }

  private line(sink: DaskLogSink, line: string): void {
    this.tailLines.push(line);
    if (this.tailLines.length > TAIL_LINES) this.tailLines.shift();
    sink.write(`[dask ${this.name}] ${line}\n`);
  }
}

function startFailed(spec: DaskProcessSpec, message: string): StewardError {
  return new StewardError(
    'STEWARD_DASK_START_FAILED',
    `cannot start the Dask ${spec.name} (${JSON.stringify(spec.argv[0])}): ${message}`,
  );
}

/** Splits a stream into lines of at most MAX_LINE_BYTES characters (bounded memory for any output). */
function readLines(stream: Readable, onLine: (line: string) => void): void {
  stream.setEncoding('utf8');
  let partial = '';
  let cut = false;
  stream.on('data', (chunk: string) => {
    const pieces = (partial + chunk).split('\n');
    partial = pieces.pop()!;
    for (const piece of pieces) {
      if (!cut) onLine(piece.slice(0, MAX_LINE_BYTES));
      cut = false;
    }
    if (partial.length > MAX_LINE_BYTES) {
      if (!cut) onLine(`${partial.slice(0, MAX_LINE_BYTES)} [line cut]`);
      cut = true;
      partial = '';
    }
  });
  stream.on('end', () => {
    if (partial && !cut) onLine(partial);
  });
  stream.on('error', () => undefined);
}

/**
 * Runs one step's program in its own process group. Its stdout and stderr are pipes the executor reads into
 * bounded log files (step-log.ts: head, marker, tail), so a step writing gigabytes costs the log limit on
 * disk and about a MiB of memory. The pipes are FIFOs made for the step and unlinked at once, not sockets:
 * `echo >/dev/stderr` and `open('/dev/stdout')` work in a step as they do in a terminal (opening a socket
 * through /dev/stdout fails with ENXIO). Where `mkfifo` cannot run, Node's own stdio pipes are used.
 * Stopping escalates SIGTERM → SIGKILL for the whole group and resolves only once the group is gone, so a
 * canceled job leaves no process behind.
 */
import { execFile, spawn } from 'node:child_process';
import { closeSync, constants, open as openCallback } from 'node:fs';
import { rm } from 'node:fs/promises';
import { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { DEFAULT_STEP_LOG_LIMIT_BYTES, StepLogWriter, type StepLogSummary } from './step-log.js';

export interface ProcessSpec {
  argv: string[];
  cwd: string;
  env: Record<string, string>;
  stdoutPath: string;
  stderrPath: string;
  signal: AbortSignal;
  /** SIGTERM → SIGKILL delay. */
  killGraceMs: number;
  /** Runs around the synchronous spawn (see RunOptions.spawnWrapper). */
  spawnWrapper?: <T>(start: () => T) => T;
  /** Cap of each stored stream (head + tail are kept). Default DEFAULT_STEP_LOG_LIMIT_BYTES (32 MiB). */
  logLimitBytes?: number;
  /** More output for the step's stderr log while the step runs (its Dask processes' lines). */
  extraStderr?: { attach(sink: NodeJS.WritableStream): void; detach(): void };
}

export type ProcessOutcome = (
  | { kind: 'exited'; code: number | null; signal: NodeJS.Signals | null }
  | { kind: 'stopped' }
  | { kind: 'spawn-error'; message: string }
) & { logs?: { stdout: StepLogSummary; stderr: StepLogSummary } };

/**
 * How long the pipes may stay open once the step's process group is gone: only a process that left the
 * group (setsid) still holds them then, and its output is not the step's.
 */
const PIPE_DRAIN_MS = 1000;

export async function runProcess(spec: ProcessSpec): Promise<ProcessOutcome> {
  const limit = spec.logLimitBytes ?? DEFAULT_STEP_LOG_LIMIT_BYTES;
  const stdoutLog = await StepLogWriter.create(spec.stdoutPath, limit);
  const stderrLog = await StepLogWriter.create(spec.stderrPath, limit);
  if (spec.signal.aborted) {
    // Stopped before it started (a Dask step whose scheduler died at once, say): its logs exist, empty, as
    // the run reports them and the executor uploads them.
    await Promise.all([stdoutLog.finish(), stderrLog.finish()]);
    return { kind: 'stopped' };
  }
  const fifos = await openFifos(`${spec.stdoutPath}.fifo`, `${spec.stderrPath}.fifo`);
  spec.extraStderr?.attach(stderrLog);
  const captures: Capture[] = [];
  let outcome: ProcessOutcome | undefined;
  let failure: { error: Error } | undefined;
  try {
    outcome = await runGroup(spec, fifos, (child) => {
      const out = fifos ? readerOf(fifos.stdout) : child.stdout;
      const err = fifos ? readerOf(fifos.stderr) : child.stderr;
      if (out) captures.push(capture(out, stdoutLog));
      if (err) captures.push(capture(err, stderrLog));
    });
  } catch (error) {
    failure = { error: error instanceof Error ? error : new Error('step process failed', { cause: error }) };
  } finally {
    if (fifos) {
      for (const fifo of [fifos.stdout, fifos.stderr]) {
        closeEnd(fifo, 'write');
        // Never handed to a reader (the spawn threw): nobody else closes it.
        closeEnd(fifo, 'read');
      }
    }
    // The group is gone; a writer that escaped it (setsid) gets a short while, then its pipe is closed.
    const drained = Promise.all(captures.map((entry) => entry.done));
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, PIPE_DRAIN_MS)));
    await Promise.race([drained, deadline]);
    clearTimeout(timer);
    for (const entry of captures) entry.source.destroy();
    await drained;
    spec.extraStderr?.detach();
  }
  const [stdout, stderr] = await Promise.all([stdoutLog.finish(), stderrLog.finish()]);
  if (failure) throw failure.error;
  return { ...outcome!, logs: { stdout, stderr } };
}

/** Raw descriptors of one FIFO (no FileHandle: a collected FileHandle would close a descriptor in use). */
interface Fifo {
  read: number | undefined;
  write: number | undefined;
}

function closeEnd(fifo: Fifo, end: 'read' | 'write'): void {
  const fd = fifo[end];
  if (fd === undefined) return;
  fifo[end] = undefined;
  try {
    closeSync(fd);
  } catch {
    // Already closed: nothing to do.
  }
}

/**
 * Two FIFOs, both ends opened (close-on-exec, as libuv opens everything), the names unlinked. The read end
 * is opened first and non-blocking, so the open does not wait for a writer; the write end is blocking, so a
 * step that outruns its reader waits instead of losing output. Undefined where `mkfifo` fails (not
 * installed, or no FIFOs on this file system): Node's socket pairs are used then.
 */
async function openFifos(
  stdoutFifo: string,
  stderrFifo: string,
): Promise<{ stdout: Fifo; stderr: Fifo } | undefined> {
  const made = await new Promise<boolean>((resolve) => {
    execFile(
      'mkfifo',
      ['-m', '600', '--', stdoutFifo, stderrFifo],
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } },
      (error) => resolve(!error),
    );
  });
  const opened: Fifo[] = [];
  try {
    if (!made) return undefined;
    const pair = async (file: string): Promise<Fifo> => {
      const fifo: Fifo = { read: undefined, write: undefined };
      opened.push(fifo);
      fifo.read = await openFd(file, constants.O_RDONLY | constants.O_NONBLOCK);
      fifo.write = await openFd(file, constants.O_WRONLY);
      return fifo;
    };
    return { stdout: await pair(stdoutFifo), stderr: await pair(stderrFifo) };
  } catch {
    for (const fifo of opened) {
      closeEnd(fifo, 'read');
      closeEnd(fifo, 'write');
    }
    return undefined;
  } finally {
    await rm(stdoutFifo, { force: true });
    await rm(stderrFifo, { force: true });
  }
}

function openFd(file: string, flags: number): Promise<number> {
  return new Promise((resolve, reject) =>
    openCallback(file, flags, (error, fd) => (error ? reject(error) : resolve(fd))),
  );
}

/** The read end of a FIFO as a stream; libuv reads it on the event loop, not on the thread pool. */
function readerOf(fifo: Fifo): Readable {
  const fd = fifo.read!;
  // The socket owns the descriptor from now on and closes it when destroyed.
  fifo.read = undefined;
  return new Socket({ fd, readable: true, writable: false });
}

interface Capture {
  source: Readable;
  done: Promise<void>;
}

function capture(source: Readable, log: StepLogWriter): Capture {
  const done = new Promise<void>((resolve) => {
    source.once('close', () => resolve());
    // A read error ends the capture like an end of input; what was read is kept.
    source.on('error', () => undefined);
  });
  source.pipe(log, { end: false });
  return { source, done };
}

async function runGroup(
  spec: ProcessSpec,
  fifos: { stdout: Fifo; stderr: Fifo } | undefined,
  onSpawn: (child: ReturnType<typeof spawn>) => void,
): Promise<ProcessOutcome> {
  const [program, ...args] = spec.argv;
  const start = () =>
    spawn(program!, args, {
      cwd: spec.cwd,
      env: spec.env,
      // Own process group: cancel and timeout signal the step and everything it started.
      detached: true,
      stdio: ['ignore', fifos?.stdout.write ?? 'pipe', fifos?.stderr.write ?? 'pipe'],
    });
  // Stopped while its logs and pipes were being made: nothing is started.
  if (spec.signal.aborted) return { kind: 'stopped' };
  let child: ReturnType<typeof start>;
  try {
    // The wrapper (the executor's job cgroup) must see the fork happen inside it: the spawn is synchronous.
    child = spec.spawnWrapper ? spec.spawnWrapper(start) : start();
  } catch (error) {
    return {
      kind: 'spawn-error',
      message: `cannot start ${JSON.stringify(program)}: ${(error as Error).message}`,
    };
  }
  onSpawn(child);
  if (fifos) {
    // The child has its copies; ours would keep the pipes open after the step ends.
    closeEnd(fifos.stdout, 'write');
    closeEnd(fifos.stderr, 'write');
  }
  const exited = new Promise<ProcessOutcome>((resolve) => {
    child.once('error', (error) =>
      resolve({ kind: 'spawn-error', message: `cannot start ${JSON.stringify(program)}: ${error.message}` }),
    );
    child.once('exit', (code, signal) => resolve({ kind: 'exited', code, signal }));
  });
  const pid = child.pid;
  if (pid === undefined) return await exited;
  let stopping: Promise<void> | undefined;
  const onAbort = () => {
    stopping ??= stopGroup(pid, spec.killGraceMs, exited);
  };
  spec.signal.addEventListener('abort', onAbort, { once: true });
  // A stop that came during the spawn was before this listener, which an aborted signal never calls: the
  // step's program would have run to its end (a sibling's failure under load, waiting 30 s for a `sleep`).
  if (spec.signal.aborted) onAbort();
  try {
    const outcome = await exited;
    if (stopping || spec.signal.aborted) {
      await (stopping ?? stopGroup(pid, spec.killGraceMs, exited));
      return { kind: 'stopped' };
    }
    // The step ends when its program ends; anything it left running in its group is stopped too.
    if (groupAlive(pid)) await stopGroup(pid, spec.killGraceMs, exited);
    return outcome;
  } finally {
    spec.signal.removeEventListener('abort', onAbort);
  }
}

export function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // ESRCH: the group is already gone.
  }
}

/** SIGTERM to the group, SIGKILL after `graceMs`; resolves once the group is gone (or 2 s after the KILL). */
export async function stopGroup(
  pgid: number,
  graceMs: number,
  leaderExited: Promise<unknown>,
): Promise<void> {
  signalGroup(pgid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (groupAlive(pgid) && Date.now() < deadline) await delay(25);
  if (groupAlive(pgid)) signalGroup(pgid, 'SIGKILL');
  await leaderExited;
  const killDeadline = Date.now() + 2000;
  while (groupAlive(pgid) && Date.now() < killDeadline) await delay(25);
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

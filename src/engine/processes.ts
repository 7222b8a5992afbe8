/**
 * Runs one step's program in its own process group, with output streamed straight to log files (the
 * child writes to the file descriptors; nothing is buffered here). Stopping escalates SIGTERM → SIGKILL
 * for the whole group and resolves only once the group is gone, so a canceled job leaves no process behind.
 */
import { spawn } from 'node:child_process';
import { open } from 'node:fs/promises';

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
}

export type ProcessOutcome =
  | { kind: 'exited'; code: number | null; signal: NodeJS.Signals | null }
  | { kind: 'stopped' }
  | { kind: 'spawn-error'; message: string };

export async function runProcess(spec: ProcessSpec): Promise<ProcessOutcome> {
  if (spec.signal.aborted) return { kind: 'stopped' };
  const stdout = await open(spec.stdoutPath, 'w', 0o600);
  const stderr = await open(spec.stderrPath, 'w', 0o600);
  try {
    const [program, ...args] = spec.argv;
    const start = () =>
      spawn(program!, args, {
        cwd: spec.cwd,
        env: spec.env,
        // Own process group: cancel and timeout signal the step and everything it started.
        detached: true,
        stdio: ['ignore', stdout.fd, stderr.fd],
      });
    let child: ReturnType<typeof start>;
    try {
      child = spec.spawnWrapper ? spec.spawnWrapper(start) : start();
    } catch (error) {
      return { kind: 'spawn-error', message: `cannot start ${JSON.stringify(program)}: ${(error as Error).message}` };
    }
    const exited = new Promise<ProcessOutcome>((resolve) => {
      child.once('error', (error) => resolve({ kind: 'spawn-error', message: `cannot start ${JSON.stringify(program)}: ${error.message}` }));
      child.once('exit', (code, signal) => resolve({ kind: 'exited', code, signal }));
    });
    const pid = child.pid;
    if (pid === undefined) return await exited;
    let stopping: Promise<void> | undefined;
    const onAbort = () => {
      stopping ??= stopGroup(pid, spec.killGraceMs, exited);
    };
    spec.signal.addEventListener('abort', onAbort, { once: true });
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
  } finally {
    await stdout.close();
    await stderr.close();
  }
}

function groupAlive(pgid: number): boolean {
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

async function stopGroup(pgid: number, graceMs: number, leaderExited: Promise<unknown>): Promise<void> {
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

/**
 * The executor process. The agent starts it with a clean environment and an IPC pipe as its only channel;
 * it loads the code a job needs first, says `ready`, and waits to be assigned a user. DuckDB's instance
 * (and the pages of its library that using it touches, 20 MiB resident) start only when a job first needs a
 * table: an idle executor of a user who runs no SQL stays small.
 * It never talks to the broker and holds no credential but the job tokens of its own jobs.
 */
import { writeFileSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { AgentToExecutor, coerceError, type ExecutorToAgent } from '../protocol/index.js';
import { closeInheritedFds } from './fds.js';
import { assumeIdentity, cleanEnvironment, type AssumeMessage } from './identity.js';
import { runJob } from './job-runner.js';
import { Outbox } from './outbox.js';
// Loaded before `ready` so a user's first job does not pay for it.
import { DuckDBHost, parseWorkflow, type SpawnWrapper } from '../engine/index.js';

if (!process.send) {
  process.stderr.write('steward executor: must be started by a Steward agent (no IPC channel)\n');
  process.exit(2);
}

// Before anything can spawn a step: only the standard streams and the agent's pipe may reach user code.
const strayFds = closeInheritedFds();

const running = new Map<string, AbortController>();
let identity: AssumeMessage | undefined;
let env: Record<string, string> = {};
let exiting = false;
/** Whether the process has moved into the user's workspace (with its first job; see onAssume). */
let enteredWorkspace = false;
/** The DuckDB instance of every job of this executor, started when a job first needs it. */
let duckdbHost: Promise<DuckDBHost> | undefined;

/**
 * The shared DuckDB instance's spill directory: one per executor (`temp_directory` is a setting of the
 * whole instance, which all of this user's jobs share), private to the user, removed when the executor
 * exits, and — should it have been killed — by the user's next executor (see removeStaleSpillDirs).
 */
function spillDirOf(assumed: AssumeMessage): string {
  return path.join(assumed.tempDir, `duckdb-spill-${process.pid}`);
}

/** Spill directories of this user's executors that are gone (killed, so they could not remove their own). */
async function removeStaleSpillDirs(tempDir: string): Promise<void> {
  for (const name of await readdir(tempDir).catch(() => [] as string[])) {
    const pid = /^duckdb-spill-(\d+)$/.exec(name)?.[1];
    // `duckdb-tmp`: the one spill directory of earlier versions.
    if (name !== 'duckdb-tmp' && (pid === undefined || Number(pid) === process.pid || alive(Number(pid))))
      continue;
    await rm(path.join(tempDir, name), { recursive: true, force: true }).catch(() => {});
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: a process of another user has the pid now; its directory is not ours to judge.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function startDuckDBHost(assumed: AssumeMessage): Promise<DuckDBHost> {
  const options = {
    spillDir: spillDirOf(assumed),
    memoryLimit: assumed.duckdb.memoryLimit,
    threads: assumed.duckdb.threads,
  };
  const host = DuckDBHost.create(options);
  // A failed start is retried by the next job rather than failing every job to come.
  host.catch((error: unknown) => {
    log('error', 'DuckDB could not start', { error: String(error) });
    if (duckdbHost === host) duckdbHost = undefined;
  });
  return host;
}

/**
 * Starts each step of a job inside the job's cgroup: the executor steps into it for the instant of the
 * synchronous fork (so the child is born there, and everything the child ever starts stays there), and steps
 * back into its own. Nothing else runs on this thread meanwhile. The agent made both files writable by this
 * user (cgroup.procs only); see src/agent/cgroups.ts.
 */
function cgroupSpawner(jobProcs: string, homeProcs: string): SpawnWrapper {
  return <T>(start: () => T): T => {
    const pid = String(process.pid);
    // A failure here must not start the step outside its job's cgroup: it fails the step.
    writeFileSync(jobProcs, pid);
    try {
      return start();
    } finally {
      writeFileSync(homeProcs, pid);
    }
  };
}

const outbox = new Outbox((frame) => {
  if (!process.connected) return false;
  process.send!(frame);
  return true;
});

function send(message: ExecutorToAgent): void {
  if (process.connected) outbox.send(message);
}

/**
 * stderr is a pipe to the agent. When the agent is gone, writing to it fails with EPIPE; logging that
 * failure would fail again, in a loop that starves the event loop and keeps the executor (and its steps)
 * alive. So the first failed write ends logging for good.
 */
let stderrOpen = true;
process.stderr.on('error', () => {
  stderrOpen = false;
});

function log(level: 'info' | 'error', msg: string, extra: Record<string, unknown> = {}): void {
  if (!stderrOpen) return;
  try {
    process.stderr.write(
      `${JSON.stringify({ time: new Date().toISOString(), level, pid: process.pid, msg, ...extra })}\n`,
    );
  } catch {
    stderrOpen = false;
  }
}

async function shutdown(reason: string): Promise<void> {
  if (exiting) return;
  exiting = true;
  log('info', 'executor exiting', { reason, runningJobs: running.size });
  for (const controller of running.values()) controller.abort(new Error(reason));
  // Steps kill their process groups on abort; give them a moment, then go.
  const deadline = Date.now() + 5_000;
  while (running.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  if (identity) await rm(spillDirOf(identity), { recursive: true, force: true }).catch(() => {});
  // What this turn sent (an `assume-failed`, a job's end) goes before the exit, not at the next turn.
  outbox.flush();
  process.exit(0);
}

process.on('message', (raw: unknown) => {
  const parsed = AgentToExecutor.safeParse(raw);
  if (!parsed.success) {
    log('error', 'ignoring malformed message from agent', { issue: parsed.error.issues[0]?.message });
    return;
  }
  const message = parsed.data;
  switch (message.type) {
    case 'assume':
      onAssume(message);
      return;
    case 'job':
      onJob(message);
      return;
    case 'cancel':
      running.get(message.jobId)?.abort(new Error('canceled'));
      return;
    case 'shutdown':
      void shutdown('asked by agent');
      return;
    case 'remove-job-dirs':
      onRemoveJobDirs(message.names);
      return;
  }
});

type AgentMessageOf<T extends AgentToExecutor['type']> = Extract<AgentToExecutor, { type: T }>;

/** Switches to the user, once: one user per executor, forever (never back to root, never another user). */
function onAssume(message: AgentMessageOf<'assume'>): void {
  if (identity) {
    send({ type: 'assume-failed', message: `executor already runs as ${identity.osUser}` });
    return;
  }
  try {
    const assumed = assumeIdentity(message);
    identity = message;
    env = cleanEnvironment(message, process.env);
    // Replace the environment wholesale so nothing from the launch leaks into steps.
    for (const key of Object.keys(process.env)) delete process.env[key];
    Object.assign(process.env, env);
    // The workspace may still be being made (the agent makes it while this switch runs): entered with the
    // first job, which the agent sends only once it exists.
    send({ type: 'assumed', ...assumed });
    // Proof of life on the pipe: an executor that stops pinging (stopped, stuck) is killed by the agent,
    // which then ends its jobs itself.
    if (message.heartbeatMs) setInterval(() => send({ type: 'ping' }), message.heartbeatMs).unref();
    void removeStaleSpillDirs(message.tempDir);
  } catch (error) {
    send({ type: 'assume-failed', message: (error as Error).message });
    void shutdown('identity switch failed');
  }
}

/** Runs a job as the assumed user; a crash of the runner still ends the job with a reason. */
function onJob(message: AgentMessageOf<'job'>): void {
  if (!identity) {
    send({
      type: 'finished',
      jobId: message.jobId,
      state: 'failed',
      error: { code: 'STEWARD_EXECUTOR_START_FAILED', message: 'executor has no identity yet' },
    });
    return;
  }
  if (!enteredWorkspace) {
    try {
      process.chdir(identity.workspaceDir);
      enteredWorkspace = true;
    } catch (error) {
      send({
        type: 'finished',
        jobId: message.jobId,
        state: 'failed',
        error: {
          code: 'STEWARD_EXECUTOR_START_FAILED',
          message: `cannot enter the workspace ${identity.workspaceDir}: ${(error as Error).message}`,
        },
      });
      return;
    }
  }
  const controller = new AbortController();
  running.set(message.jobId, controller);
  runJob(message, {
    identity,
    env,
    send,
    signal: controller.signal,
    duckdbHost: lazyDuckDBHost(identity),
    ...(message.cgroupProcs && identity.cgroupProcs
      ? { spawnWrapper: cgroupSpawner(message.cgroupProcs, identity.cgroupProcs) }
      : {}),
  })
    .catch((error: unknown) => {
      const normalised = coerceError(error);
      log('error', 'job crashed', { jobId: message.jobId, error: String(error) });
      send({
        type: 'finished',
        jobId: message.jobId,
        state: 'failed',
        error: { code: normalised.code, message: normalised.message },
      });
    })
    .finally(() => running.delete(message.jobId));
}

/**
 * The executor's DuckDB instance, started (as the user, so its spill files are the user's) only when a job
 * first opens its tables: `then` starts it. A job with no table (shell, python) never does.
 */
function lazyDuckDBHost(assumed: AssumeMessage): Promise<DuckDBHost> {
  const host = (): Promise<DuckDBHost> => (duckdbHost ??= startDuckDBHost(assumed));
  const lazy: Promise<DuckDBHost> = {
    then: (onFulfilled, onRejected) => host().then(onFulfilled, onRejected),
    catch: (onRejected) => host().catch(onRejected),
    finally: (onFinally) => host().finally(onFinally),
    [Symbol.toStringTag]: 'Promise',
  };
  return lazy;
}

/** Jobs the agent ended after killing this user's previous executor: their directories were left. */
function onRemoveJobDirs(names: readonly string[]): void {
  if (!identity || identity.keepJobDirs) return;
  for (const name of names) {
    if (running.has(name.slice(0, name.lastIndexOf('-')))) continue;
    void rm(path.join(identity.tempDir, name), { recursive: true, force: true }).catch(() => {});
    void rm(path.join(identity.workspaceDir, 'jobs', name), { recursive: true, force: true }).catch(() => {});
  }
}

// The agent is our parent and our only reason to live: when its pipe closes (it exited, even by SIGKILL),
// stop every job and exit, so no process keeps running as a user without supervision.
process.on('disconnect', () => void shutdown('agent disconnected'));
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('uncaughtException', (error) => {
  if ((error as NodeJS.ErrnoException).code === 'EPIPE') {
    // Our output pipe to the agent broke: the agent is gone.
    stderrOpen = false;
    void shutdown('agent gone (output pipe closed)');
    return;
  }
  log('error', 'uncaught exception', { error: error.stack ?? String(error) });
  void shutdown('uncaught exception');
});

/**
 * Runs once, as root, before `ready`: exercises the code a first job needs (workflow parsing, the HTTP
 * client) so a user's first job does not pay for loading and compiling it. It touches no file and no network
 * (a `data:` URL), and not DuckDB: SQL steps' parsing and tables start it when a job has them.
 */
async function warmUp(): Promise<void> {
  try {
    await parseWorkflow('name: warm\nsteps:\n  - id: s\n    shell: "true"\n', { format: 'yaml' });
    await (await fetch('data:text/plain,warm')).text();
  } catch (error) {
    log('info', 'warm-up skipped', { error: String(error) });
  }
}

if (strayFds.length > 0) log('info', 'closed inherited descriptors', { fds: strayFds });
await warmUp();
send({ type: 'ready', pid: process.pid });

/**
 * One Dask worker placed on this machine by a worker offer (see agent/dask-workers.ts): started by the agent
 * as root, in a cgroup of its own with the user's executor limits, before it knows its user. On `start` it
 * takes on the job's user for good (initgroups, setgid, setuid: the executor's identity switch), writes the
 * worker's TLS files 0600 into the user's job directory on this machine, and runs `dask worker` (argument
 * array, no shell, its own process group, a clean environment). It reports the worker's pid and exit on its
 * pipe, stops it on `stop`, and stops it and exits when the agent's pipe closes.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { DaskLogSink, DaskProcess, helperPythonPath, workerArgv, type DaskExit } from '../engine/index.js';
import { AgentToDaskWorkerHost, type DaskWorkerHostToAgent, type DaskWorkerTls } from '../protocol/index.js';
import { closeInheritedFds } from './fds.js';
import { assumeIdentity, cleanEnvironment } from './identity.js';

type StartMessage = Extract<AgentToDaskWorkerHost, { type: 'start' }>;

closeInheritedFds();
let worker: DaskProcess | undefined;
let running: Promise<void> | undefined;
let stopping: Promise<void> | undefined;
/** Set by `shutdown`: a worker started after it is stopped at once. */
let stopGraceMs: number | undefined;

/** Resolves once the message is written to the pipe (so an exit right after does not lose it). */
function send(message: DaskWorkerHostToAgent): Promise<void> {
  return new Promise((resolve) => {
    if (!process.connected || !process.send) return resolve();
    process.send(message, undefined, {}, () => resolve());
  });
}

process.on('message', (raw: unknown) => {
  const parsed = AgentToDaskWorkerHost.safeParse(raw);
  if (!parsed.success) return;
  if (parsed.data.type === 'start') {
    if (running) return;
    running = start(parsed.data)
      .catch((error: unknown) => send({ type: 'failed', message: (error as Error).message }))
      .finally(() => void shutdown(0));
  } else {
    void shutdown(parsed.data.graceMs);
  }
});
process.on('disconnect', () => void shutdown(3000));
process.on('SIGTERM', () => void shutdown(3000));

async function start(message: StartMessage): Promise<void> {
  const { identity, worker: spec } = message;
  const assumed = assumeIdentity(identity);
  const env = cleanEnvironment(identity, {});
  const jobDir = path.join(identity.workspaceDir, 'jobs', spec.jobDir);
  const ownDir = path.join(jobDir, 'dask-workers', spec.name);
  const scratchDir = path.join(identity.tempDir, spec.jobDir, 'dask-workers');
  const tlsDir = path.join(ownDir, 'tls');
  await mkdir(tlsDir, { recursive: true, mode: 0o700 });
  await mkdir(scratchDir, { recursive: true, mode: 0o700 });
  const tls = await writeTls(tlsDir, message.tls);
  const sink = new DaskLogSink();
  sink.attach(process.stdout);
  worker = await DaskProcess.start({
    name: spec.name,
    argv: workerArgv(
      {
        label: spec.label,
        step: spec.name,
        count: 1,
        threads: spec.threads,
        memoryBytes: spec.memoryBytes,
        schedulerAddress: spec.schedulerAddress,
        tls,
        python: spec.python,
        env: {},
        cwd: ownDir,
        scratchDir,
      },
      spec.name,
    ),
    cwd: ownDir,
    env: {
      ...env,
      PYTHONPATH: helperPythonPath(undefined),
      DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION: 'True',
    },
    sink,
  });
  if (stopGraceMs !== undefined) void worker.stop(stopGraceMs);
  await send({ type: 'started', pid: worker.pid, ...assumed });
  const exit: DaskExit = await worker.exited;
  if (!spec.keepDirs) {
    await rm(ownDir, { recursive: true, force: true }).catch(() => {});
    await rm(path.join(scratchDir, spec.name), { recursive: true, force: true }).catch(() => {});
  }
  await send({ type: 'exited', code: exit.code, signal: exit.signal });
}

/** The key is written by the worker's own user, 0600, and never replaces an existing file (`wx`). */
async function writeTls(dir: string, tls: DaskWorkerTls): Promise<{ ca: string; cert: string; key: string }> {
  const files = {
    ca: path.join(dir, 'ca.pem'),
    cert: path.join(dir, 'worker.pem'),
    key: path.join(dir, 'worker.key'),
  };
  await writeFile(files.ca, tls.ca, { mode: 0o600, flag: 'wx' });
  await writeFile(files.cert, tls.cert, { mode: 0o600, flag: 'wx' });
  await writeFile(files.key, tls.key, { mode: 0o600, flag: 'wx' });
  return files;
}

/** Stops the worker (TERM, then KILL of its group after `graceMs`), lets `start` report it, and exits. */
function shutdown(graceMs: number): Promise<void> {
  stopGraceMs ??= graceMs;
  stopping ??= (async () => {
    await worker?.stop(graceMs);
    await running;
    process.exit(0);
  })();
  return stopping;
}

void send({ type: 'ready', pid: process.pid });

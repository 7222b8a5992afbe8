/**
 * What the agent enforces itself, through a real `steward up` as root with real OS users and real cgroups:
 * a job whose step freezes its executor still ends at its time limit (or its cancel) plus the grace, with
 * its slot free for the next user; a frozen executor is found by its missed heartbeats; a setsid +
 * double-forked daemon dies with its job; a fork loop stops at the pids limit; and a second agent with the
 * same id refuses to start while the first one's job runs on.
 */
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { detectCgroups, removeCgroupParents } from '../../src/agent/index.js';
import { ApiUser } from '../support/api.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { StewardInstance, isRoot, tempDir } from '../support/steward.js';
import { until } from '../support/wait.js';

const probe = isRoot ? await detectCgroups('probe-containment', 'probe') : undefined;
if (probe) await removeCgroupParents(probe);
const hasJobCgroups = probe?.jobsParent !== undefined && probe.pidsParent !== undefined;

const PIDS_LIMIT = 128;
const GRACE_S = 3;

const workflows = [
  // $PPID of the step's shell is the executor: the step freezes it, then outlives every time limit.
  { name: 'freeze', steps: [{ id: 'freeze', shell: 'kill -STOP $PPID\nsleep 3600' }] },
  { name: 'quick', steps: [{ id: 'q', shell: 'echo done' }] },
  {
    name: 'nap',
    params: { secs: { type: 'number', default: 1 } },
    steps: [{ id: 'sleep', shell: 'sleep "$secs"' }],
  },
  {
    name: 'daemon',
    steps: [
      {
        id: 'd',
        shell: [
          // A new session, and a second fork whose parent exits: out of the step's process group for good.
          `setsid sh -c 'sleep 3600 & echo $! > "$1"' sh "$STEWARD_OUTPUT_DIR/daemon.txt" </dev/null >/dev/null 2>&1 &`,
          'while [ ! -s "$STEWARD_OUTPUT_DIR/daemon.txt" ]; do sleep 0.05; done',
          'pid=$(cat "$STEWARD_OUTPUT_DIR/daemon.txt")',
          'kill -0 "$pid" && echo alive > "$STEWARD_OUTPUT_DIR/alive.txt"',
          'ps -o sid= -p "$pid" > "$STEWARD_OUTPUT_DIR/sid.txt"; echo $$ >> "$STEWARD_OUTPUT_DIR/sid.txt"',
          'echo "$TMPDIR" > "$STEWARD_OUTPUT_DIR/tmpdir.txt"; echo x > "$TMPDIR/scratch"',
        ].join('\n'),
      },
    ],
    outputs: ['d'],
  },
  {
    name: 'forkloop',
    steps: [
      {
        id: 'f',
        python: [
          'import os, time',
          'n, err = 0, ""',
          'for _ in range(100000):',
          '    try:',
          '        pid = os.fork()',
          '    except OSError as e:',
          '        err = type(e).__name__',
          '        break',
          '    if pid == 0:',
          '        time.sleep(3600)',
          '        os._exit(0)',
          '    n += 1',
          'open(os.path.join(os.environ["STEWARD_OUTPUT_DIR"], "forks.txt"), "w").write(f"{n} {err}\\n")',
        ].join('\n'),
      },
    ],
    outputs: ['f'],
  },
];

/** A process's state letter from /proc (R, S, T for stopped, Z for a zombie), or '' when it is gone. */
async function processState(pid: number): Promise<string> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return stat ? stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) : '';
}

/** Whether a process runs (a zombie waiting for its reaper does not). */
async function running(pid: number): Promise<boolean> {
  const state = await processState(pid);
  return state !== '' && state !== 'Z';
}

const ms = (time: string | null) => (time ? Date.parse(time) : Number.NaN);

describe.runIf(hasJobCgroups)('jobs the agent ends and contains', () => {
  const osUsers = new OsUsers();
  let steward: StewardInstance;
  let scratch: string;
  let alice: TestUser;
  let bob: TestUser;
  let aliceApi: ApiUser;
  let bobApi: ApiUser;
  /** The first frozen job: its executor was killed, so its directories wait for alice's next executor. */
  let frozenJob = '';

  async function submit(api: ApiUser, workflow: string, timeoutSeconds?: number): Promise<string> {
    const { status, body } = await api.request('POST', '/api/jobs', {
      workflow,
      params: {},
      ...(timeoutSeconds ? { timeoutSeconds } : {}),
    });
    expect(status, JSON.stringify(body)).toBe(201);
    return (body as { id: string }).id;
  }

  async function result(api: ApiUser, jobId: string, name: string): Promise<string> {
    const { status, body } = await api.request('GET', `/api/jobs/${jobId}/results/${name}`);
    expect(status, String(body)).toBe(200);
    return String(body);
  }

  beforeAll(async () => {
    scratch = await tempDir('contain');
    alice = await osUsers.user('ja', { createHome: false });
    bob = await osUsers.user('jb', { createHome: false });
    const config = path.join(scratch, 'steward.yaml');
    await writeFile(
      config,
      stringify({
        agent: {
          // One slot: the next job can only run once the agent has freed the frozen job's.
          slots: 1,
          capacity: { maxJobsPerUser: 1 },
          heartbeatInterval: '300ms',
          deadlineGrace: `${GRACE_S}s`,
          // Slower than the time limit + grace below, so that the deadline (not the watchdog) ends job one.
          executorHeartbeat: { interval: '1s', misses: 12 },
          limits: { memory: '512MiB', cpus: 1, pids: PIDS_LIMIT },
        },
      }),
    );
    steward = await StewardInstance.start({ extraArgs: ['--config', config] });
    const admin = await ApiUser.login(steward.url, 'admin', steward.adminPassword);
    for (const user of [alice, bob]) await admin.createUser(user.name, 'contain-password-1');
    aliceApi = await ApiUser.login(steward.url, alice.name, 'contain-password-1');
    bobApi = await ApiUser.login(steward.url, bob.name, 'contain-password-1');
    // Each user runs workflows of their own personal space (spaces: nobody runs another's code by name).
    for (const api of [aliceApi, bobApi])
      for (const workflow of workflows) await api.push(stringify(workflow));
  }, 60_000);

  afterAll(async () => {
    await steward?.destroy();
    await osUsers.cleanup();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 30_000);

  it('ends a job that froze its executor at its time limit plus the grace, frees its slot, and runs the next user’s job', async () => {
    const frozen = await submit(aliceApi, 'freeze', 5);
    frozenJob = frozen;
    await until('the step started', async () => (await aliceApi.job(frozen)).state === 'running');
    const next = await submit(bobApi, 'quick');
    const ended = await aliceApi.waitFor(frozen, 30_000);
    expect(ended.state).toBe('failed');
    expect(ended.error?.code, ended.error?.message).toBe('STEWARD_AGENT_ENDED_JOB');
    expect(ended.error?.message).toContain('time limit of 5 s');
    expect(ended.error?.message).toContain('the executor did not answer and was killed');
    // Within the time limit plus the grace (and a second for loading and reporting).
    expect(ms(ended.finishedAt) - ms(ended.startedAt)).toBeLessThan((5 + GRACE_S + 1.5) * 1000);
    // The frozen executor is gone with everything it ran.
    await until('the frozen executor is gone', async () => !(await running(ended.executor!.pid)), 5_000);
    const after = await bobApi.waitFor(next, 30_000);
    expect(after.state, JSON.stringify(after.error)).toBe('succeeded');
    expect(ms(after.startedAt)).toBeGreaterThanOrEqual(ms(ended.finishedAt) - 100);
    // Its executor was killed before it could remove the job's TMPDIR: still there, until alice's next job.
    const userTmp = path.join(steward.dataDir, 'workspaces', alice.name, 'tmp');
    expect(await readdir(userTmp)).toContain(`${frozen}-1`);
  }, 60_000);

  it('ends a canceled job whose executor is frozen within the grace, as canceled by the agent', async () => {
    const id = await submit(aliceApi, 'freeze');
    await until('the step started', async () => (await aliceApi.job(id)).state === 'running');
    // Alice's new executor removed what the killed one left of the first frozen job.
    const userTmp = path.join(steward.dataDir, 'workspaces', alice.name, 'tmp');
    await until(
      'the left TMPDIR is removed',
      async () => !(await readdir(userTmp)).includes(`${frozenJob}-1`),
      5_000,
    );
    // The step has frozen its executor (stopped, as the kernel reports it).
    const executorPid = (await aliceApi.job(id)).executor?.pid;
    expect(executorPid).toBeDefined();
    await until('the executor is frozen', async () => (await processState(executorPid!)) === 'T', 5_000);
    const canceledAt = Date.now();
    const { status } = await aliceApi.request('POST', `/api/jobs/${id}/cancel`);
    expect(status).toBe(200);
    const ended = await aliceApi.waitFor(id, 30_000);
    expect(ended.state).toBe('canceled');
    expect(ended.error?.code, ended.error?.message).toBe('STEWARD_AGENT_ENDED_JOB');
    expect(ms(ended.finishedAt) - canceledAt).toBeLessThan((GRACE_S + 1.5) * 1000);
    const after = await bobApi.run('quick', {}, 30_000);
    expect(after.state, JSON.stringify(after.error)).toBe('succeeded');
  }, 60_000);

  it('finds an executor frozen by its job through the missed heartbeats, with no time limit and no cancel', async () => {
    const id = await submit(aliceApi, 'freeze');
    await until('the step started', async () => (await aliceApi.job(id)).state === 'running');
    const ended = await aliceApi.waitFor(id, 30_000);
    expect(ended.state).toBe('failed');
    expect(ended.error?.code, ended.error?.message).toBe('STEWARD_AGENT_ENDED_JOB');
    expect(ended.error?.message).toMatch(/unresponsive: no heartbeat on its pipe for \d+ s/);
    // 12 missed pings of 1 s, plus one check interval and the report.
    expect(ms(ended.finishedAt) - ms(ended.startedAt)).toBeLessThan(15_000);
  }, 60_000);

  it('kills a setsid + double-forked daemon when its job ends, and gives each job a TMPDIR of its own that goes with it', async () => {
    const job = await aliceApi.run('daemon', {}, 30_000);
    expect(job.state, JSON.stringify(job.error)).toBe('succeeded');
    const pid = Number((await result(aliceApi, job.id, 'daemon.txt')).trim());
    expect((await result(aliceApi, job.id, 'alive.txt')).trim()).toBe('alive');
    // It had left the step's session (so the step's process group kill could not reach it).
    const [daemonSid, stepPid] = (await result(aliceApi, job.id, 'sid.txt')).trim().split(/\s+/).map(Number);
    expect(daemonSid).not.toBe(stepPid);
    // Killed before the job's end was reported: gone (or a zombie waiting for its reaper) already.
    expect(await running(pid)).toBe(false);
    const userTmp = path.join(steward.dataDir, 'workspaces', alice.name, 'tmp');
    expect((await result(aliceApi, job.id, 'tmpdir.txt')).trim()).toBe(path.join(userTmp, `${job.id}-1`));
    await until(
      'the job TMPDIR is removed',
      async () => !(await readdir(userTmp)).includes(`${job.id}-1`),
      5_000,
    );
  }, 60_000);

  it('stops a fork loop at the pids limit, kills what it forked at the job end, and keeps serving', async () => {
    const job = await bobApi.run('forkloop', {}, 60_000);
    expect(job.state, JSON.stringify(job.error)).toBe('succeeded');
    const [count, error] = (await result(bobApi, job.id, 'forks.txt')).trim().split(' ');
    expect(error).toBe('BlockingIOError');
    expect(Number(count)).toBeGreaterThan(10);
    expect(Number(count)).toBeLessThan(PIDS_LIMIT);
    // Nothing of bob's is left running but his executor.
    const leftovers: number[] = [];
    for (const entry of await readdir('/proc')) {
      if (!/^\d+$/.test(entry) || Number(entry) === job.executor!.pid) continue;
      const status = await readFile(`/proc/${entry}/status`, 'utf8').catch(() => '');
      if (new RegExp(`^Uid:\\s+${bob.uid}\\s`, 'm').test(status) && (await running(Number(entry))))
        leftovers.push(Number(entry));
    }
    expect(leftovers).toEqual([]);
    const next = await bobApi.run('quick', {}, 30_000);
    expect(next.state, JSON.stringify(next.error)).toBe('succeeded');
  }, 90_000);

  it('refuses a second agent with the same id on this host in one line naming agent.id, while the first one’s job runs on', async () => {
    const id = await aliceApi.submit('nap', { secs: 3 });
    await until('the job is running', async () => (await aliceApi.job(id)).state === 'running');
    const config = path.join(scratch, 'same-id.yaml');
    await writeFile(config, stringify({ agent: { id: steward.agentId } }));
    const error = await StewardInstance.start({ extraArgs: ['--config', config] }).then(
      async (second) => {
        await second.destroy();
        return undefined;
      },
      (refused: Error) => refused,
    );
    expect(error?.message).toContain('steward up exited with');
    const lines = (error?.message ?? '')
      .split('\n')
      .filter((line) => line.includes('STEWARD_AGENT_ID_IN_USE'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`another agent with id "${steward.agentId}" runs on this host`);
    expect(lines[0]).toContain('set agent.id');
    const job = await aliceApi.waitFor(id, 30_000);
    expect(job.state, JSON.stringify(job.error)).toBe('succeeded');
  }, 60_000);
});

/**
 * Per-step Dask clusters through a real `steward up` as root, real OS users and Debian's real Dask: a
 * group-by over a dataset of many CSV parts matches DuckDB's; every worker runs as the submitting user with
 * the user's groups; another user's job cannot connect to the cluster (another job's certificate, or no
 * TLS); nothing of the cluster is left after the step, after a cancel, or after a lost scheduler; and a
 * worker killed mid-run is recovered by Dask itself.
 */
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { detectCgroups, removeCgroupParents } from '../../src/agent/index.js';
import { ApiUser } from '../support/api.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { StewardInstance, isRoot, tempDir } from '../support/steward.js';
import { hasDask, holdWorkflow, intrudeWorkflow, slowWorkflow } from '../support/dask.js';
import { until } from '../support/wait.js';

const probe = isRoot ? await detectCgroups('probe-dask', 'probe') : undefined;
if (probe) await removeCgroupParents(probe);
const hasJobCgroups = probe?.jobsParent !== undefined;

const PARTS = 40;
const ROWS_PER_PART = 2_500;
const PASSWORD = 'dask-password-1';

const workflows = [
  {
    name: 'groupby',
    params: { data: { type: 'string', required: true } },
    steps: [
      {
        id: 'agg',
        dask: { workers: 4, threads: 1, memory: '512MiB' },
        python: [
          'import json, os',
          'import dask.dataframe as dd',
          'import steward_dask',
          'client = steward_dask.client()',
          'out = os.environ["STEWARD_OUTPUT_DIR"]',
          'frame = dd.read_csv(os.path.join(os.environ["data"], "part-*.csv"))',
          'assert frame.npartitions >= 4, frame.npartitions',
          'grouped = frame.groupby("key").agg({"amount": ["sum", "count", "max"]}).compute()',
          'grouped.columns = ["total", "rows", "largest"]',
          'grouped.sort_index().to_csv(os.path.join(out, "groupby.csv"), index_label="key")',
          'facts = {',
          '  "uids": sorted(client.run(os.getuid).values()),',
          '  "groups": [sorted(g) for g in client.run(os.getgroups).values()],',
          '  "address": os.environ["STEWARD_DASK_SCHEDULER"],',
          '  "workers": len(client.scheduler_info()["workers"]),',
          '  "cgroups": sorted(client.run(lambda: open("/proc/self/cgroup").read()).values()),',
          '  "step_cgroup": open("/proc/self/cgroup").read(),',
          '}',
          'json.dump(facts, open(os.path.join(out, "facts.json"), "w"))',
        ].join('\n'),
      },
    ],
    outputs: ['agg'],
  },
  holdWorkflow({ workers: 1 }),
  intrudeWorkflow({ workers: 1 }),
  {
    name: 'failing',
    steps: [
      {
        id: 'fail',
        dask: { workers: 2 },
        python: [
          'import steward_dask',
          'client = steward_dask.client()',
          'assert client.submit(sum, [1, 2]).result() == 3',
          'raise SystemExit(3)',
        ].join('\n'),
      },
    ],
  },
  slowWorkflow({ workers: 3 }),
];

/** Whether a process runs (a zombie waiting for its reaper does not). */
async function running(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  if (!stat) return false;
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
}

/** Running processes of `uid`, but for `except`. */
async function processesOf(uid: number, except: number[]): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || except.includes(Number(entry))) continue;
    const status = await readFile(`/proc/${entry}/status`, 'utf8').catch(() => '');
    if (new RegExp(`^Uid:\\s+${uid}\\s`, 'm').test(status) && (await running(Number(entry))))
      found.push(Number(entry));
  }
  return found;
}

describe.runIf(isRoot && hasDask)('per-step Dask clusters as the submitting user', () => {
  const osUsers = new OsUsers();
  let steward: StewardInstance;
  let scratch: string;
  let dataDir: string;
  let alice: TestUser;
  let bob: TestUser;
  let aliceApi: ApiUser;
  let bobApi: ApiUser;
  let aliceGroup: string;

  const jobDir = (user: TestUser, jobId: string) =>
    path.join(steward.dataDir, 'workspaces', user.name, 'work', 'jobs', `${jobId}-1`);
  const daskDir = (user: TestUser, jobId: string, step: string) =>
    path.join(jobDir(user, jobId), '.steward', 'dask', step);

  /** A result's text (JSON results come back parsed: they are given back as JSON text). */
  async function result(api: ApiUser, jobId: string, name: string): Promise<string> {
    const { status, body } = await api.request('GET', `/api/jobs/${jobId}/results/${name}`);
    expect(status, JSON.stringify(body)).toBe(200);
    return typeof body === 'string' ? body : JSON.stringify(body);
  }

  /** The scheduler's address and the workers' pids, once every worker registered. */
  async function clusterOf(user: TestUser, jobId: string, step: string, workers: number) {
    const dir = daskDir(user, jobId, step);
    return until(
      `the Dask cluster of ${jobId} to be up`,
      async () => {
        const scheduler = await readFile(path.join(dir, 'scheduler.json'), 'utf8').catch(() => '');
        const events = await readFile(path.join(dir, 'events.jsonl'), 'utf8').catch(() => '');
        const pids = events
          .split('\n')
          .filter(Boolean)
          .map((line) => JSON.parse(line) as { event: string; pid?: number })
          .filter((event) => event.event === 'worker-added')
          .map((event) => event.pid!);
        if (!scheduler || pids.length < workers) return undefined;
        return { address: (JSON.parse(scheduler) as { address: string }).address, workerPids: pids };
      },
      90_000,
    );
  }

  /** The step's own output directory, readable by root while the job runs. */
  const outputFile = (user: TestUser, jobId: string, step: string, name: string) =>
    path.join(jobDir(user, jobId), '.steward', 'out', step, name);

  beforeAll(async () => {
    scratch = await tempDir('dask');
    aliceGroup = await osUsers.group('dk');
    alice = await osUsers.user('da', { createHome: false, groups: [aliceGroup] });
    bob = await osUsers.user('db', { createHome: false });
    dataDir = path.join(scratch, 'dataset');
    await mkdir(dataDir, { mode: 0o755 });
    for (let part = 0; part < PARTS; part += 1) {
      const lines = ['key,amount'];
      for (let row = 0; row < ROWS_PER_PART; row += 1) {
        const n = part * ROWS_PER_PART + row;
        lines.push(`k${(n * 7919) % 23},${(n * 104_729) % 1000}`);
      }
      await writeFile(
        path.join(dataDir, `part-${String(part).padStart(3, '0')}.csv`),
        lines.join('\n') + '\n',
      );
      await chmod(path.join(dataDir, `part-${String(part).padStart(3, '0')}.csv`), 0o644);
    }
    const config = path.join(scratch, 'steward.yaml');
    await writeFile(
      config,
      stringify({
        agent: {
          slots: 2,
          heartbeatInterval: '300ms',
          // Dask threads count against pids; four workers, a scheduler and the step fit well in this.
          limits: { memory: '4GiB', pids: 4096 },
        },
      }),
    );
    steward = await StewardInstance.start({ extraArgs: ['--config', config] });
    const admin = await ApiUser.login(steward.url, 'admin', steward.adminPassword);
    for (const user of [alice, bob]) await admin.createUser(user.name, PASSWORD);
    aliceApi = await ApiUser.login(steward.url, alice.name, PASSWORD);
    bobApi = await ApiUser.login(steward.url, bob.name, PASSWORD);
    for (const api of [aliceApi, bobApi])
      for (const workflow of workflows) await api.push(stringify(workflow));
  }, 60_000);

  afterAll(async () => {
    await steward?.destroy();
    await osUsers.cleanup();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 30_000);

  it('computes a group-by over many CSV parts on four workers running as the user, matching DuckDB, and leaves no Dask process behind', async () => {
    const job = await aliceApi.run('groupby', { data: dataDir }, 180_000);
    expect(job.state, JSON.stringify(job.error)).toBe('succeeded');

    const duckdb = await DuckDBInstance.create(':memory:');
    const connection = await duckdb.connect();
    const reader = await connection.runAndReadAll(
      `SELECT key, sum(amount)::BIGINT AS total, count(*)::BIGINT AS rows, max(amount)::BIGINT AS largest
       FROM read_csv('${path.join(dataDir, 'part-*.csv')}') GROUP BY key ORDER BY key`,
    );
    const expected = reader
      .getRowsJS()
      .map((row) => row.map((value) => String(value as string | bigint)).join(','));
    connection.closeSync();
    const lines = (await result(aliceApi, job.id, 'groupby.csv')).trim().split('\n');
    expect(lines[0]).toBe('key,total,rows,largest');
    expect(lines.slice(1)).toEqual(expected);
    expect(expected).toHaveLength(23);

    const facts = JSON.parse(await result(aliceApi, job.id, 'facts.json')) as {
      uids: number[];
      groups: number[][];
      address: string;
      workers: number;
      cgroups: string[];
      step_cgroup: string;
    };
    expect(facts.workers).toBe(4);
    expect(facts.uids).toEqual([alice.uid, alice.uid, alice.uid, alice.uid]);
    const groupGid = Number(
      execFileSync('getent', ['group', aliceGroup], { encoding: 'utf8' }).split(':')[2],
    );
    for (const groups of facts.groups) expect(groups).toContain(groupGid);
    expect(facts.address).toMatch(/^tls:\/\/127\.0\.0\.1:\d+$/);
    // Inside the job's cgroup, with the step (so within the user's limits on the machine).
    expect(facts.cgroups).toEqual(Array(4).fill(facts.step_cgroup));
    if (hasJobCgroups) expect(facts.step_cgroup).toContain('/job-');

    // The step's log holds the Dask processes' lines (bounded with it).
    const { body: log } = await aliceApi.request('GET', `/api/jobs/${job.id}/logs/agg/stderr`);
    expect(String(log)).toContain('[dask scheduler]');
    expect(String(log)).toContain('[dask worker-4]');
    // Nothing of alice runs but her executor.
    expect(await processesOf(alice.uid, [job.executor!.pid])).toEqual([]);
  }, 240_000);

  it('refuses another user’s job that has the scheduler’s address, with its own job certificate or without TLS', async () => {
    const gate = path.join(scratch, 'gate');
    await writeFile(gate, '');
    await chmod(gate, 0o644);
    const holder = await aliceApi.submit('hold', { gate });
    const { address } = await clusterOf(alice, holder, 'hold', 1);
    // The job's certificates and keys: the user's own files, 0600, in a 0700 directory of the job.
    const tls = path.join(daskDir(alice, holder, 'hold'), 'tls');
    expect((await stat(tls)).mode & 0o777).toBe(0o700);
    for (const name of ['ca.pem', 'scheduler.key', 'worker.key', 'client.key', 'client.pem']) {
      const info = await stat(path.join(tls, name));
      expect({ name, uid: info.uid, mode: info.mode & 0o777 }).toEqual({ name, uid: alice.uid, mode: 0o600 });
    }
    const intruder = await bobApi.run('intrude', { target: address }, 180_000);
    await rm(gate);
    expect(intruder.state, JSON.stringify(intruder.error)).toBe('succeeded');
    const report = JSON.parse(await result(bobApi, intruder.id, 'report.json')) as Record<string, string>;
    // Refused by the TLS handshake: the peer's certificate is not of this job's CA; a plain TCP client
    // never completes the handshake the scheduler expects.
    expect(report.other_job_certificate).toMatch(/^refused: .*certificate/i);
    expect(report.no_tls).toMatch(/^refused: .*handshake/i);
    // The same client code reaches bob's own job's cluster: the refusals are the certificates' doing.
    expect(report.own_cluster).toBe('connected');
    const held = await aliceApi.waitFor(holder, 60_000);
    expect(held.state, JSON.stringify(held.error)).toBe('succeeded');
    expect(await processesOf(bob.uid, [intruder.executor!.pid])).toEqual([]);
  }, 240_000);

  it('stops every process of the cluster when a job is canceled mid-computation', async () => {
    const id = await aliceApi.submit('slow', { seconds: 60 });
    const { workerPids } = await clusterOf(alice, id, 'slow', 3);
    await until('the computation started', async () =>
      readFile(outputFile(alice, id, 'slow', 'started')).then(
        () => true,
        () => false,
      ),
    );
    const executorPid = (await aliceApi.job(id)).executor!.pid;
    expect(await processesOf(alice.uid, [executorPid])).toEqual(expect.arrayContaining(workerPids));
    const { status } = await aliceApi.request('POST', `/api/jobs/${id}/cancel`);
    expect(status).toBe(200);
    const ended = await aliceApi.waitFor(id, 60_000);
    expect(ended.state).toBe('canceled');
    for (const pid of workerPids) expect(await running(pid)).toBe(false);
    expect(await processesOf(alice.uid, [executorPid])).toEqual([]);
  }, 240_000);

  it('finishes the step through Dask’s own recovery when one worker is killed mid-run', async () => {
    const id = await aliceApi.submit('slow', { seconds: 12 });
    const { workerPids } = await clusterOf(alice, id, 'slow', 3);
    await until('the computation started', async () =>
      readFile(outputFile(alice, id, 'slow', 'started')).then(
        () => true,
        () => false,
      ),
    );
    process.kill(workerPids[0]!, 'SIGKILL');
    const ended = await aliceApi.waitFor(id, 120_000);
    expect(ended.state, JSON.stringify(ended.error)).toBe('succeeded');
    expect((await result(aliceApi, id, 'total.txt')).trim()).toBe(String(4324));
    expect(await processesOf(alice.uid, [ended.executor!.pid])).toEqual([]);
  }, 240_000);

  it('stops the cluster when the step fails, and when the job’s time limit ends it', async () => {
    const failed = await aliceApi.run('failing', {}, 120_000);
    expect(failed.state).toBe('failed');
    expect(failed.error?.code, failed.error?.message).toBe('STEWARD_STEP_FAILED');
    expect(failed.error?.message).toContain('exited with code 3');
    expect(await processesOf(alice.uid, [failed.executor!.pid])).toEqual([]);

    const { status, body } = await aliceApi.request('POST', '/api/jobs', {
      workflow: 'slow',
      params: { seconds: 600 },
      timeoutSeconds: 30,
    });
    expect(status, JSON.stringify(body)).toBe(201);
    const id = (body as { id: string }).id;
    const { workerPids } = await clusterOf(alice, id, 'slow', 3);
    const ended = await aliceApi.waitFor(id, 90_000);
    expect(ended.state).toBe('failed');
    expect(ended.error?.code, ended.error?.message).toBe('STEWARD_STEP_TIMEOUT');
    for (const pid of workerPids) expect(await running(pid)).toBe(false);
    expect(await processesOf(alice.uid, [ended.executor!.pid])).toEqual([]);
  }, 240_000);

  it('fails the step naming the lost scheduler when the scheduler dies, and stops the workers', async () => {
    const id = await aliceApi.submit('slow', { seconds: 60 });
    const { workerPids } = await clusterOf(alice, id, 'slow', 3);
    const schedulerPid = await until('the scheduler pid', async () => {
      const pids = await processesOf(alice.uid, [...workerPids, (await aliceApi.job(id)).executor?.pid ?? 0]);
      for (const pid of pids) {
        const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
        if (cmdline.includes('dask_scheduler')) return pid;
      }
      return undefined;
    });
    process.kill(schedulerPid, 'SIGKILL');
    const ended = await aliceApi.waitFor(id, 60_000);
    expect(ended.state).toBe('failed');
    expect(ended.error?.code, ended.error?.message).toBe('STEWARD_DASK_SCHEDULER_LOST');
    expect(ended.error?.message).toContain('killed by SIGKILL');
    for (const pid of workerPids) expect(await running(pid)).toBe(false);
    expect(await processesOf(alice.uid, [ended.executor!.pid])).toEqual([]);
  }, 240_000);
});

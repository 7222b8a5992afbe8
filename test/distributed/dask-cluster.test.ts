/**
 * A step's Dask cluster spread over the agents of the job's cluster, through real RabbitMQ (a private vhost),
 * a real server, two real agents with different ids in one cluster, real OS users and Debian's Dask: the
 * workers are placed by signed worker offers that either agent may take by its capacity, run as the
 * submitting user on both agents, compute a group-by that matches DuckDB's, refuse another user's job that
 * has the scheduler's address, leave no process behind after the step or a cancel, survive a killed worker
 * through Dask's own recovery, and a step asking for more workers than the cluster holds fails with
 * STEWARD_DASK_NO_ROOM after the server's load timeout, naming how many were placed.
 */
import { chmod, mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DaskWorkerInfo, type JobDetail } from '../../src/protocol/index.js';
import { ApiUser } from '../support/api.js';
import { Cluster, tearDownCluster } from '../support/distributed.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { createVhost } from '../support/rabbitmq.js';
import { isRoot, tempDir } from '../support/steward.js';
import { hasDask, holdWorkflow, intrudeWorkflow, slowWorkflow } from '../support/dask.js';
import { until } from '../support/wait.js';

const ADMIN_PASSWORD = 'admin-password-for-dask-cluster';
const PASSWORD = 'dask-cluster-password-1';
const PARTS = 24;
const ROWS_PER_PART = 2_000;

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
          'grouped = frame.groupby("key").agg({"amount": ["sum", "count", "max"]}).compute()',
          'grouped.columns = ["total", "rows", "largest"]',
          'grouped.sort_index().to_csv(os.path.join(out, "groupby.csv"), index_label="key")',
          'facts = {"uids": sorted(client.run(os.getuid).values()),',
          '         "workers": len(client.scheduler_info()["workers"])}',
          'json.dump(facts, open(os.path.join(out, "facts.json"), "w"))',
        ].join('\n'),
      },
    ],
    outputs: ['agg'],
  },
  holdWorkflow({ workers: 2, memory: '512MiB' }),
  intrudeWorkflow({ workers: 1, memory: '512MiB' }),
  slowWorkflow({ workers: 3, threads: 1, memory: '512MiB' }),
  {
    name: 'greedy',
    steps: [
      {
        id: 'greedy',
        dask: { workers: 8, memory: '512MiB' },
        python: 'import steward_dask\nsteward_dask.client()\n',
      },
    ],
  },
];

/** Whether a process runs (a zombie waiting for its reaper does not). */
async function running(pid: number): Promise<boolean> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return text !== '' && text.slice(text.lastIndexOf(')') + 2, text.lastIndexOf(')') + 3) !== 'Z';
}

/** Running processes of `uid` whose command line mentions `word` (Dask's are `…distributed.cli.dask_…`). */
async function processesOf(uid: number, word = 'dask'): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const status = await readFile(`/proc/${entry}/status`, 'utf8').catch(() => '');
    if (!new RegExp(`^Uid:\\s+${uid}\\s`, 'm').test(status)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(word) && (await running(Number(entry))))
      found.push(`${entry} ${cmdline.replaceAll('\0', ' ').slice(0, 200)}`);
  }
  return found;
}

describe.runIf(isRoot && hasDask)('a Dask cluster across the agents of a cluster', () => {
  const osUsers = new OsUsers();
  let vhost = '';
  let cluster: Cluster | undefined;
  let scratch: string;
  let dataDir: string;
  let alice: TestUser;
  let bob: TestUser;
  let aliceApi: ApiUser;
  let bobApi: ApiUser;

  async function workersOf(api: ApiUser, id: string): Promise<DaskWorkerInfo[]> {
    const { status, body } = await api.request('GET', `/api/jobs/${id}/dask-workers`);
    expect(status, JSON.stringify(body)).toBe(200);
    return DaskWorkerInfo.array().parse((body as { workers: unknown }).workers);
  }

  async function startedWorkers(api: ApiUser, id: string, count: number): Promise<DaskWorkerInfo[]> {
    return until(
      `${count} Dask workers of ${id} to start`,
      async () => {
        const workers = (await workersOf(api, id)).filter((worker) => worker.state === 'started');
        return workers.length >= count && workers;
      },
      90_000,
      100,
    );
  }

  async function result(api: ApiUser, id: string, name: string): Promise<string> {
    const { status, body } = await api.request('GET', `/api/jobs/${id}/results/${name}`);
    expect(status, JSON.stringify(body)).toBe(200);
    return typeof body === 'string' ? body : JSON.stringify(body);
  }

  /** The job's directory on the agent that runs it. */
  function jobDir(job: JobDetail, user: TestUser): string {
    const name = [...cluster!.agents.keys()].find((agent) => cluster!.agentId(agent) === job.agentId)!;
    return path.join(cluster!.agentDir(name), 'workspaces', user.name, 'work', 'jobs', `${job.id}-1`);
  }

  beforeAll(async () => {
    scratch = await tempDir('dask-cluster');
    alice = await osUsers.user('dca', { createHome: false });
    bob = await osUsers.user('dcb', { createHome: false });
    dataDir = path.join(scratch, 'dataset');
    await mkdir(dataDir, { mode: 0o755 });
    for (let part = 0; part < PARTS; part += 1) {
      const lines = ['key,amount'];
      for (let row = 0; row < ROWS_PER_PART; row += 1) {
        const n = part * ROWS_PER_PART + row;
        lines.push(`k${(n * 7919) % 17},${(n * 104_729) % 1000}`);
      }
      const file = path.join(dataDir, `part-${String(part).padStart(3, '0')}.csv`);
      await writeFile(file, lines.join('\n') + '\n');
      await chmod(file, 0o644);
    }
    vhost = await createVhost('dask-cluster');
    // A short load timeout: the step asking for too many workers fails after it.
    cluster = await Cluster.start({ vhost, server: { loadTimeout: '20s' }, adminPassword: ADMIN_PASSWORD });
    const admin = await ApiUser.login(cluster.url, 'admin', ADMIN_PASSWORD);
    for (const user of [alice, bob]) await admin.createUser(user.name, PASSWORD);
    aliceApi = await ApiUser.login(cluster.url, alice.name, PASSWORD);
    bobApi = await ApiUser.login(cluster.url, bob.name, PASSWORD);
    for (const api of [aliceApi, bobApi])
      for (const workflow of workflows) await api.push(stringify(workflow));
    // Three slots each: the job's agent holds the job and at most two workers, so four spread over both.
    for (const name of ['east', 'west'])
      await cluster.startAgent(name, {
        slots: 3,
        idleTimeout: '5s',
        limits: { memory: '2GiB', pids: 4096 },
      });
  }, 120_000);

  afterAll(async () => {
    await tearDownCluster(cluster, osUsers, vhost);
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 60_000);

  it('computes a group-by on four workers spread over both agents as the user, matching DuckDB, and leaves no Dask process', async () => {
    const job = await aliceApi.run('groupby', { data: dataDir }, 120_000);
    expect(job.state, JSON.stringify(job.error)).toBe('succeeded');

    const duckdb = await DuckDBInstance.create(':memory:');
    const connection = await duckdb.connect();
    const reader = await connection.runAndReadAll(
      `SELECT key, sum(amount)::BIGINT, count(*)::BIGINT, max(amount)::BIGINT
       FROM read_csv('${path.join(dataDir, 'part-*.csv')}') GROUP BY key ORDER BY key`,
    );
    const expected = reader
      .getRowsJS()
      .map((row) => row.map((value) => String(value as string | bigint)).join(','));
    connection.closeSync();
    const lines = (await result(aliceApi, job.id, 'groupby.csv')).trim().split('\n');
    expect(lines[0]).toBe('key,total,rows,largest');
    expect(lines.slice(1)).toEqual(expected);
    expect(expected).toHaveLength(17);

    const facts = JSON.parse(await result(aliceApi, job.id, 'facts.json')) as {
      uids: number[];
      workers: number;
    };
    expect(facts.workers).toBe(4);
    expect(facts.uids).toEqual([alice.uid, alice.uid, alice.uid, alice.uid]);

    // Job detail: four workers, on both agents, as alice, each stopped with the step.
    const workers = await until('the workers reported exited', async () => {
      const all = await workersOf(aliceApi, job.id);
      return all.every((worker) => worker.state === 'exited') && all;
    });
    expect(workers).toHaveLength(4);
    expect(new Set(workers.map((worker) => worker.agent))).toEqual(
      new Set([cluster!.agentId('east'), cluster!.agentId('west')]),
    );
    for (const worker of workers) {
      expect(worker).toMatchObject({ uid: alice.uid, threads: 1, memoryBytes: 512 * 1024 * 1024 });
      expect(worker.pid).toBeGreaterThan(0);
      expect(worker.peakRssBytes).toBeGreaterThan(0);
      expect(await running(worker.pid!)).toBe(false);
    }
    let left: string[] = [];
    await until(
      () => `no Dask process of alice left: ${left.join('; ')}`,
      async () => (left = await processesOf(alice.uid)).length === 0,
    );

    // The step's log holds the scheduler's lines and, through the server, every worker's, on either agent.
    const { body: log } = await aliceApi.request('GET', `/api/jobs/${job.id}/logs/agg/stderr`);
    expect(String(log)).toContain('[dask scheduler]');
    for (const worker of workers)
      expect(String(log)).toContain(`[dask worker-${worker.index}@${worker.agent}]`);
  }, 180_000);

  it('refuses another user’s job that has the scheduler’s address, on either agent', async () => {
    const gate = path.join(scratch, 'gate');
    await writeFile(gate, '');
    await chmod(gate, 0o644);
    const holder = await aliceApi.submit('hold', { gate });
    const placed = await startedWorkers(aliceApi, holder, 2);
    const held = await aliceApi.job(holder);
    const schedulerFile = path.join(jobDir(held, alice), '.steward', 'dask', 'hold', 'scheduler.json');
    const { address } = JSON.parse(await readFile(schedulerFile, 'utf8')) as { address: string };
    // Reachable from other machines: not the loopback address.
    expect(address).not.toMatch(/^tls:\/\/127\./);
    // A worker's key on its agent: alice's own file, 0600.
    const remote = placed.find((worker) => worker.agent !== held.agentId) ?? placed[0]!;
    const remoteName = remote.agent === cluster!.agentId('east') ? 'east' : 'west';
    const key = path.join(
      cluster!.agentDir(remoteName),
      'workspaces',
      alice.name,
      'work',
      'jobs',
      `${holder}-1`,
      'dask-workers',
      `hold-worker-${remote.index}`,
      'tls',
      'worker.key',
    );
    const info = await stat(key);
    expect({ uid: info.uid, mode: info.mode & 0o777 }).toEqual({ uid: alice.uid, mode: 0o600 });

    const intruder = await bobApi.run('intrude', { target: address }, 120_000);
    await rm(gate);
    expect(intruder.state, JSON.stringify(intruder.error)).toBe('succeeded');
    const report = JSON.parse(await result(bobApi, intruder.id, 'report.json')) as Record<string, string>;
    expect(report.other_job_certificate).toMatch(/^refused: .*certificate/i);
    expect(report.own_cluster).toBe('connected');
    const ended = await aliceApi.waitFor(holder, 60_000);
    expect(ended.state, JSON.stringify(ended.error)).toBe('succeeded');
    await until(
      'no Dask process of either user',
      async () => (await processesOf(alice.uid)).length + (await processesOf(bob.uid)).length === 0,
    );
  }, 180_000);

  it('stops every worker on both agents when the job is canceled mid-computation', async () => {
    const id = await aliceApi.submit('slow', { seconds: 60 });
    const workers = await startedWorkers(aliceApi, id, 3);
    const job = await aliceApi.job(id);
    await until(
      'the computation started',
      async () =>
        stat(path.join(jobDir(job, alice), '.steward', 'out', 'slow', 'started')).then(
          () => true,
          () => false,
        ),
      // Workers registered; the step's program still has to start and connect (slow on a loaded machine).
      90_000,
    );
    for (const worker of workers) expect(await running(worker.pid!)).toBe(true);
    const { status } = await aliceApi.request('POST', `/api/jobs/${id}/cancel`);
    expect(status).toBe(200);
    expect((await aliceApi.waitFor(id, 60_000)).state).toBe('canceled');
    await until(
      'the canceled job’s workers gone',
      async () => {
        for (const worker of workers) if (await running(worker.pid!)) return false;
        return (await processesOf(alice.uid)).length === 0;
      },
      30_000,
    );
  }, 120_000);

  it('finishes the step through Dask’s own recovery when one worker is killed mid-run', async () => {
    const id = await aliceApi.submit('slow', { seconds: 12 });
    const workers = await startedWorkers(aliceApi, id, 3);
    const job = await aliceApi.job(id);
    await until(
      'the computation started',
      async () =>
        stat(path.join(jobDir(job, alice), '.steward', 'out', 'slow', 'started')).then(
          () => true,
          () => false,
        ),
      // Workers registered; the step's program still has to start and connect (slow on a loaded machine).
      90_000,
    );
    process.kill(workers[0]!.pid!, 'SIGKILL');
    const ended = await aliceApi.waitFor(id, 90_000);
    expect(ended.state, JSON.stringify(ended.error)).toBe('succeeded');
    expect((await result(aliceApi, id, 'total.txt')).trim()).toBe(String(4324));
    await until('no Dask process left', async () => (await processesOf(alice.uid)).length === 0);
  }, 120_000);

  it('fails a step asking for more workers than the cluster holds after the load timeout, naming how many were placed', async () => {
    const job = await aliceApi.run('greedy', {}, 90_000);
    expect(job.state).toBe('failed');
    expect(job.error?.code, job.error?.message).toBe('STEWARD_DASK_NO_ROOM');
    expect(job.error?.message).toMatch(/placed [0-7] of 8 Dask workers .* within 20s/);
    expect(job.error?.message).toContain('no free slot');
    await until('no Dask process left', async () => (await processesOf(alice.uid)).length === 0);
  }, 120_000);
});

/**
 * The whole path on one machine, through the real CLI against a real `steward up`: push, run with params,
 * wait, fetch results, check values; as root, jobs of two OS users created here run with their own uid and
 * supplementary groups. Then bad input, cancellation and a restart.
 */
import { readFile, readdir, writeFile, mkdir, chmod, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { CliUser, StewardInstance, isRoot, repoRoot, tempDir } from '../support/steward.js';
import { until } from '../support/wait.js';

interface JobJson {
  id: string;
  state: string;
  error: { code: string; message: string } | null;
  executor: { uid: number; gid: number; groups: number[]; osUser: string } | null;
  steps?: { id: string; state: string; message: string | null }[];
}

let steward: StewardInstance;
let admin: CliUser;
let alice: CliUser;
let bob: CliUser;
const osUsers = new OsUsers();
let aliceOs: TestUser | undefined;
let bobOs: TestUser | undefined;
let scratch: string;

function parseJson<T>(text: string): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new Error(`not JSON: ${text.slice(0, 500)}`);
  }
}

async function runJob(
  user: CliUser,
  args: string[],
): Promise<{ code: number; job: JobJson; stderr: string }> {
  const result = await user.run(['run', ...args, '--wait', '--json']);
  return { code: result.code, job: parseJson<JobJson>(result.stdout), stderr: result.stderr };
}

async function writeWorkflow(name: string, text: string): Promise<string> {
  const file = path.join(scratch, `${name}.yaml`);
  await writeFile(file, text);
  return file;
}

beforeAll(async () => {
  scratch = await tempDir('e2e');
  steward = await StewardInstance.start();
  admin = await CliUser.create('admin', steward.url);
  await admin.login(steward.adminPassword);
  let aliceName = 'alice';
  let bobName = 'bob';
  if (isRoot) {
    const analysts = await osUsers.group('ana');
    const finance = await osUsers.group('fin');
    aliceOs = await osUsers.user('al', { groups: [analysts, finance] });
    bobOs = await osUsers.user('bo', { groups: [analysts], createHome: false });
    aliceName = aliceOs.name;
    bobName = bobOs.name;
  }
  for (const name of [aliceName, bobName]) {
    const added = await admin.run(['user', 'add', name, '--password-stdin'], { input: `${name}-password` });
    expect(added.code, added.stderr).toBe(0);
  }
  alice = await CliUser.create(aliceName, steward.url);
  bob = await CliUser.create(bobName, steward.url);
  await alice.login(`${aliceName}-password`);
  await bob.login(`${bobName}-password`);
}, 120_000);

afterAll(async () => {
  await steward?.destroy();
  for (const user of [admin, alice, bob]) await user?.cleanup();
  await osUsers.cleanup();
  if (scratch) await rm(scratch, { recursive: true, force: true });
}, 60_000);

describe('steward up, end to end through the CLI', () => {
  it('pushes the sales report, runs it with a parameter, and returns correct results', async () => {
    const pushed = await alice.run(['workflow', 'push', 'examples/sales-report.yaml']);
    expect(pushed.code, pushed.stderr).toBe(0);
    expect(pushed.stdout).toMatch(/sales-report@\d+/);

    const { code, job, stderr } = await runJob(alice, [
      'sales-report',
      '-p',
      'region=US',
      '-p',
      'min_units=5',
    ]);
    expect(job.state, `${stderr}\n${JSON.stringify(job)}`).toBe('succeeded');
    expect(code).toBe(0);

    const out = path.join(scratch, 'out-sales');
    const fetched = await alice.run(['results', job.id, '--out', out]);
    expect(fetched.code, fetched.stderr).toBe(0);
    const files = (await readdir(out)).sort();
    expect(files).toEqual(
      expect.arrayContaining([
        'by_product.csv',
        'by_product.parquet',
        'by_month.csv',
        'by_month.parquet',
        'sales_US.csv',
        'summary.txt',
      ]),
    );

    // Expected figures, computed here from the shipped data.
    const lines = (await readFile(path.join(repoRoot, 'examples/data/sales.csv'), 'utf8'))
      .trim()
      .split('\n')
      .slice(1);
    const expected = new Map<string, { orders: number; units: number; revenue: number }>();
    for (const line of lines) {
      const [day, region, product, units, amount] = line.split(',');
      if (region !== 'US' || day! < '2026-01-01' || Number(units) < 5) continue;
      const entry = expected.get(product!) ?? { orders: 0, units: 0, revenue: 0 };
      entry.orders += 1;
      entry.units += Number(units);
      entry.revenue += Number(amount);
      expected.set(product!, entry);
    }
    const csv = (await readFile(path.join(out, 'by_product.csv'), 'utf8')).trim().split('\n');
    expect(csv[0]).toBe('product,orders,units,revenue');
    const actual = new Map(
      csv.slice(1).map((row) => {
        const [product, orders, units, revenue] = row.split(',');
        return [product!, { orders: Number(orders), units: Number(units), revenue: Number(revenue) }];
      }),
    );
    expect([...actual.keys()].sort()).toEqual([...expected.keys()].sort());
    for (const [product, figures] of expected) {
      expect(actual.get(product)!.orders).toBe(figures.orders);
      expect(actual.get(product)!.units).toBe(figures.units);
      expect(actual.get(product)!.revenue).toBeCloseTo(figures.revenue, 1);
    }
    const summary = await readFile(path.join(out, 'summary.txt'), 'utf8');
    expect(summary).toContain('region: US');
    expect(summary).toContain(`products: ${expected.size}`);

    const logs = await alice.run(['logs', job.id]);
    expect(logs.code, logs.stderr).toBe(0);
    expect(logs.stdout).toContain('summary written for');
  });

  it("runs each user's job as that user's OS account with its supplementary groups", async () => {
    for (const [user, os] of [
      [alice, aliceOs],
      [bob, bobOs],
    ] as const) {
      // Each user runs `whoami` from their own personal space.
      const pushed = await user.run(['workflow', 'push', 'examples/whoami.yaml']);
      expect(pushed.code, pushed.stderr).toBe(0);
      const { job, stderr } = await runJob(user, ['whoami', '-p', `note=from-${user.name}`]);
      expect(job.state, stderr).toBe('succeeded');
      const out = path.join(scratch, `out-whoami-${user.name}`);
      expect((await user.run(['results', job.id, '--out', out])).code).toBe(0);
      const id = await readFile(path.join(out, 'id.txt'), 'utf8');
      const env = await readFile(path.join(out, 'env.txt'), 'utf8');
      expect(env).toContain(`note=from-${user.name}`);
      expect(env).not.toMatch(/STEWARD_ADMIN_PASSWORD|STEWARD_TOKEN|jobToken|stw_/);
      if (isRoot && os) {
        expect(id).toContain(`uid=${os.uid}(${os.name})`);
        expect(id).toContain(`gid=${os.gid}(${os.name})`);
        for (const group of os.groups) expect(id).toContain(`(${group})`);
        expect(job.executor?.uid).toBe(os.uid);
        expect(job.executor?.osUser).toBe(os.name);
      } else {
        expect(id).toContain(`uid=${process.getuid!()}(`);
      }
    }
  });

  it('refuses invalid workflows at push with a message naming the step, and keeps serving', async () => {
    const cases: [string, string, RegExp][] = [
      [
        'cycle',
        'name: cyc\nsteps:\n  - id: a\n    sql: SELECT * FROM b\n  - id: b\n    sql: SELECT * FROM a\n',
        /cycle/i,
      ],
      ['unknown-table', 'name: unk\nsteps:\n  - id: a\n    sql: SELECT * FROM salez\n', /salez/],
      [
        'duplicate',
        'name: dup\nsteps:\n  - id: a\n    sql: SELECT 1\n  - id: a\n    sql: SELECT 2\n',
        /duplicate/i,
      ],
      [
        'bad-param',
        'name: badp\nparams:\n  n: {type: integer, default: "ten"}\nsteps:\n  - id: a\n    sql: SELECT $n\n',
        /params\.n/,
      ],
    ];
    for (const [name, text, pattern] of cases) {
      const file = await writeWorkflow(name, text);
      const result = await alice.run(['workflow', 'push', file]);
      expect(result.code, name).not.toBe(0);
      expect(result.stdout + result.stderr, name).toMatch(pattern);
      expect(result.stderr, name).not.toMatch(/\n\s+at /);
    }
    const badParam = await alice.run(['run', 'sales-report', '-p', 'min_units=many', '--wait']);
    expect(badParam.code).not.toBe(0);
    expect(badParam.stderr).toMatch(/STEWARD_PARAMS_INVALID.*min_units/);
    const health = await fetch(`${steward.url}/api/health`);
    expect(health.status).toBe(200);
  });

  it('ends jobs that fail at run time as failed, naming the step and the cause', async () => {
    const cases: [string, string, string, RegExp][] = [
      [
        'missing-file',
        'name: missing-file\nsteps:\n  - id: data\n    read: /nonexistent/steward-test/no/such/file.csv\n',
        'data',
        /file\.csv/,
      ],
      [
        'sql-error',
        "name: sql-error\nsteps:\n  - id: boom\n    sql: SELECT CAST('abc' AS INTEGER) AS n\n",
        'boom',
        /abc|convert|cast/i,
      ],
      [
        'script-exit',
        'name: script-exit\nsteps:\n  - id: fails\n    shell: |\n      echo about to fail >&2\n      exit 3\n',
        'fails',
        /code 3/,
      ],
    ];
    for (const [name, text, step, pattern] of cases) {
      const file = await writeWorkflow(name, text);
      const pushed = await alice.run(['workflow', 'push', file]);
      expect(pushed.code, pushed.stderr).toBe(0);
      const { code, job } = await runJob(alice, [name]);
      expect(code, name).not.toBe(0);
      expect(job.state, name).toBe('failed');
      expect(job.error?.message, name).toContain(step);
      expect(job.error?.message, name).toMatch(pattern);
    }
    const logs = await alice.run(['jobs', '--json']);
    expect(logs.code).toBe(0);
  });

  it('cancels a running job and leaves none of its processes behind', async () => {
    const pidDir = path.join(scratch, 'pids');
    await mkdir(pidDir, { recursive: true });
    await chmod(pidDir, 0o777);
    const pidFile = path.join(pidDir, 'sleepers');
    const file = await writeWorkflow(
      'sleeper',
      `name: sleeper\nsteps:\n  - id: nap\n    shell: |\n      sleep 300 &\n      echo $! >> ${pidFile}\n      echo $$ >> ${pidFile}\n      wait\n`,
    );
    expect((await alice.run(['workflow', 'push', file])).code).toBe(0);
    const submitted = await alice.run(['run', 'sleeper', '--json']);
    expect(submitted.code, submitted.stderr).toBe(0);
    const jobId = parseJson<JobJson>(submitted.stdout).id;
    const pids = await until(
      'both sleepers to start',
      async () => {
        const lines = (await readFile(pidFile, 'utf8').catch(() => '')).trim().split('\n').filter(Boolean);
        return lines.length === 2 ? lines.map(Number) : undefined;
      },
      30_000,
      100,
    );
    expect(pids).toHaveLength(2);
    const canceled = await alice.run(['cancel', jobId, '--wait', '--json']);
    expect(canceled.code, canceled.stderr).toBe(0);
    const job = parseJson<JobJson>((await alice.run(['job', jobId, '--json'])).stdout);
    expect(job.state).toBe('canceled');
    for (const pid of pids) {
      expect(() => process.kill(pid, 0), `process ${pid} still alive`).toThrow();
    }
  });

  it('shows users only their own jobs', async () => {
    const mine = parseJson<{ jobs: JobJson[] } | JobJson[]>((await bob.run(['jobs', '--json'])).stdout);
    const list = Array.isArray(mine) ? mine : mine.jobs;
    const aliceJobs = parseJson<{ jobs: JobJson[] } | JobJson[]>(
      (await alice.run(['jobs', '--json'])).stdout,
    );
    const aliceList = Array.isArray(aliceJobs) ? aliceJobs : aliceJobs.jobs;
    expect(aliceList.length).toBeGreaterThan(0);
    const bobIds = new Set(list.map((job) => job.id));
    for (const job of aliceList) expect(bobIds.has(job.id)).toBe(false);
    const peek = await bob.run(['job', aliceList[0]!.id]);
    expect(peek.code).not.toBe(0);
    expect(peek.stderr).toMatch(/STEWARD_NOT_FOUND/);
  });

  it('keeps users, workflows, jobs and results across a restart', async () => {
    const before = parseJson<{ jobs: JobJson[] } | JobJson[]>((await alice.run(['jobs', '--json'])).stdout);
    const beforeList = Array.isArray(before) ? before : before.jobs;
    const done = beforeList.find((job) => job.state === 'succeeded')!;
    await steward.stop();
    await steward.up();
    await alice.login(`${alice.name}-password`);
    const after = parseJson<{ jobs: JobJson[] } | JobJson[]>((await alice.run(['jobs', '--json'])).stdout);
    const afterList = Array.isArray(after) ? after : after.jobs;
    expect(afterList.map((job) => job.id).sort()).toEqual(beforeList.map((job) => job.id).sort());
    const out = path.join(scratch, 'out-after-restart');
    const fetched = await alice.run(['results', done.id, '--out', out]);
    expect(fetched.code, fetched.stderr).toBe(0);
    expect((await readdir(out)).length).toBeGreaterThan(0);
    const workflows = await alice.run(['workflow', 'list', '--json']);
    expect(workflows.stdout).toContain('sales-report');
    const { job, stderr } = await runJob(alice, ['sales-report']);
    expect(job.state, `${stderr}\n${JSON.stringify(job.error)}\n${steward.output}`).toBe('succeeded');
  });
});

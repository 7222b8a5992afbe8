/**
 * The rough edges a newcomer hit in their first hour (issue 16), each through the real CLI against a real
 * `steward up` (server, embedded bus, local agent; as root, jobs run as a real OS user made here).
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { JobDetail } from '../../src/protocol/index.js';
import { OsUsers } from '../support/os-users.js';
import { CliUser, StewardInstance, isRoot, tempDir } from '../support/steward.js';
import { until } from '../support/wait.js';

/** What `--json` prints for a failure: the REST API's error body. */
const ErrorBody = z.object({
  error: z.object({ code: z.string(), message: z.string(), details: z.record(z.string(), z.unknown()) }),
});

let steward: StewardInstance;
let admin: CliUser;
let alice: CliUser;
let scratch: string;
const osUsers = new OsUsers();

async function workflowFile(name: string, text: string): Promise<string> {
  const dir = path.join(scratch, name);
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, `${name}.yaml`);
  await writeFile(file, text);
  return file;
}

function jsonOf<T>(text: string, parse: (value: unknown) => T): T {
  try {
    return parse(JSON.parse(text));
  } catch (error) {
    throw new Error(`not the expected JSON (${String(error)}): ${text.slice(0, 800)}`);
  }
}

beforeAll(async () => {
  scratch = await tempDir('rough-edges');
  steward = await StewardInstance.start();
  admin = await CliUser.create('admin', steward.url);
  await admin.login(steward.adminPassword);
  const name = isRoot ? (await osUsers.user('re')).name : 'alice';
  const added = await admin.run(['user', 'add', name, '--password-stdin'], { input: `${name}-password` });
  expect(added.code, added.stderr).toBe(0);
  alice = await CliUser.create(name, steward.url);
  await alice.login(`${name}-password`);
}, 120_000);

afterAll(async () => {
  await steward?.destroy();
  for (const user of [admin, alice]) await user?.cleanup();
  await osUsers.cleanup();
  if (scratch) await rm(scratch, { recursive: true, force: true });
}, 60_000);

describe('errors a newcomer meets', () => {
  it('prints a failing SQL step’s error once', async () => {
    const file = await workflowFile(
      'badsql',
      'name: badsql\nsteps:\n  - id: a\n    sql: SELECT nosuchfunc(1) AS x\noutputs: [a]\n',
    );
    expect((await alice.run(['workflow', 'push', file])).code).toBe(0);
    const run = await alice.run(['run', 'badsql', '--wait']);
    expect(run.code).toBe(1);
    const output = run.stdout + run.stderr;
    expect(output.split('nosuchfunc does not exist').length - 1, output).toBe(1);
    expect(output).toMatch(/step a failed/);
    expect(output).toMatch(/failed step: a\n/);
  });

  it('names a missing input file in the user’s terms, without the SQL Steward generated', async () => {
    const file = await workflowFile(
      'missing',
      'name: missing\nparams:\n  file: {type: string, default: /nonexistent/steward/input.csv}\nsteps:\n  - id: a\n    read: {path: "${file}", format: csv}\noutputs: [a]\n',
    );
    expect((await alice.run(['workflow', 'push', file])).code).toBe(0);
    const run = await alice.run(['run', 'missing', '--wait', '--json']);
    expect(run.code).toBe(1);
    const job = jsonOf(run.stdout, (value) => JobDetail.parse(value));
    expect(job.state).toBe('failed');
    expect(job.error?.message).toBe('step "a": input file "/nonexistent/steward/input.csv" does not exist');
    expect(job.steps[0]?.message).not.toMatch(/CREATE TABLE|read_csv|\$path/);
  });

  it('names an unknown step key and the kind it probably meant', async () => {
    const file = await workflowFile('nokind', 'name: nokind\nsteps:\n  - id: a\n    sqll: SELECT 1\n');
    const push = await alice.run(['workflow', 'push', file]);
    expect(push.code).toBe(1);
    expect(push.stderr).toContain('step "a" has no kind (unknown key "sqll" (did you mean "sql"?))');
  });

  it('suggests the closest workflow names for an unknown one', async () => {
    const file = await workflowFile(
      'sales-report',
      'name: sales-report\nsteps:\n  - id: a\n    sql: SELECT 1 AS x\noutputs: [a]\n',
    );
    expect((await alice.run(['workflow', 'push', file])).code).toBe(0);
    const run = await alice.run(['run', 'sales-reprot']);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(
      `STEWARD_NOT_FOUND: no workflow ${alice.name}/sales-reprot (did you mean "sales-report"?)`,
    );
  });

  it('prints --json errors as one JSON document on stderr', async () => {
    const run = await alice.run(['run', 'sales-reprot', '--json']);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    const body = jsonOf(run.stderr, (value) => ErrorBody.parse(value));
    expect(body.error.code).toBe('STEWARD_NOT_FOUND');
    expect(body.error.details).toMatchObject({ suggestions: ['sales-report'], httpStatus: 404 });
    const usage = await alice.run(['jobs', '--limit', 'many', '--json']);
    expect(usage.code).toBe(2);
    expect(jsonOf(usage.stderr, (value) => ErrorBody.parse(value)).error.code).toBe('STEWARD_BAD_REQUEST');
  });
});

describe('push and listing', () => {
  it('refuses at push a relative read path that is not in assets, naming it', async () => {
    const file = await workflowFile(
      'relative',
      'name: relative\nsteps:\n  - id: a\n    read: data/sales.csv\noutputs: [a]\n',
    );
    const push = await alice.run(['workflow', 'push', file]);
    expect(push.code).toBe(1);
    expect(push.stderr).toContain('step "a" reads "data/sales.csv", which is not in the workflow\'s assets');
    // Listed as an asset, it is accepted (and runs).
    await mkdir(path.join(path.dirname(file), 'data'));
    await writeFile(path.join(path.dirname(file), 'data', 'sales.csv'), 'x\n1\n2\n');
    await writeFile(
      file,
      'name: relative\nassets: [data/sales.csv]\nsteps:\n  - id: a\n    read: data/sales.csv\noutputs: [a]\n',
    );
    expect((await alice.run(['workflow', 'push', file])).code).toBe(0);
    expect((await alice.run(['run', 'relative', '--wait'])).code).toBe(0);
  });

  it('says "unchanged" when the pushed file equals the latest version and creates none', async () => {
    const file = await workflowFile(
      'same',
      'name: same\nsteps:\n  - id: a\n    sql: SELECT 1 AS x\noutputs: [a]\n',
    );
    const first = await alice.run(['workflow', 'push', file]);
    expect(first.stdout).toBe(`pushed ${alice.name}/same@1\n`);
    const again = await alice.run(['workflow', 'push', file]);
    expect(again.code).toBe(0);
    expect(again.stdout).toBe(`unchanged, still ${alice.name}/same@1\n`);
    const json = await alice.run(['workflow', 'push', file, '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ version: 1, unchanged: true });
    await writeFile(file, 'name: same\nsteps:\n  - id: a\n    sql: SELECT 2 AS x\noutputs: [a]\n');
    expect((await alice.run(['workflow', 'push', file])).stdout).toBe(`pushed ${alice.name}/same@2\n`);
  });

  it('refuses `jobs --user X` for another user when not an admin', async () => {
    const other = await alice.run(['jobs', '--user', 'admin']);
    expect(other.code).toBe(1);
    expect(other.stderr).toContain("STEWARD_FORBIDDEN: only admins may list other users' jobs");
    expect((await alice.run(['jobs', '--user', alice.name])).code).toBe(0);
    expect((await admin.run(['jobs', '--user', alice.name])).code).toBe(0);
  });
});

describe('states and the agent list', () => {
  it('never shows a job starting after its first step', async () => {
    const file = await workflowFile(
      'quick',
      'name: quick\nsteps:\n  - id: a\n    sql: SELECT 1 AS x\n  - id: b\n    sql: SELECT x FROM a\noutputs: [b]\n',
    );
    expect((await alice.run(['workflow', 'push', file])).code).toBe(0);
    for (let round = 0; round < 5; round++) {
      const run = await alice.run(['run', 'quick', '--wait', '--json']);
      const job = jsonOf(run.stdout, (value) => JobDetail.parse(value));
      expect(job.state).toBe('succeeded');
      for (const step of job.steps) {
        expect(Date.parse(job.startedAt!), JSON.stringify(job)).toBeLessThanOrEqual(
          Date.parse(step.startedAt!),
        );
        expect(Date.parse(step.finishedAt!)).toBeLessThanOrEqual(Date.parse(job.finishedAt!));
      }
    }
  });

  it('gives each job a TMPDIR of its own, as the user guide says', async () => {
    const file = await workflowFile(
      'tmpdir',
      'name: tmpdir\nsteps:\n  - id: a\n    shell: \'echo "$TMPDIR"; test -d "$TMPDIR" && test -w "$TMPDIR"\'\n',
    );
    expect((await alice.run(['workflow', 'push', file])).code).toBe(0);
    const dirs: string[] = [];
    for (let round = 0; round < 2; round++) {
      const run = await alice.run(['run', 'tmpdir', '--wait', '--json']);
      const job = jsonOf(run.stdout, (value) => JobDetail.parse(value));
      expect(job.state, run.stderr).toBe('succeeded');
      const logs = await alice.run(['logs', job.id]);
      const dir = logs.stdout.split('\n').find((line) => line.startsWith('/'));
      expect(dir, logs.stdout).toMatch(new RegExp(`/tmp/${job.id}-1$`));
      dirs.push(dir!);
    }
    expect(dirs[0]).not.toBe(dirs[1]);
  });

  it('shows an executor’s idle time as a duration since it became idle, not since the epoch', async () => {
    const file = await workflowFile('idle', 'name: idle\nsteps:\n  - id: a\n    sql: SELECT 1 AS x\n');
    expect((await alice.run(['workflow', 'push', file])).code).toBe(0);
    expect((await alice.run(['run', 'idle', '--wait'])).code).toBe(0);
    // The executor shows idle from the agent's next heartbeat on.
    const table = await until('an idle executor in `steward agents`', async () => {
      const listed = await admin.run(['agents']);
      return /idle \S+?\)/.test(listed.stdout) && listed;
    });
    expect(table.stdout).toMatch(/\bactive\b/);
    const idle = /idle (\S+?)\)/.exec(table.stdout)?.[1];
    expect(idle, table.stdout).toMatch(/^(\d+ms|\d+\.\d+s|\d+m\d\ds)$/);
    const json = JSON.parse((await admin.run(['agents', '--json'])).stdout) as {
      agents: { state: string; executors: { idleSinceMs: number | null }[] }[];
    };
    const since = json.agents.flatMap((agent) => agent.executors).find((e) => e.idleSinceMs !== null);
    expect(Date.now() - since!.idleSinceMs!).toBeLessThan(10 * 60_000);
    expect(json.agents[0]?.state).toBe('active');
  });
});

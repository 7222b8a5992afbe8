/**
 * File params and live logs under a real `steward up`, as real OS users: a CSV uploaded with the run is read
 * by the job (its totals checked against ones computed here), hostile file names stay inside the job
 * directory, another user can neither use nor read an upload or a job's inputs, and a running step's output
 * is seen — through the log endpoint, the job's SSE `log` events and `steward logs -f` — before the step ends.
 */
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ErrorResponse,
  JobDetail,
  LogsResponse,
  PreviewResponse,
  UploadInfo,
} from '../../src/protocol/index.js';
import { ApiUser } from '../support/api.js';
import { OsUsers } from '../support/os-users.js';
import { CliUser, StewardInstance, isRoot, stewardBin, tempDir } from '../support/steward.js';
import { until } from '../support/wait.js';

const MAX_UPLOAD = 64 * 1024;

const SUM_WORKFLOW = `name: flogsum
params:
  data:
    type: file
    required: true
    accept: [.csv]
    description: rows of category,amount
steps:
  - id: load
    read:
      path: \${data}
      format: csv
  - id: total
    sql: SELECT category, sum(amount)::INTEGER AS total, count(*)::INTEGER AS n FROM load GROUP BY category ORDER BY category
  - id: where
    shell: |
      echo "path=$data"
      echo "jobdir=$STEWARD_JOB_DIR"
      stat -c 'mode=%a owner=%U' "$data"
outputs: [total]
`;

const ECHO_WORKFLOW = `name: flogecho
params:
  data:
    type: file
    required: true
steps:
  - id: show
    shell: |
      echo "path=$data"
      echo "jobdir=$STEWARD_JOB_DIR"
      cat "$data"
`;

/** Prints three lines a little apart, then waits for the file `release` names before it ends. */
const WAIT_WORKFLOW = `name: flogwait
params:
  release:
    type: string
    required: true
steps:
  - id: talk
    shell: |
      for i in 1 2 3; do echo "line $i"; sleep 0.3; done
      echo "to stderr" >&2
      while [ ! -e "$release" ]; do sleep 0.1; done
      echo "after release"
`;

let steward: StewardInstance;
let scratch: string;
let gates: string;
const osUsers = new OsUsers();
let alice: ApiUser;
let bob: ApiUser;
let aliceCli: CliUser;
const clis: CliUser[] = [];

async function upload(user: ApiUser, name: string, body: Buffer | string, token?: string) {
  const response = await fetch(`${user.url}/api/uploads?${new URLSearchParams({ name }).toString()}`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${token ?? (user as unknown as { token: string }).token}`,
      'content-type': 'application/octet-stream',
    },
    body,
  });
  return { status: response.status, body: await response.json() };
}

/** A refusal's error, parsed with the protocol's `ErrorResponse`. */
function errorOf(body: unknown) {
  return ErrorResponse.parse(body).error;
}

beforeAll(async () => {
  scratch = await tempDir('flog');
  // Where the test releases waiting steps: readable by the job users.
  gates = await mkdtemp(path.join(os.tmpdir(), 'flog-gates-'));
  await chmod(gates, 0o755);
  const config = path.join(scratch, 'steward.yaml');
  await writeFile(config, `server:\n  uploads:\n    maxBytes: ${MAX_UPLOAD}\n    ttl: 1h\n`);
  steward = await StewardInstance.start({ extraArgs: ['--config', config] });
  const admin = await ApiUser.login(steward.url, 'admin', steward.adminPassword);
  const names: string[] = [];
  for (const base of ['fla', 'flb']) {
    const name = isRoot ? (await osUsers.user(base)).name : base;
    await admin.createUser(name, `${name}-password`);
    names.push(name);
  }
  alice = await ApiUser.login(steward.url, names[0]!, `${names[0]}-password`);
  bob = await ApiUser.login(steward.url, names[1]!, `${names[1]}-password`);
  aliceCli = await CliUser.create(names[0]!, steward.url);
  clis.push(aliceCli);
  await aliceCli.login(`${names[0]}-password`);
  for (const source of [SUM_WORKFLOW, ECHO_WORKFLOW, WAIT_WORKFLOW]) await alice.push(source);
  await bob.push(ECHO_WORKFLOW);
}, 120_000);

afterAll(async () => {
  await steward?.destroy();
  for (const cli of clis) await cli.cleanup();
  await osUsers.cleanup();
  if (scratch) await rm(scratch, { recursive: true, force: true });
  if (gates) await rm(gates, { recursive: true, force: true });
}, 60_000);

describe('file params', () => {
  it('runs a workflow on a CSV uploaded by `steward run -p data=@file`, and its totals match ones computed here', async () => {
    const rows: string[] = ['category,amount'];
    const expected = new Map<string, { total: number; n: number }>();
    for (let i = 0; i < 300; i++) {
      const category = ['north', 'south', 'east'][(i * 7) % 3]!;
      const amount = (i * 37) % 101;
      rows.push(`${category},${amount}`);
      const entry = expected.get(category) ?? { total: 0, n: 0 };
      entry.total += amount;
      entry.n += 1;
      expected.set(category, entry);
    }
    const csv = path.join(scratch, 'sales.csv');
    await writeFile(csv, `${rows.join('\n')}\n`);
    const run = await aliceCli.run(['run', 'flogsum', '-p', `data=@${csv}`, '--wait', '--json'], {
      timeoutMs: 120_000,
    });
    expect(run.code, `${run.stderr}\n${run.stdout}`).toBe(0);
    const job = JobDetail.parse(JSON.parse(run.stdout));
    expect(job.state).toBe('succeeded');
    expect(job.inputs).toEqual([
      expect.objectContaining({
        param: 'data',
        name: 'sales.csv',
        size: (await import('node:fs')).statSync(csv).size,
      }),
    ]);

    const preview = await alice.request('GET', `/api/jobs/${job.id}/results/total/preview`);
    expect(preview.status).toBe(200);
    const got = PreviewResponse.parse(preview.body).rows;
    expect(got).toEqual(
      [...expected.entries()]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([category, { total, n }]) => ({ category, total, n })),
    );

    // The step saw an absolute path inside its job directory, readable by the job's user only.
    const log = await alice.request('GET', `/api/jobs/${job.id}/logs/where/stdout`);
    const text = String(log.body);
    const jobDir = /jobdir=(.*)/.exec(text)![1]!;
    expect(/path=(.*)/.exec(text)![1]).toBe(path.join(jobDir, '.inputs', 'data', 'sales.csv'));
    expect(text).toContain(`mode=600 owner=${alice.name}`);

    // The owner downloads the input as it was uploaded; another user gets the "not found" of no job at all.
    const input = await alice.request('GET', `/api/jobs/${job.id}/inputs/data`);
    expect(input.status).toBe(200);
    expect(String(input.body)).toBe(`${rows.join('\n')}\n`);
    const foreign = await bob.request('GET', `/api/jobs/${job.id}/inputs/data`);
    const missing = await bob.request('GET', `/api/jobs/20260101000000000-00000000/inputs/data`);
    expect(foreign.status).toBe(404);
    expect(errorOf(foreign.body).code).toBe(errorOf(missing.body).code);
  }, 180_000);

  it('refuses an upload over uploads.maxBytes with 413, declared or streamed', async () => {
    const big = Buffer.alloc(MAX_UPLOAD + 1, 0x61);
    const declared = await upload(alice, 'big.csv', big);
    expect(declared.status).toBe(413);
    expect(errorOf(declared.body).code).toBe('STEWARD_PAYLOAD_TOO_LARGE');
    // Without a length: counted while streaming.
    const response = await fetch(`${steward.url}/api/uploads?name=big.csv`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${(alice as unknown as { token: string }).token}`,
        'content-type': 'application/octet-stream',
      },
      body: new ReadableStream({
        start(controller) {
          for (let i = 0; i < 10; i++) controller.enqueue(new Uint8Array(MAX_UPLOAD / 4));
          controller.close();
        },
      }),
      duplex: 'half',
    });
    expect(response.status).toBe(413);
    expect(errorOf(await response.json()).code).toBe('STEWARD_PAYLOAD_TOO_LARGE');
    const exact = await upload(alice, 'fits.csv', Buffer.alloc(MAX_UPLOAD, 0x61));
    expect(exact.status).toBe(201);
    expect(UploadInfo.parse(exact.body).size).toBe(MAX_UPLOAD);
  });

  it('keeps hostile file names inside the job directory', async () => {
    for (const [hostile, stored] of [
      ['../../etc/passwd', 'passwd'],
      ['..\\..\\evil\nname\u0007.txt', 'evil_name_.txt'],
      ['..', 'upload'],
      ['.bashrc', 'bashrc'],
    ] as const) {
      const up = await upload(alice, hostile, `content of ${stored}\n`);
      expect(up.status, JSON.stringify(up.body)).toBe(201);
      const uploaded = UploadInfo.parse(up.body);
      expect(uploaded.name).toBe(stored);
      const id = await alice.submit('flogecho', { data: uploaded.id });
      const job = await alice.waitFor(id, 60_000);
      expect(job.state, JSON.stringify(job.error)).toBe('succeeded');
      const text = String((await alice.request('GET', `/api/jobs/${id}/logs/show/stdout`)).body);
      const jobDir = /jobdir=(.*)/.exec(text)![1]!;
      expect(/path=(.*)/.exec(text)![1]).toBe(path.join(jobDir, '.inputs', 'data', stored));
      expect(text).toContain(`content of ${stored}`);
    }
  }, 180_000);

  it('does not let another user run with an upload, and names the param in the error', async () => {
    const up = await upload(alice, 'mine.csv', 'a,b\n1,2\n');
    expect(up.status).toBe(201);
    const mine = UploadInfo.parse(up.body);
    const stolen = await bob.request('POST', '/api/jobs', {
      workflow: 'flogecho',
      params: { data: mine.id },
    });
    const nothing = await bob.request('POST', '/api/jobs', {
      workflow: 'flogecho',
      params: { data: 'upl_AAAAAAAAAAAAAAAAAAAAAAAA' },
    });
    expect(stolen.status).toBe(404);
    expect(nothing.status).toBe(404);
    const stolenError = errorOf(stolen.body);
    expect(stolenError.code).toBe('STEWARD_NOT_FOUND');
    expect(stolenError.details?.param).toBe('data');
    expect(stolenError.message.replace(mine.id, 'ID')).toBe(
      errorOf(nothing.body).message.replace('upl_AAAAAAAAAAAAAAAAAAAAAAAA', 'ID'),
    );
    // Still usable by its owner, once.
    const id = await alice.submit('flogecho', { data: mine.id });
    expect((await alice.waitFor(id, 60_000)).state).toBe('succeeded');
    const again = await alice.request('POST', '/api/jobs', {
      workflow: 'flogecho',
      params: { data: mine.id },
    });
    expect(again.status).toBe(404);
    // A value that breaks a param's rule names that param too.
    const wrongType = await alice.request('POST', '/api/jobs', { workflow: 'flogsum', params: {} });
    expect(wrongType.status).toBe(422);
    expect(errorOf(wrongType.body).details?.param).toBe('data');
    const txt = await upload(alice, 'notes.txt', 'x');
    const refused = await alice.request('POST', '/api/jobs', {
      workflow: 'flogsum',
      params: { data: UploadInfo.parse(txt.body).id },
    });
    expect(refused.status).toBe(422);
    expect(errorOf(refused.body).details?.param).toBe('data');
  }, 120_000);
});

describe('live logs', () => {
  it("shows a running step's first lines through the log endpoint and SSE log events before it ends", async () => {
    const release = path.join(gates, 'release-live');
    const id = await alice.submit('flogwait', { release });
    const events: { stepId: string; stream: string; offset: number; text: string }[] = [];
    const abort = new AbortController();
    const sse = (async () => {
      const response = await fetch(`${steward.url}/api/jobs/${id}/events`, {
        headers: { authorization: `Bearer ${(alice as unknown as { token: string }).token}` },
        signal: abort.signal,
      });
      const decoder = new TextDecoder();
      let buffer = '';
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const message = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = /^event: (.*)$/m.exec(message)?.[1];
          const data = /^data: (.*)$/m.exec(message)?.[1];
          if (event === 'log' && data) events.push(JSON.parse(data) as (typeof events)[number]);
        }
      }
    })().catch(() => undefined);

    await until(
      'the first lines through the log endpoint',
      async () =>
        String((await alice.request('GET', `/api/jobs/${id}/logs/talk/stdout`)).body).includes('line 3'),
      60_000,
    );
    await until(
      'a log event with the first line',
      () => events.some((e) => e.text.includes('line 1')),
      15_000,
    );
    // The step is still waiting for us: what we saw came before its end.
    const running = await alice.job(id);
    expect(running.state).toBe('running');
    expect(running.steps.find((s) => s.id === 'talk')?.state).toBe('running');
    const stdout = events.filter((e) => e.stepId === 'talk' && e.stream === 'stdout');
    // Offsets are byte offsets in the stored log: the pieces join up with no gap or overlap.
    let at = 0;
    for (const event of stdout) {
      expect(event.offset).toBe(at);
      at += Buffer.byteLength(event.text);
    }
    expect(stdout.map((e) => e.text).join('')).toBe('line 1\nline 2\nline 3\n'.slice(0, at));
    expect(stdout.length).toBeLessThanOrEqual(3 + 1);

    await writeFile(release, '');
    const done = await alice.waitFor(id, 60_000);
    expect(done.state).toBe('succeeded');
    abort.abort();
    await sse;
    const final = String((await alice.request('GET', `/api/jobs/${id}/logs/talk/stdout`)).body);
    expect(final).toBe('line 1\nline 2\nline 3\nafter release\n');
    const listing = await alice.request('GET', `/api/jobs/${id}/logs`);
    expect(
      LogsResponse.parse(listing.body)
        .logs.map((entry) => `${entry.stepId}.${entry.stream}`)
        .sort(),
    ).toEqual(['talk.stderr', 'talk.stdout']);
  }, 120_000);

  it('`steward logs -f` prints lines before the job ends, then the rest, each once', async () => {
    const release = path.join(gates, 'release-follow');
    const id = await alice.submit('flogwait', { release });
    const child = spawn(process.execPath, [stewardBin, 'logs', '-f', id], {
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: aliceCli.configDir,
        XDG_CONFIG_HOME: aliceCli.configDir,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      await until('steward logs -f to print line 2', () => stdout.includes('line 2'), 60_000);
      expect((await alice.job(id)).state).toBe('running');
      expect(child.exitCode).toBeNull();
      await writeFile(release, '');
      expect(await exited, stderr).toBe(0);
    } finally {
      child.kill();
    }
    expect(stdout).toContain('==> step talk stdout <==');
    for (const line of ['line 1', 'line 2', 'line 3', 'after release'])
      expect(stdout.split(line).length - 1, `${line} in:\n${stdout}`).toBe(1);
    expect(stdout).toContain('to stderr');
    expect(stdout.indexOf('line 3')).toBeLessThan(stdout.indexOf('after release'));
  }, 120_000);
});

/**
 * Bounded logs under a real `steward up`, as a real OS user: a step writing 1 GiB to stdout ends with a
 * stored log of its cap (head, marker, tail) that `steward logs` prints; a 1 GiB log on disk (as an older
 * version stored them) read four times at once keeps the server's memory flat and /api/health answering.
 * The server's RSS is read from /proc/<pid>/status of the `steward up` process itself (server, embedded bus
 * and agent; executors are processes of their own).
 */
import { readFile, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OsUsers } from '../support/os-users.js';
import { CliUser, StewardInstance, isRoot, tempDir } from '../support/steward.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** Default step log cap (server config `stepLogLimitBytes`). */
const CAP = 32 * MiB;
/**
 * The server's resident memory must stay under this while it stores the 1 GiB step's log and while it
 * serves a 1 GiB log to four readers at once (the issue measured 4.2 GB for four reads of 300 MB).
 */
const RSS_BOUND = 400 * MiB;

const LINE = 'the same line of output, again and again';
/** Whole lines in 1 GiB: the step writes 1,073,741,784 bytes of them. */
const LINES = Math.floor(GiB / (LINE.length + 1));

let steward: StewardInstance;
let admin: CliUser;
let user: CliUser;
const osUsers = new OsUsers();
let scratch: string;

/** Samples VmRSS of a process every 20 ms until stopped; gives the highest seen. */
function sampleRss(pid: number): { stop: () => Promise<number> } {
  let highest = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
      const kib = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0);
      highest = Math.max(highest, kib * 1024);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return highest;
    },
  };
}

/** Asks /api/health every 100 ms until stopped; gives the slowest answer in ms. */
/**
 * Polls /api/health while a test loads the server. A server that blocks its event loop on the log (reads or
 * copies it in one piece) answers late every time; a loaded CI machine delays a few answers only, so the
 * median carries the bound and the slowest answer gets a loose one.
 */
function watchHealth(url: string): {
  stop: () => Promise<{ slowestMs: number; medianMs: number; answers: number }>;
} {
  const times: number[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const started = performance.now();
      const response = await fetch(`${url}/api/health`);
      expect(response.status).toBe(200);
      await response.arrayBuffer();
      times.push(performance.now() - started);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      const sorted = [...times].sort((a, b) => a - b);
      return {
        slowestMs: sorted.at(-1) ?? 0,
        medianMs: sorted[Math.floor(sorted.length / 2)] ?? 0,
        answers: sorted.length,
      };
    },
  };
}

async function vmHwm(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmHWM:\s+(\d+) kB/m.exec(status)![1]) * 1024;
}

beforeAll(async () => {
  scratch = await tempDir('logs');
  steward = await StewardInstance.start();
  admin = await CliUser.create('admin', steward.url);
  await admin.login(steward.adminPassword);
  const name = isRoot ? (await osUsers.user('lg')).name : 'logger';
  const added = await admin.run(['user', 'add', name, '--password-stdin'], { input: `${name}-password` });
  expect(added.code, added.stderr).toBe(0);
  user = await CliUser.create(name, steward.url);
  await user.login(`${name}-password`);
}, 120_000);

afterAll(async () => {
  await steward?.destroy();
  for (const cli of [admin, user]) await cli?.cleanup();
  await osUsers.cleanup();
  if (scratch) await rm(scratch, { recursive: true, force: true });
}, 60_000);

describe('bounded step logs under steward up', () => {
  let jobId: string;

  it('ends a step that writes 1 GiB to stdout with a stored log of its cap, and steward logs prints head, marker and tail', async () => {
    const workflow = path.join(scratch, 'loud.yaml');
    await writeFile(
      workflow,
      `name: loud
steps:
  - id: loud
    shell: |
      echo "first line"
      yes "${LINE}" | head -n ${LINES}
      echo "last line"
      echo "a note on stderr" >&2
`,
    );
    const pushed = await user.run(['workflow', 'push', workflow]);
    expect(pushed.code, pushed.stderr).toBe(0);

    const pid = steward.child!.pid!;
    const rss = sampleRss(pid);
    const health = watchHealth(steward.url);
    const started = Date.now();
    const run = await user.run(['run', 'loud', '--wait', '--json'], { timeoutMs: 300_000 });
    const tookMs = Date.now() - started;
    const highest = await rss.stop();
    const answered = await health.stop();
    const job = JSON.parse(run.stdout) as { id: string; state: string; error: unknown };
    expect(job.state, `${run.stderr}\n${run.stdout}`).toBe('succeeded');
    jobId = job.id;

    const logFile = path.join(steward.dataDir, 'jobs', jobId, 'logs', 'loud.stdout.log');
    const stored = (await stat(logFile)).size;
    const written = 'first line\n'.length + LINES * (LINE.length + 1) + 'last line\n'.length;
    const marker = `\n[steward: ${written - CAP} bytes dropped here; this log keeps the first ${CAP / 2} and the last ${CAP / 2} bytes]\n`;
    expect(stored).toBe(CAP + marker.length);
    expect(await readdir(path.dirname(logFile))).toEqual(['loud.stderr.log', 'loud.stdout.log']);

    console.log(
      `1 GiB step: job took ${tookMs} ms; stored stdout log ${stored} bytes; steward up VmRSS peak ${(highest / MiB).toFixed(0)} MiB; /api/health median ${answered.medianMs.toFixed(0)} ms, slowest ${answered.slowestMs.toFixed(0)} ms over ${answered.answers} answers`,
    );
    expect(highest).toBeLessThan(RSS_BOUND);
    expect(answered.medianMs).toBeLessThan(250);
    expect(answered.slowestMs).toBeLessThan(5000);

    const logs = await user.run(['logs', jobId], { timeoutMs: 120_000 });
    expect(logs.code, logs.stderr).toBe(0);
    const out = logs.stdout;
    const header = '==> step loud stderr <==\na note on stderr\n==> step loud stdout <==\n';
    expect(out.startsWith(`${header}first line\n${LINE}\n`)).toBe(true);
    const at = out.indexOf(marker);
    expect(at).toBe(header.length + CAP / 2);
    expect(out.indexOf(marker, at + 1)).toBe(-1);
    expect(out.endsWith(`${LINE}\n${LINE}\nlast line\n`)).toBe(true);
    expect(out.length).toBe(header.length + stored);

    const tail = await user.run(['logs', jobId, '--step', 'loud', '--stream', 'stdout', '--tail', '3']);
    expect(tail.code, tail.stderr).toBe(0);
    expect(tail.stdout).toBe(`==> step loud stdout <==\n${LINE}\n${LINE}\nlast line\n`);
  }, 400_000);

  it('serves a 1 GiB log to four readers at once with the server memory flat and /api/health answering', async () => {
    expect(jobId).toBeDefined();
    // A log as large as older versions stored them (sparse: the content does not matter, its size does).
    const legacy = path.join(steward.dataDir, 'jobs', jobId, 'logs', 'legacy.stdout.log');
    await writeFile(legacy, '');
    await truncate(legacy, GiB);

    const pid = steward.child!.pid!;
    const login = await fetch(`${steward.url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user: user.name, password: `${user.name}-password` }),
    });
    const { token: bearer } = (await login.json()) as { token: string };
    const headers = { authorization: `Bearer ${bearer}` };

    const rss = sampleRss(pid);
    const health = watchHealth(steward.url);
    const started = Date.now();
    const reads = await Promise.all(
      [0, 1, 2, 3].map(async () => {
        const response = await fetch(`${steward.url}/api/jobs/${jobId}/logs/legacy/stdout`, { headers });
        expect(response.status).toBe(200);
        expect(response.headers.get('x-steward-log-size')).toBe(String(GiB));
        let bytes = 0;
        for await (const chunk of response.body!) bytes += (chunk as Uint8Array).length;
        return bytes;
      }),
    );
    // The listing of the same job at once: bounded text, whatever the logs' sizes.
    const listings = await Promise.all(
      [0, 1, 2, 3].map(async () => {
        const response = await fetch(`${steward.url}/api/jobs/${jobId}/logs`, { headers });
        return (await response.text()).length;
      }),
    );
    const tookMs = Date.now() - started;
    const highest = await rss.stop();
    const answered = await health.stop();
    const hwm = await vmHwm(pid);
    expect(reads).toEqual([GiB, GiB, GiB, GiB]);
    for (const length of listings) expect(length).toBeLessThan(MiB + 4096);
    console.log(
      `4 concurrent reads of a 1 GiB log: ${tookMs} ms; steward up VmRSS peak ${(highest / MiB).toFixed(0)} MiB (VmHWM since start ${(hwm / MiB).toFixed(0)} MiB); /api/health median ${answered.medianMs.toFixed(0)} ms, slowest ${answered.slowestMs.toFixed(0)} ms over ${answered.answers} answers`,
    );
    expect(highest).toBeLessThan(RSS_BOUND);
    expect(hwm).toBeLessThan(RSS_BOUND);
    expect(answered.medianMs).toBeLessThan(250);
    expect(answered.slowestMs).toBeLessThan(5000);
  }, 300_000);

  it('previews a table of two 200 MB strings with its memory and response bounded, and says it cut them', async () => {
    const workflow = path.join(scratch, 'wide.yaml');
    await writeFile(
      workflow,
      `name: wide
steps:
  - id: wide
    sql: SELECT i AS id, repeat('é', 100000000) AS big FROM range(2) t(i)
outputs: [wide]
`,
    );
    const pushed = await user.run(['workflow', 'push', workflow]);
    expect(pushed.code, pushed.stderr).toBe(0);
    const run = await user.run(['run', 'wide', '--wait', '--json'], { timeoutMs: 300_000 });
    const job = JSON.parse(run.stdout) as { id: string; state: string };
    expect(job.state, `${run.stderr}\n${run.stdout}`).toBe('succeeded');

    const login = await fetch(`${steward.url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user: user.name, password: `${user.name}-password` }),
    });
    const { token } = (await login.json()) as { token: string };
    const pid = steward.child!.pid!;
    const rss = sampleRss(pid);
    const response = await fetch(`${steward.url}/api/jobs/${job.id}/results/wide/preview`, {
      headers: { authorization: `Bearer ${token}` },
    });
    const text = await response.text();
    const highest = await rss.stop();
    expect(response.status, text.slice(0, 500)).toBe(200);
    const body = JSON.parse(text) as {
      rows: { id: string; big: string | null }[];
      truncated: boolean;
      truncatedCells: { row: number; column: string }[];
      limits: { cellBytes: number; responseBytes: number };
    };
    console.log(
      `preview of two 200 MB strings: ${text.length} bytes; steward up VmRSS peak during it ${(highest / MiB).toFixed(0)} MiB`,
    );
    expect(text.length).toBeLessThan(64 * 1024);
    expect(body.limits).toEqual({ cellBytes: 8192, responseBytes: MiB });
    expect(body.truncated).toBe(true);
    expect(body.truncatedCells).toEqual([
      { row: 0, column: 'big' },
      { row: 1, column: 'big' },
    ]);
    // 200 MB values are not even read: the column is sent as null, and said to be cut.
    expect(body.rows).toEqual([
      { id: '0', big: null },
      { id: '1', big: null },
    ]);
    expect(highest).toBeLessThan(RSS_BOUND);
  }, 400_000);
});

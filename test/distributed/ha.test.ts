/**
 * The HA setup for real: two `steward server` processes on one PostgreSQL database (private to this test),
 * one shared results directory and one shared signing-key file, behind a TCP failover proxy that is also
 * the URL executors use; two `steward agent` processes; RabbitMQ in a fresh vhost.
 * - a job watched (SSE) on either server streams to its end, whichever server applied its events;
 * - kill -9 of one server in the middle of a burst: every accepted job ends (0 stuck), none is lost, and no
 *   job runs twice within one attempt (every run appends "<jobId>-<attempt>" to a file; a re-run would be
 *   a new attempt, visible as such). Submissions cut by the kill are retried with their idempotency key,
 *   so none is submitted twice, and a job the dead server stored but never offered is adopted.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { chmod, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { z } from 'zod';
import { Job, JobDetail, LoginResponse } from '../../src/protocol/index.js';
import { Daemon } from '../support/distributed.js';
import { FailoverProxy } from '../support/failover-proxy.js';
import { OsUsers } from '../support/os-users.js';
import { brokerUrl, createVhost, deleteVhost } from '../support/rabbitmq.js';
import { freePort, isRoot, tempDir } from '../support/steward.js';
import { createPrivateDatabase } from '../store/backends.js';
import { until } from '../support/wait.js';

const BURST = Number(process.env.STEWARD_TEST_BURST ?? 500);
const PASSWORD = 'admin-password-for-ha-tests';
const TERMINAL = new Set(['succeeded', 'failed', 'canceled', 'expired', 'lost']);
const JobList = z.object({ jobs: z.array(Job) });

let database: { url: string; dispose(): Promise<void> } | undefined;
let vhost = '';
let root = '';
let proxy: FailoverProxy | undefined;
const servers: Daemon[] = [];
const agents: Daemon[] = [];
const osUsers = new OsUsers();
let token = '';
let runsFile = '';
// Agents name their cgroups after their id: unique per run so leftovers of another run never collide.
const runTag = randomBytes(3).toString('hex');
/** Requests the client had to send again (cut by the kill, or 502/503). */
let retriedRequests = 0;

async function startServer(index: number, port: number): Promise<Daemon> {
  const config = path.join(root, `server-${index}.yaml`);
  await writeFile(
    config,
    stringify({
      server: {
        bus: { kind: 'amqp', urls: [brokerUrl], vhost },
        store: { kind: 'postgres', url: database!.url },
        sharedDir: path.join(root, 'shared'),
        signingKeyFile: path.join(root, 'keys', 'offer-signing.pem'),
        publicUrl: proxy!.url,
        // Longer than the burst takes to drain, so only a real failure expires a job.
        loadTimeout: '3m',
        agentLease: '5s',
      },
    }),
  );
  const dataDir = path.join(root, `server-${index}`);
  const since = Date.now();
  const daemon = Daemon.start(['server', '--config', config, '--port', String(port), '--data-dir', dataDir], {
    STEWARD_ADMIN_PASSWORD: PASSWORD,
  });
  servers.push(daemon);
  await daemon.waitUntilUp(dataDir, since);
  return daemon;
}

async function startAgent(id: string, userMap: Record<string, string>): Promise<Daemon> {
  const dir = path.join(root, `agent-${id}`);
  const config = path.join(root, `agent-${id}.yaml`);
  await writeFile(
    config,
    stringify({
      agent: {
        id,
        bus: { kind: 'amqp', urls: [brokerUrl], vhost },
        serverPublicKeyFile: path.join(root, 'server-0', 'keys', 'offer-signing.pub'),
        workspaceRoot: path.join(dir, 'workspaces'),
        heartbeatInterval: '1s',
        slots: 6,
        warmExecutors: 2,
        userMap,
      },
    }),
  );
  const since = Date.now();
  const daemon = Daemon.start(['agent', '--config', config, '--data-dir', dir]);
  agents.push(daemon);
  await daemon.waitUntilUp(dir, since);
  return daemon;
}

/**
 * A request through the proxy, retried like a client behind a load balancer would: a connection cut by a
 * dying server or a 502/503 is tried again (for at most 30 s).
 */
async function request(
  method: string,
  url: string,
  body?: unknown,
  base = proxy!.url,
): Promise<{ status: number; json: unknown }> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const response = await fetch(`${base}${url}`, {
        method,
        headers: {
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...(token ? { authorization: `Bearer ${token}` } : {}),
        },
        body: body !== undefined ? JSON.stringify(body) : undefined,
      });
      const text = await response.text();
      if ((response.status !== 502 && response.status !== 503) || Date.now() > deadline)
        return { status: response.status, json: text ? JSON.parse(text) : undefined };
    } catch (error) {
      if (Date.now() > deadline) throw error;
    }
    retriedRequests++;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

beforeAll(async () => {
  database = await createPrivateDatabase('ha servers');
  vhost = await createVhost('ha');
  root = await tempDir('ha');
  // Every run of the workflow appends a line here, as whichever OS user it runs as.
  await mkdir(path.join(root, 'runs'), { mode: 0o777 });
  await chmod(path.join(root, 'runs'), 0o777);
  runsFile = path.join(root, 'runs', 'runs.log');
  await writeFile(runsFile, '', { mode: 0o666 });
  await chmod(runsFile, 0o666);
  const ports = [await freePort(), await freePort()];
  proxy = await FailoverProxy.start(ports.map((port) => ({ host: '127.0.0.1', port })));
  // Both servers start at once: they race to migrate the database and to create the signing key.
  await Promise.all(ports.map((port, index) => startServer(index, port)));
  const login = await request('POST', '/api/auth/login', { user: 'admin', password: PASSWORD });
  expect(login.status, JSON.stringify(login.json)).toBe(200);
  token = LoginResponse.parse(login.json).token;
  const userMap: Record<string, string> = isRoot ? { admin: (await osUsers.user('ha')).name } : {};
  await Promise.all([startAgent(`ha-a-${runTag}`, userMap), startAgent(`ha-b-${runTag}`, userMap)]);
  const workflow = `name: ha-noop
description: records that it ran, once per run
steps:
  - id: mark
    shell: printf '%s\\n' "$(basename "$STEWARD_JOB_DIR")" >> ${runsFile}
`;
  const pushed = await request('POST', '/api/workflows', { source: workflow });
  expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
}, 180_000);

afterAll(async () => {
  for (const daemon of [...agents, ...servers]) await daemon.stop();
  await proxy?.close();
  await osUsers.cleanup();
  if (vhost) await deleteVhost(vhost);
  await database?.dispose();
  if (root) await rm(root, { recursive: true, force: true });
}, 60_000);

/** One logical submission: its retries carry the same idempotency key, so they cannot submit twice. */
async function submit(): Promise<string> {
  const response = await request('POST', '/api/jobs', { workflow: 'ha-noop', idempotencyKey: randomUUID() });
  if (response.status !== 201) throw new Error(`submit: ${response.status} ${JSON.stringify(response.json)}`);
  return Job.parse(response.json).id;
}

/** Reads SSE events from one server until `end`; returns their names and the final job. */
async function watch(base: string, id: string): Promise<{ events: string[]; end: JobDetail }> {
  const response = await fetch(`${base}/api/jobs/${id}/events`, {
    headers: { authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(60_000),
  });
  expect(response.status).toBe(200);
  const events: string[] = [];
  let buffer = '';
  const decoder = new TextDecoder();
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let split: number;
    while ((split = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, split);
      buffer = buffer.slice(split + 2);
      const name = /^event: (.*)$/m.exec(block)?.[1];
      const data = /^data: (.*)$/m.exec(block)?.[1];
      if (!name) continue;
      events.push(name);
      if (name === 'end') return { events, end: JobDetail.parse(JSON.parse(data ?? 'null')) };
    }
  }
  throw new Error(`stream of ${id} on ${base} ended without "end": ${events.join(' ')}`);
}

function runsPerAttempt(text: string): Map<string, number> {
  const runs = new Map<string, number>();
  for (const line of text.split('\n').filter(Boolean)) runs.set(line, (runs.get(line) ?? 0) + 1);
  return runs;
}

describe('two servers on one PostgreSQL database', () => {
  it('shares one signing key, created once, private to the servers', async () => {
    const key = path.join(root, 'keys', 'offer-signing.pem');
    expect((await stat(key)).mode & 0o777).toBe(0o600);
    const publicKeys = await Promise.all(
      [0, 1].map((index) =>
        readFile(path.join(root, `server-${index}`, 'keys', 'offer-signing.pub'), 'utf8'),
      ),
    );
    expect(publicKeys[0]).toBe(publicKeys[1]);
  });

  it('streams a job to its end on either server, whichever server applied its events', async () => {
    const ids = await Promise.all(Array.from({ length: 8 }, () => submit()));
    const direct = proxy!.upstreams.map((u) => `http://${u.host}:${u.port}`);
    // Both servers consume agent events, so each job's events are split between them: a stream on one
    // server only ends if it hears what the other applied.
    const streams = await Promise.all(ids.flatMap((id) => direct.map((base) => watch(base, id))));
    for (const stream of streams) expect(stream.end.state).toBe('succeeded');
  }, 90_000);

  it(`kill -9 of one of two servers during a burst of ${BURST} jobs: 0 lost, 0 stuck, 0 run twice`, async () => {
    const before = new Set(
      JobList.parse((await request('GET', '/api/jobs?limit=500')).json).jobs.map((job) => job.id),
    );
    const started = Date.now();
    retriedRequests = 0;
    const accepted: string[] = [];
    let failedSubmits = 0;
    let killedAt = 0;
    const victim = servers[0]!;
    // Submit through the proxy, 16 at a time; kill the first server once a third of the burst is in.
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < BURST) {
        next++;
        try {
          accepted.push(await submit());
        } catch {
          failedSubmits++;
        }
        if (!killedAt && accepted.length >= BURST / 3) {
          killedAt = Date.now();
          await victim.stop('SIGKILL');
        }
      }
    };
    await Promise.all(Array.from({ length: 16 }, () => worker()));
    expect(killedAt).toBeGreaterThan(0);
    const submitted = Date.now();

    // Wait (on the database itself) until every accepted job has ended or the time is up.
    const client = new pg.Client({ connectionString: database!.url });
    await client.connect();
    let states = new Map<string, { state: string; attempt: number }>();
    try {
      const deadline = Date.now() + 240_000;
      // Past the deadline the check gives in: the counts below say what did not end.
      await until(
        'every accepted job to end',
        async () => {
          const { rows } = await client.query<{ id: string; state: string; attempt: number }>(
            'SELECT id, state, attempt FROM jobs',
          );
          states = new Map(rows.map((row) => [row.id, { state: row.state, attempt: row.attempt }]));
          const open = accepted.filter((id) => !TERMINAL.has(states.get(id)?.state ?? 'missing'));
          return open.length === 0 || Date.now() > deadline;
        },
        300_000,
        500,
      );
    } finally {
      await client.end();
    }
    const settled = Date.now();

    const counts: Record<string, number> = {};
    for (const id of accepted) {
      const state = states.get(id)?.state ?? 'missing';
      counts[state] = (counts[state] ?? 0) + 1;
    }
    const stuck = accepted.filter((id) => !TERMINAL.has(states.get(id)?.state ?? 'missing'));
    const lost = accepted.filter((id) => {
      const state = states.get(id)?.state;
      return state !== undefined && TERMINAL.has(state) && state !== 'succeeded';
    });
    const missing = accepted.filter((id) => !states.has(id));
    const runs = runsPerAttempt(await readFile(runsFile, 'utf8'));
    const duplicated = [...runs].filter(([, n]) => n > 1);
    const retried = accepted.filter((id) => (states.get(id)?.attempt ?? 1) > 1);
    const neverRan = accepted.filter(
      (id) => states.get(id)?.state === 'succeeded' && !runs.has(`${id}-${states.get(id)!.attempt}`),
    );
    // Jobs nobody holds the id of: without idempotency keys, a retried submission whose first answer was
    // lost would leave one. With them there must be none.
    const orphans = [...states.keys()].filter((id) => !before.has(id) && !accepted.includes(id));
    const summary = {
      burst: BURST,
      accepted: accepted.length,
      failedSubmits,
      states: counts,
      lost: lost.length + missing.length,
      stuck: stuck.length,
      duplicated: duplicated.length,
      reRunAsNewAttempt: retried.length,
      succeededWithoutRunRecord: neverRan.length,
      orphanSubmissions: orphans.length,
      retriedRequests,
      proxyConnections: proxy!.connections,
      killAfterMs: killedAt - started,
      submitMs: submitted - started,
      settleMs: settled - submitted,
      totalMs: settled - started,
    };
    console.log(`HA kill -9 of one server: ${JSON.stringify(summary)}`);
    expect(accepted.length + failedSubmits).toBe(BURST);
    expect(
      stuck,
      `stuck: ${stuck
        .slice(0, 10)
        .map((id) => `${id}:${states.get(id)?.state}`)
        .join(' ')}`,
    ).toEqual([]);
    expect(missing).toEqual([]);
    expect(lost.map((id) => `${id}:${states.get(id)!.state}`)).toEqual([]);
    expect(duplicated).toEqual([]);
    expect(neverRan).toEqual([]);
    expect(orphans).toEqual([]);
  }, 420_000);
});

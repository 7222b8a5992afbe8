/**
 * Schedules on the HA setup for real: two `steward server` processes on one PostgreSQL database (private
 * to this test), RabbitMQ in a fresh vhost, a schedule firing every second. Every tick from the first to
 * the last must have exactly one job, while both servers race for each tick, while one of them is killed
 * (-9) and while both are stopped and started again between ticks: no tick fires twice, none is lost.
 * No agent runs: the jobs stay offered, which the `allow` overlap policy ignores.
 */
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { AuditList, LoginResponse, ScheduleInfo } from '../../src/protocol/index.js';
import { Daemon } from '../support/distributed.js';
import { readLogRecords } from '../support/logs.js';
import { createVhost, brokerUrl, deleteVhost } from '../support/rabbitmq.js';
import { freePort, tempDir } from '../support/steward.js';
import { until } from '../support/wait.js';
import { createPrivateDatabase } from '../store/backends.js';

const PASSWORD = 'admin-password-for-schedule-tests';

let database: { url: string; dispose(): Promise<void> } | undefined;
let vhost = '';
let root = '';
const ports: number[] = [];
const servers: (Daemon | undefined)[] = [undefined, undefined];
let token = '';

async function startServer(index: number): Promise<void> {
  const config = path.join(root, `server-${index}.yaml`);
  await writeFile(
    config,
    stringify({
      server: {
        bus: { kind: 'amqp', urls: [brokerUrl], vhost },
        store: { kind: 'postgres', url: database!.url },
        sharedDir: path.join(root, 'shared'),
        signingKeyFile: path.join(root, 'keys', 'offer-signing.pem'),
        loadTimeout: '10m',
      },
    }),
  );
  const dataDir = path.join(root, `server-${index}`);
  const since = Date.now();
  const daemon = Daemon.start(
    ['server', '--config', config, '--port', String(ports[index]), '--data-dir', dataDir],
    { STEWARD_ADMIN_PASSWORD: PASSWORD },
  );
  servers[index] = daemon;
  await daemon.waitUntilUp(dataDir, since);
}

/** A request to whichever server is up (server 0 first). */
async function request(
  method: string,
  url: string,
  body?: unknown,
): Promise<{ status: number; json: unknown }> {
  let last: unknown;
  for (const [index, port] of ports.entries()) {
    const daemon = servers[index];
    if (!daemon || daemon.child.exitCode !== null || daemon.child.signalCode !== null) continue;
    try {
      const response = await fetch(`http://127.0.0.1:${port}${url}`, {
        method,
        headers: {
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...(token ? { authorization: `Bearer ${token}` } : {}),
        },
        body: body !== undefined ? JSON.stringify(body) : undefined,
      });
      const text = await response.text();
      return { status: response.status, json: text ? JSON.parse(text) : undefined };
    } catch (error) {
      last = error;
    }
  }
  throw new Error(`no server answered: ${String(last)}`);
}

/** The tick (dueAt, epoch ms) of every job the schedule fired, from the job.submit audit entries. */
async function firedTicks(scheduleId: string): Promise<number[]> {
  const response = await request('GET', '/api/audit?action=job.submit&limit=1000');
  expect(response.status).toBe(200);
  return AuditList.parse(response.json)
    .entries.filter((entry) => entry.detail?.schedule === scheduleId)
    .map((entry) => Date.parse(String(entry.detail?.dueAt)))
    .sort((a, b) => a - b);
}

async function untilTickAfter(scheduleId: string, time: number, timeoutMs = 60_000): Promise<void> {
  await until(
    `a tick after ${new Date(time).toISOString()} to fire`,
    async () => (await firedTicks(scheduleId)).some((tick) => tick > time),
    timeoutMs,
    200,
  );
}

beforeAll(async () => {
  database = await createPrivateDatabase('schedule servers');
  vhost = await createVhost('schedules');
  root = await tempDir('schedules');
  ports.push(await freePort(), await freePort());
  await Promise.all([startServer(0), startServer(1)]);
  const login = await request('POST', '/api/auth/login', { user: 'admin', password: PASSWORD });
  expect(login.status, JSON.stringify(login.json)).toBe(200);
  token = LoginResponse.parse(login.json).token;
  const pushed = await request('POST', '/api/workflows', {
    source: 'name: tick\nsteps:\n  - id: one\n    sql: SELECT 1 AS x\n',
  });
  expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
}, 120_000);

afterAll(async () => {
  for (const daemon of servers) await daemon?.stop();
  if (vhost) await deleteVhost(vhost);
  await database?.dispose();
  if (root) await rm(root, { recursive: true, force: true });
}, 60_000);

describe('a schedule on two servers sharing one PostgreSQL database', () => {
  it('fires every tick exactly once, across a kill -9 of one server and a stop of both between ticks', async () => {
    const created = await request('POST', '/api/schedules', {
      name: 'every-second',
      workflow: 'tick',
      cron: '* * * * * *',
      overlap: 'allow',
      misfire: 'catch-up',
    });
    expect(created.status, JSON.stringify(created.json)).toBe(201);
    const schedule = ScheduleInfo.parse(created.json);

    // Both servers race for each tick for a few seconds.
    await untilTickAfter(schedule.id, Date.parse(schedule.nextRuns[0]!) + 5000);

    // Server 0 dies mid-stream; server 1 carries on alone.
    await servers[0]!.stop('SIGKILL');
    const killedAt = Date.now();
    await untilTickAfter(schedule.id, killedAt + 3000);

    // Both are down across several ticks, then start again: the ticks missed meanwhile fire once each
    // (they are within the misfire grace), none twice.
    await servers[1]!.stop('SIGTERM');
    const stoppedAt = Date.now();
    await until('three ticks to pass with no server up', () => Date.now() > stoppedAt + 3000, 10_000, 100);
    await Promise.all([startServer(0), startServer(1)]);
    const restartedAt = Date.now();
    await untilTickAfter(schedule.id, restartedAt + 4000);

    const ticks = await firedTicks(schedule.id);
    const first = ticks[0]!;
    const last = ticks[ticks.length - 1]!;
    expect(new Set(ticks).size, 'a tick fired twice').toBe(ticks.length);
    const expected = Array.from({ length: (last - first) / 1000 + 1 }, (_, index) => first + index * 1000);
    expect(ticks.map((tick) => new Date(tick).toISOString())).toEqual(
      expected.map((tick) => new Date(tick).toISOString()),
    );
    // Ticks from the whole span: before the kill, while one server ran, while both were down, after.
    expect(first).toBeLessThan(killedAt - 2000);
    expect(ticks.some((tick) => tick > stoppedAt + 1000 && tick < restartedAt)).toBe(true);
    expect(last).toBeGreaterThan(restartedAt + 3000);

    // Both servers fired ticks (the race was real), from their own logs.
    const firedBy = await Promise.all(
      [0, 1].map(async (index) =>
        (await readLogRecords(path.join(root, `server-${index}`))).filter(
          (record) => record.event === 'schedule.fired' && record.schedule === schedule.id,
        ),
      ),
    );
    expect(firedBy.map((records) => records.length > 0)).toEqual([true, true]);
  }, 240_000);
});

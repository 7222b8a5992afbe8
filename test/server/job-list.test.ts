/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-argument, @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-call, @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-return -- HTTP response bodies are checked by assertions, not by static types. */
/**
 * The portal's job reads on a real server and store: the filtered, paged jobs list, the live stream of job
 * changes (also across two servers on one PostgreSQL database), rerun with the caller's current rights,
 * and the paged audit log.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { EmbeddedBus } from '../../src/bus/index.js';
import { compileServerConfig } from '../../src/config/index.js';
import { createServer } from '../../src/server/index.js';
import { postgresBackend } from '../store/backends.js';
import { REPORT_WORKFLOW, startHarness, type Harness } from './harness.js';

/** Reads Server-Sent Events from a real HTTP stream until `want` returns true for one. */
class EventReader {
  private buffer = '';
  private connected = false;
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  private readonly decoder = new TextDecoder();
  readonly events: { event: string; data: any }[] = [];

  constructor(
    response: Response,
    private readonly abort: AbortController,
  ) {
    this.reader = response.body!.getReader();
  }

  static async open(url: string, headers: Record<string, string>): Promise<EventReader> {
    const abort = new AbortController();
    const response = await fetch(url, { headers, signal: abort.signal });
    if (response.status !== 200) throw new Error(`stream: ${response.status} ${await response.text()}`);
    const reader = new EventReader(response, abort);
    await reader.until(() => reader.connected, 'open');
    return reader;
  }

  async next(want: (event: { event: string; data: any }) => boolean): Promise<{ event: string; data: any }> {
    let found: { event: string; data: any } | undefined;
    await this.until(() => (found = this.events.find(want)) !== undefined, 'an event');
    return found!;
  }

  private async until(done: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + 15_000;
    while (!done()) {
      if (Date.now() > deadline) throw new Error(`no ${what} on the stream`);
      const { value, done: ended } = await this.reader.read();
      if (ended) throw new Error(`the stream ended waiting for ${what}`);
      this.buffer += this.decoder.decode(value, { stream: true });
      let end: number;
      while ((end = this.buffer.indexOf('\n\n')) !== -1) {
        const block = this.buffer.slice(0, end);
        this.buffer = this.buffer.slice(end + 2);
        if (block.startsWith(': connected')) this.connected = true;
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (event !== undefined && data !== undefined) this.events.push({ event, data: JSON.parse(data) });
      }
    }
  }

  async close(): Promise<void> {
    this.abort.abort();
    await this.reader.cancel().catch(() => undefined);
  }
}

const SUBMIT = { workflow: 'report', params: { region: 'emea' } };

async function setUp(h: Harness): Promise<{ admin: string; amy: string; bo: string }> {
  const admin = await h.adminToken();
  const amy = await h.userToken('papi-amy');
  const bo = await h.userToken('papi-bo');
  for (const token of [amy, bo]) {
    const pushed = await h.request({
      method: 'POST',
      url: '/api/workflows',
      token,
      body: { source: REPORT_WORKFLOW },
    });
    expect(pushed.status).toBe(201);
  }
  return { admin, amy, bo };
}

async function submit(h: Harness, token: string, body: Record<string, unknown> = SUBMIT): Promise<any> {
  const response = await h.request({ method: 'POST', url: '/api/jobs', token, body });
  expect(response.status, response.text).toBe(201);
  return response.json;
}

describe('the jobs list, stream and rerun', () => {
  let h: Harness;
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    await h.dispose();
  });

  it('lists your jobs (admins: everyone’s) with filters, paged by the `next` cursor', async () => {
    h = await startHarness({ title: 'papi job list' });
    const { admin, amy, bo } = await setUp(h);
    const amyJobs = [await submit(h, amy), await submit(h, amy), await submit(h, amy)];
    await submit(h, bo);
    await submit(h, bo);
    const list = async (token: string, query = '') =>
      (await h.request({ method: 'GET', url: `/api/jobs${query}`, token })).json;

    const own = await list(amy);
    expect(own.jobs.map((job: any) => job.id)).toEqual(amyJobs.map((job) => job.id).reverse());
    expect(own.next).toBeNull();
    // A user's `user` filter cannot widen the view: another user's name is refused (not answered with
    // one's own jobs, which looked like that user's); one's own name is fine.
    const others = await h.request({ method: 'GET', url: '/api/jobs?user=papi-bo', token: amy });
    expect(others.status).toBe(403);
    expect(others.json.error.code).toBe('STEWARD_FORBIDDEN');
    expect(others.json.error.message).toMatch(/only admins/);
    expect((await list(amy, '?user=papi-amy')).jobs).toHaveLength(3);
    expect((await list(admin)).jobs).toHaveLength(5);
    expect((await list(admin, '?user=papi-bo')).jobs.map((job: any) => job.user)).toEqual([
      'papi-bo',
      'papi-bo',
    ]);

    const first = await list(amy, '?limit=2');
    expect(first.jobs).toHaveLength(2);
    expect(typeof first.next).toBe('string');
    const second = await list(amy, `?limit=2&before=${encodeURIComponent(first.next)}`);
    expect(second.jobs.map((job: any) => job.id)).toEqual([amyJobs[0].id]);
    expect(second.next).toBeNull();
    // Older clients page with a job id.
    expect((await list(amy, `?before=${amyJobs[2].id}`)).jobs).toHaveLength(2);

    expect((await list(amy, '?state=offered')).jobs).toHaveLength(3);
    expect((await list(amy, '?state=failed')).jobs).toHaveLength(0);
    expect((await list(amy, '?workflow=report&space=papi-amy')).jobs).toHaveLength(3);
    expect((await list(admin, '?space=papi-bo')).jobs).toHaveLength(2);
    expect((await list(amy, '?space=papi-bo')).jobs).toHaveLength(0);
    const created = Date.parse(amyJobs[1].createdAt);
    const since = await list(amy, `?since=${new Date(created).toISOString()}`);
    expect(since.jobs.map((job: any) => job.id)).toEqual([amyJobs[2].id, amyJobs[1].id]);
    const until = await list(amy, `?until=${new Date(created).toISOString()}`);
    expect(until.jobs.map((job: any) => job.id)).toEqual([amyJobs[0].id]);
    expect((await list(amy, '?since=2099-01-01')).jobs).toHaveLength(0);

    const bad = await h.request({ method: 'GET', url: '/api/jobs?since=yesterday', token: amy });
    expect(bad.status).toBe(400);
    expect(bad.json.error.message).toContain('query.since');
  });

  it('streams the changes of the jobs the caller may see, by session cookie or bearer token', async () => {
    h = await startHarness({ title: 'papi job stream' });
    const { admin, amy, bo } = await setUp(h);
    const session = await h.server.app.inject({
      method: 'POST',
      url: '/api/auth/session',
      payload: { name: 'papi-amy', password: 'password-of-papi-amy' },
    });
    const cookie = `steward_session=${session.cookies.find((c) => c.name === 'steward_session')!.value}`;
    const { url } = await h.server.listen();
    const amyStream = await EventReader.open(`${url}/api/jobs/stream`, { cookie });
    const adminStream = await EventReader.open(`${url}/api/jobs/stream`, {
      authorization: `Bearer ${admin}`,
    });
    cleanups.push(
      () => amyStream.close(),
      () => adminStream.close(),
    );

    const bosJob = await submit(h, bo);
    const amysJob = await submit(h, amy);
    // Events arrive in publication order: had Bo's job reached Amy, it would come before her own.
    const first = await amyStream.next((event) => event.event === 'job');
    expect(first.data).toMatchObject({ id: amysJob.id, user: 'papi-amy', state: 'offered' });
    expect(amyStream.events.some((event) => event.data?.id === bosJob.id)).toBe(false);
    await adminStream.next((event) => event.data?.id === bosJob.id);
    await adminStream.next((event) => event.data?.id === amysJob.id);

    const canceled = await h.request({ method: 'POST', url: `/api/jobs/${amysJob.id}/cancel`, token: amy });
    expect(canceled.status).toBe(200);
    const end = await amyStream.next((event) => event.data?.state === 'canceled');
    expect(end.data.id).toBe(amysJob.id);
  });

  it('streams job changes made on another server sharing the PostgreSQL database', async () => {
    h = await startHarness({ backend: postgresBackend, title: 'papi job stream ha' });
    const { admin, amy } = await setUp(h);
    const otherDir = mkdtempSync(path.join(os.tmpdir(), 'steward-papi-other-'));
    const otherBus = new EmbeddedBus({});
    const other = await createServer({
      config: compileServerConfig({ dataDir: otherDir, port: 0, store: h.storeConfig }),
      bus: otherBus,
      logger: pino({ level: 'silent' }),
    });
    cleanups.push(async () => {
      await other.close();
      await otherBus.close();
      rmSync(otherDir, { recursive: true, force: true });
    });
    const { url } = await other.listen();
    const stream = await EventReader.open(`${url}/api/jobs/stream`, { authorization: `Bearer ${admin}` });
    cleanups.push(() => stream.close());
    // Submitted and canceled on the first server; heard on the second through LISTEN/NOTIFY.
    const job = await submit(h, amy);
    await stream.next((event) => event.data?.id === job.id && event.data.state === 'offered');
    await h.request({ method: 'POST', url: `/api/jobs/${job.id}/cancel`, token: amy });
    await stream.next((event) => event.data?.id === job.id && event.data.state === 'canceled');
  });

  it('reruns a job with its pinned version and params, as the caller with the caller’s rights now', async () => {
    h = await startHarness({ title: 'papi rerun' });
    const { admin, amy, bo } = await setUp(h);
    const original = await submit(h, amy, { workflow: 'report', params: { region: 'apac', limit: 7 } });
    // A newer version does not change what a rerun runs.
    await h.request({
      method: 'POST',
      url: '/api/workflows',
      token: amy,
      body: { source: REPORT_WORKFLOW.replace('Sums a few numbers', 'Sums more numbers') },
    });
    const rerun = await h.request({ method: 'POST', url: `/api/jobs/${original.id}/rerun`, token: amy });
    expect(rerun.status).toBe(201);
    expect(rerun.json.id).not.toBe(original.id);
    expect(rerun.json).toMatchObject({
      user: 'papi-amy',
      workflow: { space: 'papi-amy', name: 'report', version: 1 },
      params: original.params,
      state: 'offered',
    });
    const audit = await h.request({
      method: 'GET',
      url: `/api/audit?action=job.submit&target=${rerun.json.id}`,
      token: admin,
    });
    expect(audit.json.entries).toHaveLength(1);
    expect(audit.json.entries[0]).toMatchObject({ actor: 'papi-amy', detail: { rerunOf: original.id } });

    // Another user's job: the same "not found" as reading it.
    const foreign = await h.request({ method: 'POST', url: `/api/jobs/${original.id}/rerun`, token: bo });
    const read = await h.request({ method: 'GET', url: `/api/jobs/${original.id}`, token: bo });
    expect(foreign.status).toBe(404);
    expect(foreign.json.error).toEqual({ ...read.json.error, message: expect.any(String) });
    expect(foreign.json.error.code).toBe('STEWARD_NOT_FOUND');
    expect(foreign.json.error.message).toBe(read.json.error.message);
    // An admin reruns it as themself.
    const byAdmin = await h.request({ method: 'POST', url: `/api/jobs/${original.id}/rerun`, token: admin });
    expect(byAdmin.status).toBe(201);
    expect(byAdmin.json.user).toBe('admin');
  });

  it('refuses a rerun to a user who lost the right to run the workflow', async () => {
    h = await startHarness({ title: 'papi rerun rights' });
    const { admin, amy } = await setUp(h);
    expect(
      (await h.request({ method: 'POST', url: '/api/spaces', token: admin, body: { name: 'papi-team' } }))
        .status,
    ).toBe(201);
    const member = await h.request({
      method: 'PUT',
      url: '/api/spaces/papi-team/members',
      token: admin,
      body: { kind: 'user', name: 'papi-amy', role: 'editor' },
    });
    expect(member.status).toBe(200);
    const pushed = await h.request({
      method: 'POST',
      url: '/api/spaces/papi-team/workflows',
      token: amy,
      body: { source: REPORT_WORKFLOW },
    });
    expect(pushed.status).toBe(201);
    const job = await submit(h, amy, { workflow: 'papi-team/report', params: { region: 'emea' } });
    expect((await h.request({ method: 'POST', url: `/api/jobs/${job.id}/rerun`, token: amy })).status).toBe(
      201,
    );

    const removed = await h.request({
      method: 'DELETE',
      url: '/api/spaces/papi-team/members?kind=user&name=papi-amy',
      token: admin,
    });
    expect(removed.status).toBe(204);
    const refused = await h.request({ method: 'POST', url: `/api/jobs/${job.id}/rerun`, token: amy });
    expect(refused.status).toBe(403);
    expect(refused.json.error.code).toBe('STEWARD_SPACE_NOT_MEMBER');
    // Her own job stays hers to read; only running it again needs the right.
    expect((await h.request({ method: 'GET', url: `/api/jobs/${job.id}`, token: amy })).status).toBe(200);
    const jobs = await h.request({ method: 'GET', url: '/api/jobs?space=papi-team', token: amy });
    expect(jobs.json.jobs).toHaveLength(2);
  });

  it('pages the audit log with target and time filters', async () => {
    h = await startHarness({ title: 'papi audit' });
    const { admin, amy } = await setUp(h);
    const job = await submit(h, amy);
    await h.request({ method: 'POST', url: `/api/jobs/${job.id}/cancel`, token: amy });
    const page = async (query: string) =>
      (await h.request({ method: 'GET', url: `/api/audit${query}`, token: admin })).json;

    const all = await page('?limit=1000');
    expect(all.next).toBeNull();
    const seen: number[] = [];
    let next: number | null = null;
    do {
      const current = await page(`?limit=3${next !== null ? `&before=${next}` : ''}`);
      seen.push(...current.entries.map((entry: any) => entry.id));
      next = current.next;
    } while (next !== null);
    expect(seen).toEqual(all.entries.map((entry: any) => entry.id));

    const forJob = await page(`?target=${job.id}`);
    expect(forJob.entries.map((entry: any) => entry.action).sort()).toEqual(['job.cancel', 'job.submit']);
    const submitted = forJob.entries.find((entry: any) => entry.action === 'job.submit');
    expect((await page(`?target=${job.id}&until=${submitted.time}`)).entries).toHaveLength(0);
    expect((await page(`?target=${job.id}&since=${submitted.time}`)).entries.length).toBeGreaterThan(0);
    expect((await page('?since=2099-01-01')).entries).toHaveLength(0);
    const refused = await h.request({ method: 'GET', url: '/api/audit', token: amy });
    expect(refused.status).toBe(403);
  });
});

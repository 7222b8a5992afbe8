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
import { Job } from '../../src/protocol/index.js';
import { createServer } from '../../src/server/index.js';
import { postgresBackend } from '../store/backends.js';
import { bodyOf, REPORT_WORKFLOW, startHarness, type Harness, type HarnessCallOptions } from './harness.js';

/** One event of the jobs stream: a `job` event carries the job, parsed with the protocol's `Job`. */
interface StreamEvent {
  event: string;
  job: Job | undefined;
}

/** Reads Server-Sent Events from a real HTTP stream until `want` returns true for one. */
class EventReader {
  private buffer = '';
  private connected = false;
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  private readonly decoder = new TextDecoder();
  readonly events: StreamEvent[] = [];

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

  async next(want: (event: StreamEvent) => boolean): Promise<StreamEvent> {
    let found: StreamEvent | undefined;
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
        if (event !== undefined && data !== undefined)
          this.events.push({ event, job: event === 'job' ? Job.parse(JSON.parse(data)) : undefined });
      }
    }
  }

  async close(): Promise<void> {
    this.abort.abort();
    await this.reader.cancel().catch(() => undefined);
  }
}

type SubmitBody = HarnessCallOptions<'submitJob'>['body'];
const SUBMIT: SubmitBody = { workflow: 'report', params: { region: 'emea' } };

async function setUp(h: Harness): Promise<{ admin: string; amy: string; bo: string }> {
  const admin = await h.adminToken();
  const amy = await h.userToken('papi-amy');
  const bo = await h.userToken('papi-bo');
  for (const token of [amy, bo]) await h.call('pushWorkflow', { token, body: { source: REPORT_WORKFLOW } });
  return { admin, amy, bo };
}

/** Submits a job (201, or the call throws). */
async function submit(h: Harness, token: string, body: SubmitBody = SUBMIT): Promise<Job> {
  return h.call('submitJob', { token, body });
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
      bodyOf('listJobs', await h.raw({ method: 'GET', url: `/api/jobs${query}`, token }));

    const own = await list(amy);
    expect(own.jobs.map((job) => job.id)).toEqual(amyJobs.map((job) => job.id).reverse());
    expect(own.next).toBeNull();
    // A user's `user` filter cannot widen the view: another user's name is refused (not answered with
    // one's own jobs, which looked like that user's); one's own name is fine.
    const others = await h.callError('listJobs', { token: amy, query: { user: 'papi-bo' } });
    expect(others.status).toBe(403);
    expect(others.error.code).toBe('STEWARD_FORBIDDEN');
    expect(others.error.message).toMatch(/only admins/);
    expect((await list(amy, '?user=papi-amy')).jobs).toHaveLength(3);
    expect((await list(admin)).jobs).toHaveLength(5);
    expect((await list(admin, '?user=papi-bo')).jobs.map((job) => job.user)).toEqual(['papi-bo', 'papi-bo']);

    const first = await list(amy, '?limit=2');
    expect(first.jobs).toHaveLength(2);
    expect(typeof first.next).toBe('string');
    const second = await list(amy, `?limit=2&before=${encodeURIComponent(first.next ?? '')}`);
    expect(second.jobs.map((job) => job.id)).toEqual([amyJobs[0]!.id]);
    expect(second.next).toBeNull();
    // Older clients page with a job id.
    expect((await list(amy, `?before=${amyJobs[2]!.id}`)).jobs).toHaveLength(2);

    expect((await list(amy, '?state=offered')).jobs).toHaveLength(3);
    expect((await list(amy, '?state=failed')).jobs).toHaveLength(0);
    expect((await list(amy, '?workflow=report&space=papi-amy')).jobs).toHaveLength(3);
    expect((await list(admin, '?space=papi-bo')).jobs).toHaveLength(2);
    expect((await list(amy, '?space=papi-bo')).jobs).toHaveLength(0);
    const created = Date.parse(amyJobs[1]!.createdAt);
    const since = await list(amy, `?since=${new Date(created).toISOString()}`);
    expect(since.jobs.map((job) => job.id)).toEqual([amyJobs[2]!.id, amyJobs[1]!.id]);
    const until = await list(amy, `?until=${new Date(created).toISOString()}`);
    expect(until.jobs.map((job) => job.id)).toEqual([amyJobs[0]!.id]);
    expect((await list(amy, '?since=2099-01-01')).jobs).toHaveLength(0);

    const bad = await h.callError('listJobs', { token: amy, query: { since: 'yesterday' } });
    expect(bad.status).toBe(400);
    expect(bad.error.message).toContain('query.since');
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
    expect(first.job).toMatchObject({ id: amysJob.id, user: 'papi-amy', state: 'offered' });
    expect(amyStream.events.some((event) => event.job?.id === bosJob.id)).toBe(false);
    await adminStream.next((event) => event.job?.id === bosJob.id);
    await adminStream.next((event) => event.job?.id === amysJob.id);

    await h.call('cancelJob', { token: amy, params: { id: amysJob.id } });
    const end = await amyStream.next((event) => event.job?.state === 'canceled');
    expect(end.job?.id).toBe(amysJob.id);
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
    await stream.next((event) => event.job?.id === job.id && event.job.state === 'offered');
    await h.call('cancelJob', { token: amy, params: { id: job.id } });
    await stream.next((event) => event.job?.id === job.id && event.job.state === 'canceled');
  });

  it('reruns a job with its pinned version and params, as the caller with the caller’s rights now', async () => {
    h = await startHarness({ title: 'papi rerun' });
    const { admin, amy, bo } = await setUp(h);
    const original = await submit(h, amy, { workflow: 'report', params: { region: 'apac', limit: 7 } });
    // A newer version does not change what a rerun runs.
    await h.call('pushWorkflow', {
      token: amy,
      body: { source: REPORT_WORKFLOW.replace('Sums a few numbers', 'Sums more numbers') },
    });
    const rerun = await h.call('rerunJob', { token: amy, params: { id: original.id } });
    expect(rerun.id).not.toBe(original.id);
    expect(rerun).toMatchObject({
      user: 'papi-amy',
      workflow: { space: 'papi-amy', name: 'report', version: 1 },
      params: original.params,
      state: 'offered',
    });
    const audit = await h.call('listAudit', {
      token: admin,
      query: { action: 'job.submit', target: rerun.id },
    });
    expect(audit.entries).toHaveLength(1);
    expect(audit.entries[0]).toMatchObject({ actor: 'papi-amy', detail: { rerunOf: original.id } });

    // Another user's job: the same "not found" as reading it.
    const foreign = await h.callError('rerunJob', { token: bo, params: { id: original.id } });
    const read = await h.callError('showJob', { token: bo, params: { id: original.id } });
    expect(foreign.status).toBe(404);
    expect(foreign.error).toEqual(read.error);
    expect(foreign.error.code).toBe('STEWARD_NOT_FOUND');
    // An admin reruns it as themself.
    const byAdmin = await h.call('rerunJob', { token: admin, params: { id: original.id } });
    expect(byAdmin.user).toBe('admin');
  });

  it('refuses a rerun to a user who lost the right to run the workflow', async () => {
    h = await startHarness({ title: 'papi rerun rights' });
    const { admin, amy } = await setUp(h);
    // Each call throws unless it answers its route's success status.
    await h.call('createSpace', { token: admin, body: { name: 'papi-team' } });
    await h.call('setSpaceMember', {
      token: admin,
      params: { space: 'papi-team' },
      body: { kind: 'user', name: 'papi-amy', role: 'editor' },
    });
    await h.call('pushSpaceWorkflow', {
      token: amy,
      params: { space: 'papi-team' },
      body: { source: REPORT_WORKFLOW },
    });
    const job = await submit(h, amy, { workflow: 'papi-team/report', params: { region: 'emea' } });
    await h.call('rerunJob', { token: amy, params: { id: job.id } });

    await h.call('removeSpaceMember', {
      token: admin,
      params: { space: 'papi-team' },
      query: { kind: 'user', name: 'papi-amy' },
    });
    const refused = await h.callError('rerunJob', { token: amy, params: { id: job.id } });
    expect(refused.status).toBe(403);
    expect(refused.error.code).toBe('STEWARD_SPACE_NOT_MEMBER');
    // Her own job stays hers to read; only running it again needs the right.
    expect((await h.call('showJob', { token: amy, params: { id: job.id } })).id).toBe(job.id);
    const jobs = await h.call('listJobs', { token: amy, query: { space: 'papi-team' } });
    expect(jobs.jobs).toHaveLength(2);
  });

  it('pages the audit log with target and time filters', async () => {
    h = await startHarness({ title: 'papi audit' });
    const { admin, amy } = await setUp(h);
    const job = await submit(h, amy);
    await h.call('cancelJob', { token: amy, params: { id: job.id } });
    const page = async (query: string) =>
      bodyOf('listAudit', await h.raw({ method: 'GET', url: `/api/audit${query}`, token: admin }));

    const all = await page('?limit=1000');
    expect(all.next).toBeNull();
    const seen: number[] = [];
    let next: number | null = null;
    do {
      const current = await page(`?limit=3${next !== null ? `&before=${next}` : ''}`);
      seen.push(...current.entries.map((entry) => entry.id));
      next = current.next;
    } while (next !== null);
    expect(seen).toEqual(all.entries.map((entry) => entry.id));

    const forJob = await page(`?target=${job.id}`);
    expect(forJob.entries.map((entry) => entry.action).sort()).toEqual(['job.cancel', 'job.submit']);
    const submitted = forJob.entries.find((entry) => entry.action === 'job.submit')!;
    expect((await page(`?target=${job.id}&until=${submitted.time}`)).entries).toHaveLength(0);
    expect((await page(`?target=${job.id}&since=${submitted.time}`)).entries.length).toBeGreaterThan(0);
    expect((await page('?since=2099-01-01')).entries).toHaveLength(0);
    const refused = await h.callError('listAudit', { token: amy });
    expect(refused.status).toBe(403);
  });
});

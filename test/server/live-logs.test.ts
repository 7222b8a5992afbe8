/**
 * The live log chunk route (`POST /api/exec/jobs/:id/logs/:step/:stream/chunks?offset=N`) against a real
 * server and store: idempotent by offset, gaps and oversize refused, served while the step runs, replaced
 * by the final upload; and a chunk that reached one server reaches the SSE listeners of another one on the
 * same PostgreSQL database.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EmbeddedBus, type Subscription } from '../../src/bus/index.js';
import { compileServerConfig } from '../../src/config/index.js';
import { createOfferVerifier, LogsResponse, type JobOffer } from '../../src/protocol/index.js';
import { createServer } from '../../src/server/index.js';
import { postgresBackend } from '../store/backends.js';
import { errorOf, eventually, startHarness, type Harness } from './harness.js';

const WORKFLOW = `name: flogtalk
steps:
  - id: talk
    shell: echo hello
`;

async function submitAndCatchOffer(
  h: Harness,
  token: string,
): Promise<{ offer: JobOffer; subscription: Subscription }> {
  const pushed = await h.raw({
    method: 'POST',
    url: '/api/workflows',
    token,
    body: { source: WORKFLOW },
  });
  expect(pushed.status).toBe(201);
  const verifier = createOfferVerifier([h.server.publicKeyPem]);
  let subscription: Subscription | undefined;
  const received = new Promise<JobOffer>((resolve) => {
    void h.bus
      .consumeOffers(async (delivery) => resolve(verifier.verify(delivery.body)), { prefetch: 1 })
      .then((s) => (subscription = s));
  });
  const submitted = await h.raw({
    method: 'POST',
    url: '/api/jobs',
    token,
    body: { workflow: 'flogtalk' },
  });
  expect(submitted.status).toBe(201);
  const offer = await received;
  await eventually(() => subscription);
  return { offer, subscription: subscription! };
}

describe('live log chunks', () => {
  let h: Harness;
  let alice: string;
  let offer: JobOffer;
  let subscription: Subscription;

  beforeEach(async (context) => {
    h = await startHarness({ title: context.task.name, config: { stepLogLimitBytes: 4096 } });
    alice = await h.userToken('flogalice');
    ({ offer, subscription } = await submitAndCatchOffer(h, alice));
  });
  afterEach(async () => {
    await subscription.cancel();
    await h.dispose();
  });

  const chunk = (offset: number, payload: string | Buffer, step = 'talk', token = offer.jobToken) =>
    h.raw({
      method: 'POST',
      url: `/api/exec/jobs/${offer.jobId}/logs/${step}/stdout/chunks?offset=${offset}`,
      token,
      payload,
      headers: { 'content-type': 'application/octet-stream' },
    });
  const read = (query = '') =>
    h.raw({ method: 'GET', url: `/api/jobs/${offer.jobId}/logs/talk/stdout${query}`, token: alice });

  it('appends by offset once, refuses gaps and chunks past the limit, and serves what arrived while the step runs', async () => {
    expect((await read()).status).toBe(404);
    const first = await chunk(0, 'line 1\n');
    expect(first.status).toBe(200);
    expect(first.json).toEqual({ size: 7 });
    // The same chunk again (a retry): acknowledged, stored once.
    expect((await chunk(0, 'line 1\n')).json).toEqual({ size: 7 });
    // Overlapping the end: only the new bytes are added.
    expect((await chunk(3, 'e 1\nline 2\n')).json).toEqual({ size: 14 });
    const served = await read();
    expect(served.text).toBe('line 1\nline 2\n');
    expect(served.headers['x-steward-log-size']).toBe('14');
    expect((await read('?offset=7')).text).toBe('line 2\n');

    // A gap: refused with the size the server has, nothing written.
    const gap = await chunk(20, 'lost');
    expect(gap.status).toBe(409);
    expect(errorOf(gap)).toMatchObject({ code: 'STEWARD_LOG_OFFSET_MISMATCH', details: { size: 14 } });
    // Past the step log limit, and over the chunk cap: 413.
    const over = await chunk(14, Buffer.alloc(4096, 0x61));
    expect(over.status).toBe(413);
    expect(errorOf(over).code).toBe('STEWARD_PAYLOAD_TOO_LARGE');
    const huge = await chunk(0, Buffer.alloc(1024 * 1024 + 1, 0x61));
    expect(huge.status).toBe(413);
    expect((await read()).text).toBe('line 1\nline 2\n');

    // Only the job's token; a step name that is not one plain segment is refused.
    expect((await chunk(14, 'x', 'talk', alice)).status).toBe(401);
    expect((await chunk(0, 'x', '.hidden')).status).toBe(400);

    const listing = await h.raw({ method: 'GET', url: `/api/jobs/${offer.jobId}/logs`, token: alice });
    expect(LogsResponse.parse(listing.json).logs).toEqual([
      expect.objectContaining({ stepId: 'talk', stream: 'stdout', size: 14, text: 'line 1\nline 2\n' }),
    ]);

    // The final upload is the authority: it replaces the live log, and a late chunk changes nothing.
    const final = await h.raw({
      method: 'PUT',
      url: `/api/exec/jobs/${offer.jobId}/logs/talk/stdout`,
      token: offer.jobToken,
      payload: 'line 1\nline 2\nline 3\n',
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(final.status).toBe(204);
    expect(existsSync(path.join(h.dataDir, 'jobs', offer.jobId, 'logs', 'talk.stdout.live'))).toBe(false);
    expect((await chunk(14, 'late\n')).json).toEqual({ size: 21 });
    expect((await read()).text).toBe('line 1\nline 2\nline 3\n');
  });
});

describe('live logs across servers', () => {
  it('sends a log event to an SSE listener on one server for a chunk that arrived at another (PostgreSQL)', async (context) => {
    const h = await startHarness({ title: context.task.name, backend: postgresBackend });
    const bus = new EmbeddedBus({});
    const other = await createServer({
      config: compileServerConfig({
        dataDir: path.join(h.dataDir, 'second'),
        sharedDir: h.dataDir,
        port: 0,
        store: h.storeConfig,
      }),
      bus,
      logger: pino({ level: 'silent' }),
    });
    let subscription: Subscription | undefined;
    const abort = new AbortController();
    try {
      const alice = await h.userToken('flogcarol');
      const caught = await submitAndCatchOffer(h, alice);
      subscription = caught.subscription;
      const { offer } = caught;
      const { url: first } = await h.server.listen();
      const { url: second } = await other.listen();

      const events: string[] = [];
      const response = await fetch(`${first}/api/jobs/${offer.jobId}/events`, {
        headers: { authorization: `Bearer ${alice}` },
        signal: abort.signal,
      });
      const reading = (async () => {
        const decoder = new TextDecoder();
        for await (const part of response.body as unknown as AsyncIterable<Uint8Array>)
          events.push(decoder.decode(part, { stream: true }));
      })().catch(() => undefined);
      await eventually(() => events.join('').includes('event: snapshot'));

      const sent = await fetch(`${second}/api/exec/jobs/${offer.jobId}/logs/talk/stdout/chunks?offset=0`, {
        method: 'POST',
        headers: { authorization: `Bearer ${offer.jobToken}`, 'content-type': 'application/octet-stream' },
        body: 'from the other server\n',
      });
      expect(sent.status).toBe(200);
      const event = await eventually(() => /event: log\ndata: (.*)\n/.exec(events.join(''))?.[1]);
      expect(JSON.parse(event)).toEqual({
        stepId: 'talk',
        stream: 'stdout',
        offset: 0,
        text: 'from the other server\n',
      });
      abort.abort();
      await reading;
    } finally {
      abort.abort();
      await subscription?.cancel();
      await other.close();
      await bus.close();
      await h.dispose();
    }
  });
});

import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { createHash } from 'node:crypto';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Subscription } from '../../src/bus/index.js';
import { createOfferVerifier, type JobOffer } from '../../src/protocol/index.js';
import { checkSegmentName } from '../../src/server/results.js';
import { bodyOf, errorOf, eventually, startHarness, type Harness } from './harness.js';

const WORKFLOW = `name: sales
assets: [query.sql]
steps:
  - id: totals
    sql: SELECT 1 AS region, 2 AS amount
outputs: [totals]
`;

let parquet: Buffer;
let scratch: string;

beforeAll(async () => {
  scratch = mkdtempSync(path.join(os.tmpdir(), 'steward-parquet-'));
  const file = path.join(scratch, 'totals.parquet');
  const instance = await DuckDBInstance.create(':memory:');
  const connection = await instance.connect();
  await connection.run(
    `COPY (SELECT i AS id, 'row ' || i AS label FROM range(25) t(i)) TO '${file}' (FORMAT parquet)`,
  );
  connection.closeSync();
  instance.closeSync();
  parquet = readFileSync(file);
});

afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

describe('executor routes, results and logs', () => {
  let h: Harness;
  let alice: string;
  let offer: JobOffer;
  let subscription: Subscription;

  beforeEach(async (context) => {
    h = await startHarness({
      title: context.task.name,
      config: {
        resultLimitBytes: 64 * 1024,
        stepLogLimitBytes: 4096,
        preview: { cellBytes: 1024, responseBytes: 16 * 1024 },
      },
    });
    alice = await h.userToken('alice');
    const pushed = await h.raw({
      method: 'POST',
      url: '/api/workflows',
      token: alice,
      body: { source: WORKFLOW, assets: { 'query.sql': Buffer.from('SELECT 1').toString('base64') } },
    });
    expect(pushed.status).toBe(201);
    const verifier = createOfferVerifier([h.server.publicKeyPem]);
    const received = new Promise<JobOffer>((resolve) => {
      void h.bus
        .consumeOffers(async (delivery) => resolve(verifier.verify(delivery.body)), { prefetch: 1 })
        .then((s) => (subscription = s));
    });
    expect(
      (await h.raw({ method: 'POST', url: '/api/jobs', token: alice, body: { workflow: 'sales' } })).status,
    ).toBe(201);
    offer = await received;
  });
  afterEach(async () => {
    await subscription.cancel();
    await h.dispose();
  });

  const exec = (method: 'GET' | 'PUT', url: string, payload?: Buffer | string, token = offer.jobToken) =>
    h.raw({
      method,
      url,
      token,
      ...(payload !== undefined ? { payload, headers: { 'content-type': 'application/octet-stream' } } : {}),
    });

  it('gives the executor its workflow, params and assets with the job token only', async () => {
    const workflow = await exec('GET', `/api/exec/jobs/${offer.jobId}/workflow`);
    expect(workflow.status).toBe(200);
    expect(workflow.json).toMatchObject({
      jobId: offer.jobId,
      attempt: 1,
      user: 'alice',
      source: WORKFLOW,
      format: 'yaml',
      params: {},
    });
    const digest = createHash('sha256').update('SELECT 1').digest('hex');
    expect(bodyOf('execWorkflow', workflow).assets).toEqual([{ path: 'query.sql', size: 8, digest }]);
    // The executor caps step logs at the server's limit while steps write.
    expect(bodyOf('execWorkflow', workflow).limits).toEqual({ stepLogBytes: 4096 });
    const asset = await exec('GET', `/api/exec/jobs/${offer.jobId}/assets/${digest}`);
    expect(asset.text).toBe('SELECT 1');
    expect((await exec('GET', `/api/exec/jobs/${offer.jobId}/assets/${'0'.repeat(64)}`)).status).toBe(404);
    // A user token is not a job token, and a job token is not a user token.
    expect((await exec('GET', `/api/exec/jobs/${offer.jobId}/workflow`, undefined, alice)).status).toBe(401);
    expect((await h.raw({ method: 'GET', url: '/api/me', token: offer.jobToken })).status).toBe(401);
  });

  it('round-trips a table result: upload, list, download as Parquet and CSV, preview', async () => {
    const csv = 'id,label\n0,row 0\n1,row 1\n';
    expect(
      (
        await exec(
          'PUT',
          `/api/exec/jobs/${offer.jobId}/results/totals?kind=table&format=parquet&rows=25`,
          parquet,
        )
      ).status,
    ).toBe(204);
    expect(
      (await exec('PUT', `/api/exec/jobs/${offer.jobId}/results/totals?kind=table&format=csv&rows=25`, csv))
        .status,
    ).toBe(204);
    expect(
      (await exec('PUT', `/api/exec/jobs/${offer.jobId}/results/notes.txt?kind=file`, 'hello')).status,
    ).toBe(204);

    const list = await h.raw({ method: 'GET', url: `/api/jobs/${offer.jobId}/results`, token: alice });
    expect(list.json).toEqual(
      expect.objectContaining({
        results: [
          expect.objectContaining({ name: 'notes.txt', kind: 'file', formats: [], size: 5, rows: null }),
          expect.objectContaining({
            name: 'totals',
            kind: 'table',
            formats: ['csv', 'parquet'],
            size: parquet.length,
            rows: 25,
          }),
        ],
      }),
    );
    const asParquet = await h.server.app.inject({
      method: 'GET',
      url: `/api/jobs/${offer.jobId}/results/totals.parquet`,
      headers: { authorization: `Bearer ${alice}` },
    });
    expect(asParquet.statusCode).toBe(200);
    expect(asParquet.rawPayload.equals(parquet)).toBe(true);
    expect(asParquet.headers['content-disposition']).toBe(
      `attachment; filename="totals.parquet"; filename*=UTF-8''totals.parquet`,
    );
    const asCsv = await h.raw({
      method: 'GET',
      url: `/api/jobs/${offer.jobId}/results/totals.csv`,
      token: alice,
    });
    expect(asCsv.text).toBe(csv);
    expect(
      (await h.raw({ method: 'GET', url: `/api/jobs/${offer.jobId}/results/notes.txt`, token: alice })).text,
    ).toBe('hello');
    expect(
      (await h.raw({ method: 'GET', url: `/api/jobs/${offer.jobId}/results/totals.json`, token: alice }))
        .status,
    ).toBe(404);

    const preview = await h.raw({
      method: 'GET',
      url: `/api/jobs/${offer.jobId}/results/totals/preview?limit=3&offset=10`,
      token: alice,
    });
    expect(preview.status).toBe(200);
    expect(preview.json).toEqual({
      name: 'totals',
      columns: [
        { name: 'id', type: 'BIGINT' },
        { name: 'label', type: 'VARCHAR' },
      ],
      rows: [
        { id: '10', label: 'row 10' },
        { id: '11', label: 'row 11' },
        { id: '12', label: 'row 12' },
      ],
      totalRows: 25,
      truncated: false,
      truncatedCells: [],
      omittedRows: 0,
      limits: { cellBytes: 1024, responseBytes: 16 * 1024 },
    });
    expect(
      (
        await h.raw({
          method: 'GET',
          url: `/api/jobs/${offer.jobId}/results/notes.txt/preview`,
          token: alice,
        })
      ).status,
    ).toBe(400);
    const downloads = await h.server.store.listAudit({ action: 'result.download', limit: 10 });
    expect(downloads.map((e) => e.target)).toEqual(
      expect.arrayContaining([`${offer.jobId}/totals.parquet`, `${offer.jobId}/totals.csv`]),
    );
    const bob = await h.userToken('bob');
    expect(
      (await h.raw({ method: 'GET', url: `/api/jobs/${offer.jobId}/results/totals.csv`, token: bob })).status,
    ).toBe(404);
  });

  it('refuses unsafe result names and uploads over the size limit, leaving no file behind', async () => {
    // URL clients normalise a literal ".." segment away; an encoded slash reaches the handler.
    const slash = await exec('PUT', `/api/exec/jobs/${offer.jobId}/results/a%2Fb?kind=file`, 'x');
    expect(slash.status).toBe(400);
    expect(errorOf(slash).message).toContain('must be a plain name');
    for (const name of ['..', '.', 'a/b', 'a\\b', 'x'.repeat(256), ''])
      expect(() => checkSegmentName(name, 'name')).toThrow();
    expect(() => checkSegmentName('report 2026.csv', 'name')).not.toThrow();
    const hidden = await exec('PUT', `/api/exec/jobs/${offer.jobId}/results/.env?kind=file`, 'x');
    expect(hidden.status).toBe(400);
    expect(
      (await exec('PUT', `/api/exec/jobs/${offer.jobId}/results/t?kind=table&format=xlsx`, 'x')).status,
    ).toBe(400);
    const big = await exec(
      'PUT',
      `/api/exec/jobs/${offer.jobId}/results/big.bin?kind=file`,
      Buffer.alloc(65 * 1024),
    );
    expect(big.status).toBe(413);
    expect(errorOf(big).code).toBe('STEWARD_PAYLOAD_TOO_LARGE');
    const dir = path.join(h.dataDir, 'results', offer.jobId);
    expect(existsSync(path.join(dir, 'big.bin'))).toBe(false);
  });

  it('stores step logs and shows them to the job owner', async () => {
    expect((await exec('PUT', `/api/exec/jobs/${offer.jobId}/logs/totals/stdout`, 'out line\n')).status).toBe(
      204,
    );
    expect((await exec('PUT', `/api/exec/jobs/${offer.jobId}/logs/totals/stderr`, 'err line\n')).status).toBe(
      204,
    );
    expect(readFileSync(path.join(h.dataDir, 'jobs', offer.jobId, 'logs', 'totals.stdout.log'), 'utf8')).toBe(
      'out line\n',
    );
    const logs = await h.raw({ method: 'GET', url: `/api/jobs/${offer.jobId}/logs`, token: alice });
    expect(logs.json).toEqual({
      jobId: offer.jobId,
      logs: [
        { stepId: 'totals', stream: 'stderr', text: 'err line\n', size: 9, truncated: false },
        { stepId: 'totals', stream: 'stdout', text: 'out line\n', size: 9, truncated: false },
      ],
    });
  });

  it('stores a log upload over the step log limit as its head, a marker and its tail, whatever the executor sent', async () => {
    // 60,000 bytes of numbered lines against a 4 KiB cap (an executor that did not cap, or an older one).
    const lines = Array.from({ length: 10_000 }, (_, i) => `${String(i).padStart(5, '0')}`).join('\n') + '\n';
    expect(lines.length).toBe(60_000);
    expect((await exec('PUT', `/api/exec/jobs/${offer.jobId}/logs/loud/stdout`, lines)).status).toBe(204);
    const stored = readFileSync(path.join(h.dataDir, 'jobs', offer.jobId, 'logs', 'loud.stdout.log'), 'utf8');
    // The server's cap is the step log limit plus room for an executor's own marker line (256 bytes).
    const marker =
      '[steward: 55648 bytes dropped here; this log keeps the first 2176 and the last 2176 bytes]\n';
    expect(stored).toBe(lines.slice(0, 2176) + '\n' + marker + lines.slice(-2176));
    // A log an executor capped already (limit + its marker) is stored byte for byte.
    const capped =
      lines.slice(0, 2048) +
      '\n[steward: 55904 bytes dropped here; this log keeps the first 2048 and the last 2048 bytes]\n' +
      lines.slice(-2048);
    expect((await exec('PUT', `/api/exec/jobs/${offer.jobId}/logs/capped/stdout`, capped)).status).toBe(204);
    expect(readFileSync(path.join(h.dataDir, 'jobs', offer.jobId, 'logs', 'capped.stdout.log'), 'utf8')).toBe(
      capped,
    );
    // Nothing of the upload is left beside the log (temp file, tail ring).
    expect(readdirSync(path.join(h.dataDir, 'jobs', offer.jobId, 'logs')).sort()).toEqual([
      'capped.stdout.log',
      'loud.stdout.log',
    ]);
    // The listing gives sizes, and text only within its budget of JSON bytes ("\n" takes two: 14 lines of
    // seven, then two bytes), cut on a character boundary.
    const listing = await h.raw({
      method: 'GET',
      url: `/api/jobs/${offer.jobId}/logs?maxBytes=100`,
      token: alice,
    });
    expect(listing.json).toEqual(
      expect.objectContaining({
        logs: [
          {
            stepId: 'capped',
            stream: 'stdout',
            text: lines.slice(0, 86),
            size: capped.length,
            truncated: true,
          },
          { stepId: 'loud', stream: 'stdout', text: '', size: stored.length, truncated: true },
        ],
      }),
    );
    expect(
      (
        await h.raw({
          method: 'GET',
          url: `/api/jobs/${offer.jobId}/logs?maxBytes=2000000`,
          token: alice,
        })
      ).status,
    ).toBe(400);
  });

  it('streams one stored log whole, by byte range or by its last lines, to its owner only', async () => {
    const text = 'one\ntwo\nthree\nfour\n';
    expect((await exec('PUT', `/api/exec/jobs/${offer.jobId}/logs/totals/stdout`, text)).status).toBe(204);
    expect((await exec('PUT', `/api/exec/jobs/${offer.jobId}/logs/totals/stderr`, 'no newline')).status).toBe(
      204,
    );
    const get = (query: string, token = alice, stream = 'stdout') =>
      h.raw({ method: 'GET', url: `/api/jobs/${offer.jobId}/logs/totals/${stream}${query}`, token });
    const whole = await get('');
    expect(whole.status).toBe(200);
    expect(whole.text).toBe(text);
    expect(whole.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect(whole.headers['x-steward-log-size']).toBe(String(text.length));
    expect(whole.headers['x-steward-log-offset']).toBe('0');
    const range = await get('?offset=4&limit=5');
    expect(range.text).toBe('two\nt');
    expect(range.headers['x-steward-log-offset']).toBe('4');
    expect((await get('?offset=1000')).text).toBe('');
    expect((await get('?tail=2')).text).toBe('three\nfour\n');
    expect((await get('?tail=2')).headers['x-steward-log-offset']).toBe('8');
    expect((await get('?tail=99')).text).toBe(text);
    expect((await get('?tail=1&limit=3')).text).toBe('fou');
    expect((await get('?tail=1', alice, 'stderr')).text).toBe('no newline');
    const both = await get('?tail=1&offset=2');
    expect(both.status).toBe(400);
    expect(errorOf(both).code).toBe('STEWARD_BAD_REQUEST');
    const missing = await h.raw({
      method: 'GET',
      url: `/api/jobs/${offer.jobId}/logs/other/stdout`,
      token: alice,
    });
    expect(missing.status).toBe(404);
    expect(errorOf(missing).message).toContain('no stdout log for step other');
    expect(
      (await h.raw({ method: 'GET', url: `/api/jobs/${offer.jobId}/logs/totals/stdin`, token: alice }))
        .status,
    ).toBe(400);
    const bob = await h.userToken('bob');
    expect((await get('', bob)).status).toBe(404);
  });

  it('caps every preview value and the whole preview response, and says what it cut', async () => {
    // Two long strings (over the 1 KiB cell cap), a list holding a long string, a short row, and multi-byte
    // characters right at the cut.
    const file = path.join(scratch, 'wide.parquet');
    const instance = await DuckDBInstance.create(':memory:');
    const connection = await instance.connect();
    await connection.run(
      `COPY (SELECT * FROM (VALUES
         (1, repeat('a', 300000), [repeat('b', 5000)], 'short'),
         (2, repeat('é', 200000), ['x'], 'short'),
         (3, 'tiny', [], 'short')) AS t(id, big, list, small)) TO '${file}' (FORMAT parquet)`,
    );
    connection.closeSync();
    instance.closeSync();
    expect(
      (
        await exec(
          'PUT',
          `/api/exec/jobs/${offer.jobId}/results/wide?kind=table&format=parquet&rows=3`,
          readFileSync(file),
        )
      ).status,
    ).toBe(204);
    const preview = await h.raw({
      method: 'GET',
      url: `/api/jobs/${offer.jobId}/results/wide/preview`,
      token: alice,
    });
    expect(preview.status).toBe(200);
    expect(preview.text.length).toBeLessThan(16 * 1024 + 1024);
    const body = preview.json as {
      truncated: boolean;
      omittedRows: number;
      rows: [Record<string, unknown>, Record<string, unknown>, Record<string, unknown>];
      truncatedCells: unknown[];
    };
    expect(body.truncated).toBe(true);
    expect(body.omittedRows).toBe(0);
    expect(body.rows).toHaveLength(3);
    expect(body.rows[0].big).toBe('a'.repeat(1024));
    // 1024 bytes of two-byte characters: 512 whole ones.
    expect(body.rows[1].big).toBe('é'.repeat(512));
    expect(typeof body.rows[0].list).toBe('string');
    expect(Buffer.byteLength(body.rows[0].list as string)).toBeLessThanOrEqual(1024);
    expect(body.rows[1].list).toEqual(['x']);
    expect(body.rows[2]).toEqual({ id: 3, big: 'tiny', list: [], small: 'short' });
    expect(body.truncatedCells).toEqual([
      { row: 0, column: 'big' },
      { row: 0, column: 'list' },
      { row: 1, column: 'big' },
    ]);

    // Many rows: the response stops at its byte cap and counts what it left out.
    const many = path.join(scratch, 'many.parquet');
    const second = await DuckDBInstance.create(':memory:');
    const conn2 = await second.connect();
    await conn2.run(
      `COPY (SELECT i AS id, repeat('z', 900) AS filler FROM range(200) t(i)) TO '${many}' (FORMAT parquet)`,
    );
    conn2.closeSync();
    second.closeSync();
    expect(
      (
        await exec(
          'PUT',
          `/api/exec/jobs/${offer.jobId}/results/many?kind=table&format=parquet&rows=200`,
          readFileSync(many),
        )
      ).status,
    ).toBe(204);
    const paged = await h.raw({
      method: 'GET',
      url: `/api/jobs/${offer.jobId}/results/many/preview?limit=200`,
      token: alice,
    });
    expect(paged.status).toBe(200);
    expect(paged.text.length).toBeLessThan(16 * 1024 + 1024);
    expect(bodyOf('previewResult', paged).truncated).toBe(true);
    expect(bodyOf('previewResult', paged).truncatedCells).toEqual([]);
    expect(bodyOf('previewResult', paged).rows.length).toBeGreaterThan(10);
    expect(bodyOf('previewResult', paged).rows.length + bodyOf('previewResult', paged).omittedRows).toBe(200);
    expect(bodyOf('previewResult', paged).rows[0]).toEqual({ id: '0', filler: 'z'.repeat(900) });
  });

  it('stops accepting the job token once the job has ended', async () => {
    await h.bus.publishEvent({
      v: 1,
      type: 'state',
      jobId: offer.jobId,
      attempt: 1,
      seq: 1,
      time: Date.now(),
      agentId: 'a',
      state: 'succeeded',
    });
    await eventually(async () => (await h.server.store.getJob(offer.jobId))?.state === 'succeeded');
    const late = await exec('GET', `/api/exec/jobs/${offer.jobId}/workflow`);
    expect(late.status).toBe(403);
    expect(errorOf(late).code).toBe('STEWARD_FORBIDDEN');
  });
});

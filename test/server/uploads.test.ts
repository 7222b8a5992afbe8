/**
 * The upload service against a real store (SQLite and PostgreSQL) and real files: an upload is reserved by
 * its owner only and once, becomes a job's input, can be staged again as a fresh upload for a rerun (the
 * hook `POST /api/jobs/:id/rerun` uses), and expires unused.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ParamSpec } from '../../src/engine/index.js';
import { openStore, type Store } from '../../src/store/index.js';
import { UploadService } from '../../src/server/uploads.js';
import { backends, type BackendHandle } from '../store/backends.js';

const specs: ParamSpec[] = [{ name: 'data', type: 'file', required: true, accept: ['.csv'], maxSize: 100 }];

describe.each(backends)('uploads on $name', (backend) => {
  let handle: BackendHandle;
  let store: Store;
  let shared: string;
  let uploads: UploadService;

  beforeEach(async (context) => {
    handle = await backend.create(`flog ${context.task.name}`);
    store = await openStore(handle.config);
    shared = mkdtempSync(path.join(os.tmpdir(), 'flog-uploads-'));
    uploads = new UploadService(store, shared, { maxBytes: 1000, ttlMs: 60_000 }, pino({ level: 'silent' }));
  });
  afterEach(async () => {
    await store.close();
    rmSync(shared, { recursive: true, force: true });
    await handle.dispose();
  });

  it('moves an upload into one job only, for its owner only, and stages it again for a rerun', async () => {
    const upload = await uploads.create(
      'flogann',
      '../x/in.csv',
      Readable.from([Buffer.from('a,b\n1,2\n')]),
      8,
    );
    expect(upload).toMatchObject({ name: 'in.csv', size: 8, owner: 'flogann', jobId: null });
    await expect(uploads.reserve('flogbob', 'job-b', specs, { data: upload.id })).rejects.toMatchObject({
      code: 'STEWARD_NOT_FOUND',
      details: { param: 'data' },
    });
    const reserved = await uploads.reserve('flogann', 'job-1', specs, { data: upload.id });
    expect(reserved.params).toEqual({ data: 'in.csv' });
    // Reserved: not available to a second submission.
    await expect(uploads.reserve('flogann', 'job-2', specs, { data: upload.id })).rejects.toMatchObject({
      code: 'STEWARD_NOT_FOUND',
    });
    await uploads.attach(reserved);
    const { file, input } = await uploads.locateInput('job-1', 'data');
    expect(readFileSync(file, 'utf8')).toBe('a,b\n1,2\n');
    expect(input).toMatchObject({ name: 'in.csv', size: 8 });
    expect(await store.files.getUpload(upload.id)).toBeUndefined();

    const staged = await uploads.stageRerunInputs('flogann', 'job-1');
    expect(Object.keys(staged)).toEqual(['data']);
    const again = await uploads.reserve('flogann', 'job-3', specs, staged);
    await uploads.attach(again);
    expect(readFileSync((await uploads.locateInput('job-3', 'data')).file, 'utf8')).toBe('a,b\n1,2\n');
    expect(readFileSync(file, 'utf8')).toBe('a,b\n1,2\n');
  });

  it("checks a param's accept and maxSize, and releases what a failed submission reserved", async () => {
    const text = await uploads.create('flogann', 'notes.txt', Readable.from([Buffer.from('x')]), 1);
    await expect(uploads.reserve('flogann', 'job-1', specs, { data: text.id })).rejects.toMatchObject({
      code: 'STEWARD_PARAMS_INVALID',
      details: { param: 'data' },
    });
    const big = await uploads.create('flogann', 'big.csv', Readable.from([Buffer.alloc(101)]), 101);
    await expect(uploads.reserve('flogann', 'job-1', specs, { data: big.id })).rejects.toThrow(
      /maxSize of 100/,
    );
    const fine = await uploads.create('flogann', 'ok.csv', Readable.from([Buffer.from('1')]), 1);
    const reserved = await uploads.reserve('flogann', 'job-1', specs, { data: fine.id });
    await uploads.release(reserved.jobId);
    expect((await uploads.reserve('flogann', 'job-2', specs, { data: fine.id })).uploads).toHaveLength(1);
  });

  it('refuses an upload over maxBytes, leaving nothing, and sweeps expired uploads with their files', async () => {
    await expect(
      uploads.create('flogann', 'big.csv', Readable.from([Buffer.alloc(600), Buffer.alloc(600)]), undefined),
    ).rejects.toMatchObject({ code: 'STEWARD_PAYLOAD_TOO_LARGE' });
    const upload = await uploads.create('flogann', 'a.csv', Readable.from([Buffer.from('1')]), 1);
    expect(await uploads.sweep(Date.now())).toBe(0);
    expect(await uploads.sweep(upload.expiresAt + 1)).toBe(1);
    expect(await store.files.getUpload(upload.id)).toBeUndefined();
    expect(existsSync(path.join(shared, 'uploads', upload.id))).toBe(false);
    expect((await import('node:fs')).readdirSync(path.join(shared, 'uploads'))).toEqual([]);
  });
});

/**
 * Retention of ended jobs: a real server and store (SQLite and PostgreSQL), real files in the shared
 * directory, and an injected clock that moves days ahead instead of waiting for them. The test stands in for
 * the agent (offers taken, events published on the embedded bus).
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Subscription } from '../../src/bus/index.js';
import { createOfferVerifier, type JobOffer } from '../../src/protocol/index.js';
import { openStore } from '../../src/store/index.js';
import { backends } from '../store/backends.js';
import { eventually, startHarness, stateEvent, type Harness } from './harness.js';

const DAY = 86_400_000;
const WORKFLOW = `name: tiny
steps:
  - id: one
    sql: SELECT 1 AS n
`;

describe.each(backends)('retention on $name', (backend) => {
  let h: Harness;
  let subscription: Subscription | undefined;
  let now = Date.now();

  afterEach(async () => {
    await subscription?.cancel();
    subscription = undefined;
    await h.dispose();
  });

  async function start(title: string, retention: Record<string, unknown>): Promise<void> {
    now = Date.now();
    h = await startHarness({ backend, title, clock: () => now, config: { retention } });
    const verifier = createOfferVerifier([h.server.publicKeyPem]);
    subscription = await h.bus.consumeOffers(
      async (delivery) => {
        offers.set(verifier.verify(delivery.body).jobId, verifier.verify(delivery.body));
        await delivery.ack();
      },
      { prefetch: 50 },
    );
  }
  const offers = new Map<string, JobOffer>();

  /** A job of `user` run to `succeeded` now, with a result file and a step log on disk. */
  async function endedJob(token: string): Promise<string> {
    const job = await h.call('submitJob', { token, body: { workflow: 'tiny' } });
    const offer = await eventually(() => offers.get(job.id));
    await h.bus.publishEvent(stateEvent(offer, 1, 'running'));
    await h.bus.publishEvent(stateEvent(offer, 2, 'succeeded'));
    await eventually(async () => (await h.server.store.getJob(job.id))?.state === 'succeeded');
    const shared = h.dataDir;
    mkdirSync(path.join(shared, 'results', job.id), { recursive: true });
    writeFileSync(path.join(shared, 'results', job.id, 'one.csv'), 'n\n1\n');
    mkdirSync(path.join(shared, 'jobs', job.id, 'logs'), { recursive: true });
    writeFileSync(path.join(shared, 'jobs', job.id, 'logs', 'one.stdout.log'), 'hello\n');
    await h.server.store.upsertResult({
      jobId: job.id,
      name: 'one',
      kind: 'table',
      format: 'csv',
      size: 4,
      rows: 1,
      createdAt: now,
    });
    return job.id;
  }

  const filesExist = (id: string): boolean =>
    existsSync(path.join(h.dataDir, 'results', id)) || existsSync(path.join(h.dataDir, 'jobs', id));

  /** A dry run, then the real run: both must name the same jobs. (Logs in anew: the clock outruns tokens.) */
  async function sweep() {
    const admin = await h.adminToken();
    const dry = await h.call('retentionSweep', { token: admin, body: { dryRun: true } });
    const real = await h.call('retentionSweep', { token: admin, body: {} });
    expect(dry.dryRun).toBe(true);
    expect(real.dryRun).toBe(false);
    expect(real.ran).toBe(true);
    expect(dry.files.map((job) => job.id)).toEqual(real.files.map((job) => job.id));
    expect(dry.records.map((job) => job.id)).toEqual(real.records.map((job) => job.id));
    return { files: real.files.map((job) => job.id), records: real.records.map((job) => job.id) };
  }

  it('removes expired files, then records, keeps pinned jobs, applies a per-space override, and a dry run changes nothing', async (context) => {
    await start(context.task.name, {
      results: '7d',
      records: '30d',
      spaces: { bob: { results: '1d', records: '2d' } },
    });
    let alice = await h.userToken('alice');
    const bob = await h.userToken('bob');
    await h.call('pushWorkflow', { token: alice, body: { source: WORKFLOW } });
    await h.call('pushWorkflow', { token: bob, body: { source: WORKFLOW } });
    const kept = await endedJob(alice);
    const plain = await endedJob(alice);
    const bobs = await endedJob(bob);
    // Only its owner (or an admin) may pin: bob is told the job does not exist.
    expect((await h.callError('pinJob', { token: bob, params: { id: kept } })).status).toBe(404);
    expect(await h.call('pinJob', { token: alice, params: { id: kept } })).toMatchObject({
      id: kept,
      pinned: true,
    });
    expect((await h.call('showJob', { token: alice, params: { id: kept } })).pinned).toBe(true);

    // Nothing is due yet.
    expect(await sweep()).toEqual({ files: [], records: [] });

    // 1.5 days on: bob's space keeps files one day. A dry run alone removes nothing.
    now += 1.5 * DAY;
    const dry = await h.call('retentionSweep', { token: await h.adminToken(), body: { dryRun: true } });
    expect(dry.files.map((job) => job.id)).toEqual([bobs]);
    expect(filesExist(bobs)).toBe(true);
    expect(await h.server.store.listResults(bobs)).toHaveLength(1);
    expect(await sweep()).toEqual({ files: [bobs], records: [] });
    expect(filesExist(bobs)).toBe(false);
    expect(filesExist(plain)).toBe(true);
    expect(await h.server.store.listResults(bobs)).toHaveLength(0);
    const purged = await h.call('showJob', { token: bob, params: { id: bobs } });
    expect(purged.filesPurgedAt).toBe(new Date(now).toISOString());
    expect(purged.state).toBe('succeeded');

    // 3 days: bob's record goes (its space keeps records two days); alice's jobs are untouched.
    now += 1.5 * DAY;
    expect(await sweep()).toEqual({ files: [], records: [bobs] });
    expect(await h.server.store.getJob(bobs)).toBeUndefined();
    expect((await h.callError('showJob', { token: bob, params: { id: bobs } })).status).toBe(404);

    // 8 days: alice's files expire, except the pinned job's.
    now += 5 * DAY;
    alice = await h.userToken('alice');
    expect(await sweep()).toEqual({ files: [plain], records: [] });
    expect(filesExist(plain)).toBe(false);
    expect(filesExist(kept)).toBe(true);
    expect((await h.call('showJob', { token: alice, params: { id: plain } })).filesPurgedAt).not.toBeNull();

    // 31 days: alice's unpinned record goes; the pinned job stays whole.
    now += 23 * DAY;
    alice = await h.userToken('alice');
    expect(await sweep()).toEqual({ files: [], records: [plain] });
    expect(await h.server.store.getJob(plain)).toBeUndefined();
    expect(await h.server.store.getJob(kept)).toMatchObject({ pinned: true, filesPurgedAt: null });
    expect(filesExist(kept)).toBe(true);

    // Unpinned, it goes at the next sweep: files and record in one run.
    expect(await h.call('unpinJob', { token: alice, params: { id: kept } })).toMatchObject({ pinned: false });
    expect(await sweep()).toEqual({ files: [kept], records: [kept] });
    expect(filesExist(kept)).toBe(false);
    expect(await h.server.store.getJob(kept)).toBeUndefined();

    // One audit entry per sweep with its counts; pins audited.
    const audit = await h.server.store.listAudit({ limit: 100 });
    const sweeps = audit.filter((entry) => entry.action === 'retention.sweep');
    expect(sweeps).toHaveLength(6);
    expect(sweeps.map((entry) => entry.detail)).toContainEqual({ files: 1, records: 1, truncated: false });
    expect(audit.filter((entry) => entry.action === 'retention.dry-run').length).toBeGreaterThanOrEqual(6);
    expect(audit.filter((entry) => entry.action === 'job.pin' || entry.action === 'job.unpin')).toHaveLength(
      2,
    );
  });

  it('refuses the sweep to non-admins and does nothing without a retention config', async (context) => {
    now = Date.now();
    h = await startHarness({ backend, title: context.task.name, clock: () => now });
    const alice = await h.userToken('alice');
    expect((await h.callError('retentionSweep', { token: alice, body: { dryRun: true } })).status).toBe(403);
    const report = await h.call('retentionSweep', { token: await h.adminToken(), body: {} });
    expect(report).toEqual({ dryRun: false, ran: true, files: [], records: [], truncated: false });
  });

  it.runIf(backend.name === 'postgres')(
    'lets one server sweep at a time on one database',
    async (context) => {
      await start(context.task.name, { results: '1d' });
      const other = await openStore(h.storeConfig);
      try {
        let release!: () => void;
        const held = new Promise<void>((resolve) => (release = resolve));
        let entered!: () => void;
        const inside = new Promise<void>((resolve) => (entered = resolve));
        const first = h.server.store.retention.exclusively(async () => {
          entered();
          await held;
          return 'first';
        });
        await inside;
        expect(await other.retention.exclusively(async () => 'second')).toEqual({ ran: false });
        release();
        expect(await first).toEqual({ ran: true, value: 'first' });
        expect(await other.retention.exclusively(async () => 'second')).toEqual({
          ran: true,
          value: 'second',
        });
      } finally {
        await other.close();
      }
    },
  );
});

/**
 * Batched submit (`POST /api/jobs/batch`) on SQLite and PostgreSQL: a real server over the embedded bus.
 * Each item is checked as a single submit is; refused items get their error and lose none of the others;
 * the size bound refuses a batch whole; retried idempotency keys answer with the jobs they created; the
 * batch costs far fewer statements than its jobs one by one.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createOfferVerifier, MAX_BATCH_JOBS, type JobOffer } from '../../src/protocol/index.js';
import { statementsSince } from '../../src/store/index.js';
import { backends } from '../store/backends.js';
import { eventually, REPORT_WORKFLOW, startHarness, type Harness } from './harness.js';

describe.each(backends)('batched submit on $name', (backend) => {
  let h: Harness;
  let alice: string;
  const offers = new Map<string, JobOffer>();

  beforeEach(async (context) => {
    h = await startHarness({ backend, title: context.task.name });
    alice = await h.userToken('alice');
    await h.call('pushWorkflow', { token: alice, body: { source: REPORT_WORKFLOW } });
    offers.clear();
    const verifier = createOfferVerifier([h.server.publicKeyPem]);
    await h.bus.consumeOffers(
      async (delivery) => {
        const offer = verifier.verify(delivery.body);
        offers.set(offer.jobId, offer);
        await delivery.ack();
      },
      { prefetch: 100 },
    );
  });

  afterEach(async () => {
    await h.dispose();
  });

  it('stores and offers the valid items and answers each refused one with its own error', async () => {
    const { jobs } = await h.call('submitJobBatch', {
      token: alice,
      body: {
        jobs: [
          { workflow: 'report', params: { region: 'north' } },
          { workflow: 'no-such-workflow' },
          { workflow: 'report', params: { region: 'south', limit: 'many' } },
          { workflow: 'report', params: { region: 'east' }, labels: ['gpu'], timeoutSeconds: 60 },
        ],
      },
    });
    expect(jobs).toHaveLength(4);
    const [north, missing, badParam, east] = jobs;
    expect(missing).toMatchObject({ error: { code: 'STEWARD_NOT_FOUND' } });
    expect(badParam).toMatchObject({ error: { code: 'STEWARD_PARAMS_INVALID' } });
    expect(JSON.stringify(badParam)).toContain('limit');
    if (!north || !('job' in north) || !east || !('job' in east)) throw new Error(JSON.stringify(jobs));
    expect(north.job).toMatchObject({ state: 'offered', params: { region: 'north', limit: 10 } });
    expect(east.job).toMatchObject({ labels: ['gpu'], params: { region: 'east' } });
    // Offered, with the confirmation recorded, and audited as single submits are.
    await eventually(() => offers.has(north.job.id) && offers.has(east.job.id));
    expect(offers.get(east.job.id)).toMatchObject({ labels: ['gpu'], limits: { timeoutMs: 60_000 } });
    await eventually(async () => (await h.server.store.getJob(north.job.id))?.offerPublishedAt != null);
    const audit = await h.server.store.listAudit({ action: 'job.submit', limit: 10 });
    expect(audit.map((entry) => entry.target).sort()).toEqual([north.job.id, east.job.id].sort());
    expect(audit.find((entry) => entry.target === east.job.id)).toMatchObject({
      actor: 'alice',
      detail: { workflow: 'alice/report@1', labels: ['gpu'], cluster: 'local' },
    });
    const detail = await h.call('showJob', { token: alice, params: { id: north.job.id } });
    expect(detail.steps.map((step) => [step.id, step.state])).toEqual([
      ['numbers', 'pending'],
      ['total', 'pending'],
    ]);
  });

  it(`refuses a batch of more than ${MAX_BATCH_JOBS} jobs, or none, whole and stores nothing`, async () => {
    const tooMany = await h.callError('submitJobBatch', {
      token: alice,
      body: { jobs: Array.from({ length: MAX_BATCH_JOBS + 1 }, () => ({ workflow: 'report' })) },
    });
    expect(tooMany.status).toBe(400);
    expect(tooMany.error.code).toBe('STEWARD_BAD_REQUEST');
    expect(tooMany.error.message).toContain(`at most ${MAX_BATCH_JOBS}`);
    const none = await h.callError('submitJobBatch', { token: alice, body: { jobs: [] } });
    expect(none.status).toBe(400);
    const malformed = await h.callError('submitJobBatch', {
      token: alice,
      body: {
        jobs: [
          { workflow: 'report', params: { region: 'x' } },
          { workflow: 'report', colour: 'red' } as never,
        ],
      },
    });
    expect(malformed.status).toBe(400);
    expect(JSON.stringify(malformed.error)).toContain('jobs.1');
    expect((await h.call('listJobs', { token: alice })).jobs).toEqual([]);
  });

  it('answers a retried batch with the jobs its idempotency keys created', async () => {
    const body = {
      jobs: [
        { workflow: 'report', params: { region: 'a' }, idempotencyKey: 'batch-1-a' },
        { workflow: 'report', params: { region: 'b' }, idempotencyKey: 'batch-1-b' },
      ],
    };
    const first = await h.call('submitJobBatch', { token: alice, body });
    const again = await h.call('submitJobBatch', { token: alice, body });
    const ids = (answer: typeof first) =>
      answer.jobs.map((item) => ('job' in item ? item.job.id : item.error.code));
    expect(ids(again)).toEqual(ids(first));
    expect((await h.call('listJobs', { token: alice })).jobs).toHaveLength(2);
  });

  it('stores a batch of 100 jobs with a few statements, not a dozen per job', async () => {
    const before = h.server.store.statements.snapshot();
    const { jobs } = await h.call('submitJobBatch', {
      token: alice,
      body: {
        jobs: Array.from({ length: 100 }, (_, i) => ({ workflow: 'report', params: { region: `r${i}` } })),
      },
    });
    expect(jobs.every((item) => 'job' in item)).toBe(true);
    await eventually(() => offers.size === 100);
    await eventually(async () =>
      (await h.server.store.listJobs({ user: 'alice', limit: 200 })).every(
        (job) => job.offerPublishedAt !== null,
      ),
    );
    const spent = statementsSince(before, h.server.store.statements.snapshot());
    // Lookups, one transaction of multi-row inserts, the owner check, the confirmations (grouped by turn of
    // the event loop), and the reads of the wait above: well under one statement per job.
    expect(spent.total - spent.notify).toBeLessThan(60);
  });
});

/**
 * The server's side of retries and poison jobs, with a real server, store and embedded bus, and the test in
 * the agent's place (taking offers and publishing events as an agent would).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Delivery } from '../../src/bus/index.js';
import { createOfferVerifier, type JobOffer } from '../../src/protocol/index.js';
import { eventually, REPORT_WORKFLOW, startHarness, stateEvent, type Harness } from './harness.js';

describe('retry policy and poison jobs in the server', () => {
  let h: Harness;
  let alice: string;
  const offers: { offer: JobOffer; delivery: Delivery<unknown> }[] = [];

  beforeEach(async (context) => {
    h = await startHarness({ title: context.task.name, config: { agentLease: '2s' } });
    alice = await h.userToken('alice');
    await h.call('pushWorkflow', { token: alice, body: { source: REPORT_WORKFLOW } });
    offers.length = 0;
  });

  afterEach(async () => {
    await h.dispose();
  });

  /** Takes every offer as it comes (signature checked), leaving it unsettled for the test to decide. */
  async function collectOffers(): Promise<void> {
    const verifier = createOfferVerifier([h.server.publicKeyPem]);
    await h.bus.consumeOffers(
      async (delivery) => {
        offers.push({ offer: verifier.verify(delivery.body), delivery });
      },
      { prefetch: 10 },
    );
  }

  async function submit(extra: { retries?: number } = {}): Promise<string> {
    const job = await h.call('submitJob', {
      token: alice,
      body: { workflow: 'report', params: { region: 'north' }, ...extra },
    });
    return job.id;
  }

  function detail(id: string) {
    return h.call('showJob', { token: alice, params: { id } });
  }

  it('retries a job lost before any step started as attempt 2, with a new token that alone works', async () => {
    await collectOffers();
    const id = await submit();
    const first = await eventually(() => offers[0]);
    await h.bus.publishHeartbeat({
      v: 1,
      type: 'heartbeat',
      agentId: 'agent-1',
      time: Date.now(),
      labels: [],
      capacity: { slots: 1, free: 0 },
      executors: [],
      isolation: 'per-user',
      draining: false,
    });
    await h.bus.publishEvent(stateEvent(first.offer, 1, 'loading'));
    await h.bus.publishEvent(stateEvent(first.offer, 2, 'running'));
    await first.delivery.ack();
    await eventually(async () => (await detail(id)).state === 'running');
    // The agent falls silent: past its lease, the sweep gives the attempt up and offers the next one.
    await h.server.sweep(Date.now() + 10_000);
    const second = await eventually(() => offers[1]);
    expect(second.offer).toMatchObject({ jobId: id, attempt: 2 });
    expect(second.offer.jobToken).not.toBe(first.offer.jobToken);
    const job = await detail(id);
    expect(job).toMatchObject({ state: 'offered', attempt: 2, agentId: null, error: null });
    expect(job.attempts).toMatchObject([
      { attempt: 1, state: 'lost', agentId: 'agent-1', error: { code: 'STEWARD_AGENT_LOST' } },
      { attempt: 2, state: 'offered', agentId: null, error: null },
    ]);
    // The old attempt's token died with it; the new one works.
    const oldToken = await h.raw({
      method: 'GET',
      url: `/api/exec/jobs/${id}/workflow`,
      token: first.offer.jobToken,
    });
    expect(oldToken.status).toBe(401);
    const newToken = await h.raw({
      method: 'GET',
      url: `/api/exec/jobs/${id}/workflow`,
      token: second.offer.jobToken,
    });
    expect(newToken.status).toBe(200);
    // The old agent comes back and reports on attempt 1: it is told to stop, and the job is not touched.
    const controls: unknown[] = [];
    await h.bus.consumeControl('agent-1', async (delivery) => {
      controls.push(delivery.body);
      await delivery.ack();
    });
    await h.bus.publishEvent(stateEvent(first.offer, 3, 'running', { executor: undefined }));
    await eventually(() => controls.length > 0);
    expect(controls[0]).toEqual({ v: 1, type: 'cancel', jobId: id, attempt: 1 });
    expect((await detail(id)).state).toBe('offered');
    expect((await h.server.store.listAudit({ action: 'job.retry', limit: 5 }))[0]).toMatchObject({
      actor: 'system',
      target: id,
      detail: { user: 'alice', attempt: 2, previousAgent: 'agent-1', cause: 'STEWARD_AGENT_LOST' },
    });
  });

  it('ends a lost job that had started a step as lost, saying it was not retried', async () => {
    await collectOffers();
    const id = await submit();
    const first = await eventually(() => offers[0]);
    await h.bus.publishEvent(stateEvent(first.offer, 1, 'running'));
    await h.bus.publishEvent({
      v: 1,
      type: 'step',
      jobId: id,
      attempt: 1,
      seq: 2,
      time: Date.now(),
      agentId: 'agent-1',
      step: { stepId: 'numbers', state: 'running', time: Date.now() },
    });
    await first.delivery.ack();
    await eventually(async () => (await detail(id)).steps[0]?.state === 'running');
    await h.server.sweep(Date.now() + 10_000);
    const job = await detail(id);
    expect(job.state).toBe('lost');
    expect(job.error?.code).toBe('STEWARD_AGENT_LOST');
    expect(job.error?.message).toMatch(
      /not retried \(attempt 1; a step had started and server\.retries\.ran is 0\)$/,
    );
    expect(offers).toHaveLength(1);
  });

  it(`fails a job whose executors die loading it as poison after the bus's delivery limit, never retried`, async () => {
    // In the agent's place: every delivery is taken (loading), its executor dies, the offer is handed back.
    // The first job offered is the poison one; a later job's offer is only taken (it marks "later").
    let deliveries = 0;
    let poison: string | undefined;
    const offered: string[] = [];
    const verifier = createOfferVerifier([h.server.publicKeyPem]);
    await h.bus.consumeOffers(
      async (delivery) => {
        const offer = verifier.verify(delivery.body);
        offered.push(offer.jobId);
        poison ??= offer.jobId;
        if (offer.jobId !== poison) return delivery.ack();
        deliveries += 1;
        const base = (delivery.deliveryCount - 1) * 1_000_000;
        await h.bus.publishEvent(stateEvent(offer, base + 1, 'loading'));
        await h.bus.publishEvent(
          stateEvent(offer, base + 2, 'offered', {
            error: {
              code: 'STEWARD_EXECUTOR_CRASHED',
              message: `executor killed (delivery ${delivery.deliveryCount})`,
            },
          }),
        );
        await delivery.requeue(0);
      },
      { prefetch: 1 },
    );
    const id = await submit({ retries: 5 });
    const job = await eventually(async () => {
      const current = await detail(id);
      return current.state === 'failed' ? current : undefined;
    });
    expect(job.error?.code).toBe('STEWARD_POISON_JOB');
    expect(job.error?.message).toContain(
      `offer dead-lettered after ${h.bus.deliveryLimit} deliveries (the bus's delivery limit is ${h.bus.deliveryLimit})`,
    );
    expect(job.error?.message).toContain('not retried');
    expect(deliveries).toBe(h.bus.deliveryLimit);
    expect(job.attempts).toHaveLength(1);
    // Nothing more: a job submitted now is offered after anything the poison job could still cause.
    const next = await submit();
    await eventually(() => offered.includes(next));
    expect(deliveries).toBe(h.bus.deliveryLimit);
    expect(offered.filter((jobId) => jobId === id)).toHaveLength(h.bus.deliveryLimit);
  });
});

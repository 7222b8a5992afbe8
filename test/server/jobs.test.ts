import http from 'node:http';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DeadLetter, Delivery, Subscription } from '../../src/bus/index.js';
import {
  createOfferVerifier,
  type AgentMessage,
  type JobOffer,
  type JobStepEvent,
} from '../../src/protocol/index.js';
import { backends } from '../store/backends.js';
import { until } from '../support/wait.js';
import {
  eventually,
  REPORT_WORKFLOW,
  startHarness,
  stateEvent,
  type Harness,
  type HarnessCallOptions,
} from './harness.js';

const NOTHING_SWEPT = { expired: 0, lost: 0, adoptedQueued: 0, adoptedUnpublished: 0 };

/** Takes the next offer from the bus as an agent would, verifying its signature with the server's key. */
async function takeOffer(
  h: Harness,
): Promise<{ offer: JobOffer; delivery: Delivery<unknown>; subscription: Subscription }> {
  const verifier = createOfferVerifier([h.server.publicKeyPem]);
  let subscription: Subscription | undefined;
  const delivery = await new Promise<Delivery<unknown>>((resolve) => {
    void h.bus.consumeOffers(async (d) => resolve(d), { prefetch: 1 }).then((s) => (subscription = s));
  });
  return { offer: verifier.verify(delivery.body), delivery, subscription: subscription! };
}

function stepEvent(
  offer: JobOffer,
  seq: number,
  stepId: string,
  state: JobStepEvent['step']['state'],
  rows?: number,
): JobStepEvent {
  return {
    v: 1,
    type: 'step',
    jobId: offer.jobId,
    attempt: offer.attempt,
    seq,
    time: Date.now(),
    agentId: 'agent-1',
    step: { stepId, state, time: Date.now(), ...(rows !== undefined ? { rows } : {}) },
  };
}

describe.each(backends)('jobs on $name', (backend) => {
  let h: Harness;
  let alice: string;
  beforeEach(async (context) => {
    h = await startHarness({ backend, title: context.task.name, config: { loadTimeout: '2m' } });
    alice = await h.userToken('alice');
    await push(alice);
  });
  afterEach(async () => {
    await h.dispose();
  });

  type SubmitBody = HarnessCallOptions<'submitJob'>['body'];
  const REPORT_JOB: SubmitBody = { workflow: 'report', params: { region: 'emea' } };

  /** Pushes `report` into the user's personal space. */
  async function push(token: string) {
    await h.call('pushWorkflow', { token, body: { source: REPORT_WORKFLOW } });
  }

  /** Submits a job (201, or the call throws). */
  async function submit(token = alice, body: SubmitBody = REPORT_JOB) {
    return h.call('submitJob', { token, body });
  }

  async function show(id: string, token = alice) {
    return h.call('showJob', { token, params: { id } });
  }

  /** Polls the job's detail until `done` holds for it. */
  function detailWhen(id: string, done: (detail: Awaited<ReturnType<typeof show>>) => boolean) {
    return eventually(async () => {
      const detail = await show(id);
      return done(detail) ? detail : undefined;
    });
  }

  it('publishes a signed offer on submit and records the job as offered', async () => {
    const taking = takeOffer(h);
    const submitted = await submit(alice, {
      workflow: 'report@1',
      params: { region: 'emea', limit: '5' },
      labels: ['gpu'],
      timeoutSeconds: 60,
    });
    expect(submitted).toMatchObject({
      user: 'alice',
      state: 'offered',
      attempt: 1,
      workflow: { name: 'report', version: 1 },
      params: { region: 'emea', limit: 5 },
      labels: ['gpu'],
    });
    expect(submitted.id).toMatch(/^\d{17}-[0-9a-f]{8}$/);
    const { offer } = await taking;
    expect(offer).toMatchObject({
      jobId: submitted.id,
      user: 'alice',
      labels: ['gpu'],
      params: { region: 'emea', limit: 5 },
      limits: { timeoutMs: 60_000 },
    });
    expect(offer.jobToken).toMatch(/^stj_/);
    expect(offer.deadline - offer.issuedAt).toBe(120_000);
    expect(offer.workflow.digest).toMatch(/^[0-9a-f]{64}$/);
    const audit = await h.server.store.listAudit({ action: 'job.submit', limit: 5 });
    expect(audit[0]).toMatchObject({ actor: 'alice', target: submitted.id });
  });

  it("publishes an offer only once its job's record is durable", async () => {
    // What the server does, in order: the store's flushes (begun, done) and the offer's publish.
    const order: string[] = [];
    const store = h.server.store;
    const durable = store.durable.bind(store);
    store.durable = () => {
      order.push('flush');
      return durable().then(() => void order.push('flushed'));
    };
    const publish = h.bus.publishOffer.bind(h.bus);
    h.bus.publishOffer = (offer) => {
      order.push('publish');
      return publish(offer);
    };
    await submit();
    expect(order).toContain('publish');
    expect(order.slice(0, order.indexOf('publish'))).toContain('flushed');
  });

  it('answers a retried submission with the same idempotency key with the job it created, publishing once', async () => {
    const offers: unknown[] = [];
    await h.bus.consumeOffers(async (delivery) => void offers.push(delivery.body), { prefetch: 10 });
    const body: SubmitBody = { ...REPORT_JOB, idempotencyKey: 'run-7f3a' };
    // Concurrent retries too: the unique index decides which one creates the job.
    const answers = await Promise.all([submit(alice, body), submit(alice, body), submit(alice, body)]);
    const ids = new Set(answers.map((answer) => answer.id));
    expect(ids.size).toBe(1);
    // Another user's key is their own (bob runs his own `report`, in his personal space).
    const bob = await h.userToken('bob');
    await push(bob);
    const other = await submit(bob, body);
    expect(ids.has(other.id)).toBe(false);
    await eventually(() => offers.length >= 2 || undefined);
    expect(offers).toHaveLength(2);
    const mine = await h.call('listJobs', { token: alice });
    expect(mine.jobs).toHaveLength(1);
    const bad = await h.callError('submitJob', {
      token: alice,
      body: { ...body, idempotencyKey: 'has space' },
    });
    expect(bad.status).toBe(400);
    expect(JSON.stringify(bad.error)).toMatch(/idempotencyKey/);
  });

  it('offers a job that a dead server left queued, with a new token, once, whichever server sweeps', async () => {
    // What a server that died between storing a job and offering it leaves behind.
    const created = Date.now() - 20_000;
    const { job } = await h.server.store.insertJobOnce({
      id: '20260101000000000-deadbeef',
      user: 'alice',
      workflow: {
        space: 'alice',
        name: 'report',
        version: 1,
        digest: (await h.server.store.getWorkflow('alice', 'report'))!.digest,
      },
      params: { region: 'emea', limit: 10 },
      labels: [],
      timeoutMs: null,
      jobTokenHash: 'f'.repeat(64),
      createdAt: created,
      steps: [],
      loadDeadline: created + 120_000,
    });
    const taking = takeOffer(h);
    // Two sweeps at once (two servers): one offer.
    await Promise.all([h.server.sweep(), h.server.sweep()]);
    const { offer } = await taking;
    expect(offer).toMatchObject({ jobId: job.id, attempt: 1, deadline: created + 120_000 });
    const stored = await h.server.store.getJob(job.id);
    expect(stored?.state).toBe('offered');
    // The offer's token fetches the workflow (the call throws on anything but 200).
    await h.call('execWorkflow', { token: offer.jobToken, params: { id: job.id } });
    // No second offer: the next job's offer is the first one left in the queue (first in, first out).
    const offers: JobOffer[] = [];
    const verifier = createOfferVerifier([h.server.publicKeyPem]);
    await h.bus.consumeOffers(async (delivery) => void offers.push(verifier.verify(delivery.body)), {
      prefetch: 10,
    });
    const next = await submit();
    await eventually(() => offers.length > 0);
    expect(offers.map((later) => later.jobId)).toEqual([next.id]);
  });

  it('offers again, as attempt 2, a job whose server recorded the offer but died before publishing it', async () => {
    const taking = takeOffer(h);
    const submitted = await submit();
    const { offer: first } = await taking;
    // A published offer is recorded as such (in the background, after the answer) and left alone by later
    // sweeps.
    await until(
      'the offer recorded as published',
      async () => (await h.server.store.getJob(submitted.id))?.offerPublishedAt != null,
    );
    expect(await h.server.sweep(Date.now() + 30_000)).toEqual(NOTHING_SWEPT);

    // What a server that died between `offered` and publishing leaves behind.
    const created = Date.now() - 20_000;
    const { job } = await h.server.store.insertJobOnce({
      id: '20260101000000000-0ff0ff00',
      user: 'alice',
      workflow: { space: 'alice', ...first.workflow },
      params: first.params,
      labels: [],
      timeoutMs: null,
      jobTokenHash: 'e'.repeat(64),
      createdAt: created,
      steps: [],
      loadDeadline: created + 120_000,
    });
    await h.server.store.transitionJob(job.id, 'offered', {}, { now: created + 5 });
    const retaking = takeOffer(h);
    await Promise.all([h.server.sweep(), h.server.sweep()]);
    const { offer } = await retaking;
    expect(offer).toMatchObject({ jobId: job.id, attempt: 2 });
    const stored = await h.server.store.getJob(job.id);
    expect(stored).toMatchObject({ state: 'offered', attempt: 2 });
    expect(stored?.offerPublishedAt).not.toBeNull();
    // The new attempt's token works (the first attempt's token was replaced).
    await h.call('execWorkflow', { token: offer.jobToken, params: { id: job.id } });
  });

  it('refuses params that do not match the workflow with 422', async () => {
    const response = await h.callError('submitJob', {
      token: alice,
      body: { workflow: 'report', params: { limit: 'many' } },
    });
    expect(response.status).toBe(422);
    expect(response.error.code).toBe('STEWARD_PARAMS_INVALID');
    expect(response.error.message).toContain('params.');
    const unknown = await h.callError('submitJob', { token: alice, body: { workflow: 'nope', params: {} } });
    expect(unknown.status).toBe(404);
  });

  it("hides a user's job from another user (404) but shows it to admins", async () => {
    const job = await submit();
    const bob = await h.userToken('bob');
    for (const route of ['showJob', 'listResults', 'jobLogs'] as const) {
      const response = await h.callError(route, { token: bob, params: { id: job.id } });
      expect(response.status, route).toBe(404);
      expect(response.error).toEqual({ code: 'STEWARD_NOT_FOUND', message: `no job ${job.id}` });
    }
    expect((await h.callError('cancelJob', { token: bob, params: { id: job.id } })).status).toBe(404);
    expect((await h.call('listJobs', { token: bob })).jobs).toEqual([]);
    // Asking for another user's jobs is refused, not answered with one's own.
    expect((await h.callError('listJobs', { token: bob, query: { user: 'alice' } })).status).toBe(403);
    const admin = await h.adminToken();
    expect((await show(job.id, admin)).user).toBe('alice');
    expect((await h.call('listJobs', { token: admin, query: { user: 'alice' } })).jobs).toHaveLength(1);
    const forbidden = await h.server.store.listAudit({ actor: 'bob', action: 'forbidden', limit: 10 });
    expect(forbidden.length).toBeGreaterThanOrEqual(4);
  });

  it('applies an agent event with the same seq only once and tracks steps', async () => {
    const taking = takeOffer(h);
    const job = await submit();
    const { offer } = await taking;
    const executor = { pid: 4242, osUser: 'alice', uid: 1001, gid: 1001, groups: [1001, 27] };
    const events: AgentMessage[] = [
      stateEvent(offer, 1, 'loading', { executor }),
      stateEvent(offer, 2, 'running'),
      stepEvent(offer, 3, 'numbers', 'running'),
      stepEvent(offer, 3, 'numbers', 'running'),
      stepEvent(offer, 4, 'numbers', 'succeeded', 3),
      stepEvent(offer, 4, 'numbers', 'failed'),
    ];
    for (const event of events) await h.bus.publishEvent(event);
    // The job row and its steps are two reads: wait for both (a read between them may see one side only).
    const detail = await detailWhen(
      job.id,
      (current) => current.state === 'running' && current.steps[0]?.state === 'succeeded',
    );
    expect(detail).toMatchObject({ state: 'running', agentId: 'agent-1', executor });
    expect(detail.startedAt).not.toBeNull();
    expect(detail.steps[0]).toMatchObject({ id: 'numbers', kind: 'sql', state: 'succeeded', rows: 3 });
    expect(detail.steps[1]).toMatchObject({ id: 'total', state: 'pending' });
    // seq 2 again, now claiming success: that (job, attempt, seq) was applied already, so it is ignored.
    await h.bus.publishEvent(stateEvent(offer, 2, 'succeeded'));
    await h.bus.publishEvent(
      stateEvent(offer, 5, 'failed', {
        error: { code: 'STEWARD_STEP_FAILED', message: 'step total failed' },
      }),
    );
    const ended = await detailWhen(job.id, (current) => current.state !== 'running');
    expect(ended.state).toBe('failed');
    expect(ended.error).toEqual({ code: 'STEWARD_STEP_FAILED', message: 'step total failed' });
  });

  it('applies a batch of events like the same events sent one by one, and refuses a mixed-agent batch', async () => {
    const taking = takeOffer(h);
    const job = await submit();
    const { offer } = await taking;
    const letters: DeadLetter[] = [];
    await h.bus.consumeDeadLetters((letter) => void letters.push(letter));
    // Another agent's event inside agent-1's batch: the whole message is refused, nothing of it applied.
    await h.bus.publishEvent({
      v: 1,
      type: 'events',
      agentId: 'agent-1',
      events: [stateEvent(offer, 1, 'loading'), { ...stateEvent(offer, 2, 'running'), agentId: 'agent-2' }],
    });
    await eventually(() => letters.length > 0);
    expect(letters[0]!.reason).toContain('every event of a batch must name the agent');
    expect((await show(job.id)).state).toBe('offered');
    await h.bus.publishEvent({
      v: 1,
      type: 'events',
      agentId: 'agent-1',
      events: [
        stateEvent(offer, 1, 'loading'),
        stateEvent(offer, 2, 'running'),
        stepEvent(offer, 3, 'numbers', 'running'),
        stepEvent(offer, 4, 'numbers', 'succeeded', 3),
        stepEvent(offer, 5, 'total', 'running'),
        stepEvent(offer, 6, 'total', 'succeeded', 1),
        stateEvent(offer, 7, 'succeeded'),
      ],
    });
    const ended = await detailWhen(job.id, (current) => current.state === 'succeeded');
    expect(ended.steps.map((step) => step.state)).toEqual(['succeeded', 'succeeded']);
    expect(ended.steps[0]?.rows).toBe(3);
  });

  it('dead-letters an agent message that fails the schema without stopping the consumer', async () => {
    const letters: unknown[] = [];
    await h.bus.consumeDeadLetters((letter) => void letters.push(letter));
    await h.bus.publishEvent({ v: 1, type: 'state', jobId: 'x' } as unknown as AgentMessage);
    await eventually(() => letters.length > 0);
    expect(letters[0]).toMatchObject({
      queue: 'events',
      reason: expect.stringContaining('invalid agent message') as unknown,
    });
    await h.bus.publishHeartbeat({
      v: 1,
      type: 'heartbeat',
      agentId: 'agent-9',
      time: Date.now(),
      labels: ['x'],
      capacity: { slots: 2, free: 1 },
      executors: [],
      isolation: 'per-user',
      draining: false,
    });
    const agents = await eventually(async () => {
      const { agents: live } = await h.call('listAgents', { token: alice });
      return live.length > 0 ? live : undefined;
    });
    expect(agents[0]).toMatchObject({ id: 'agent-9', capacity: { slots: 2, free: 1 } });
  });

  it('expires an offer nobody loaded within the load timeout', async () => {
    const job = await submit();
    // Recorded as published after the answer: until then a sweep a minute ahead would offer it again.
    await until(
      'the offer recorded as published',
      async () => (await h.server.store.getJob(job.id))?.offerPublishedAt != null,
    );
    expect(await h.server.sweep(Date.now() + 60_000)).toEqual(NOTHING_SWEPT);
    expect(await h.server.sweep(Date.now() + 121_000)).toEqual({ ...NOTHING_SWEPT, expired: 1 });
    const detail = await show(job.id);
    expect(detail.state).toBe('expired');
    expect(detail.error).toEqual({
      code: 'STEWARD_LOAD_TIMEOUT',
      message: 'no executor loaded the job within 2m',
    });
  });

  it('expires overdue offers on its own with the periodic sweeper', async () => {
    await h.dispose();
    h = await startHarness({ backend, title: 'sweeper', config: { loadTimeout: '300ms' } });
    alice = await h.userToken('alice');
    await push(alice);
    const job = await submit();
    const detail = await detailWhen(job.id, (current) => current.state === 'expired');
    expect(detail.error?.message).toBe('no executor loaded the job within 300ms');
  });

  it('fails a job whose offer passed the delivery limit', async () => {
    await h.dispose();
    h = await startHarness({ backend, title: 'delivery limit' });
    alice = await h.userToken('alice');
    await push(alice);
    // An agent that rejects every offer: the bus redelivers until its limit, then dead-letters.
    await h.bus.consumeOffers(async (delivery) => delivery.requeue(0), { prefetch: 1 });
    const job = await submit();
    const detail = await detailWhen(job.id, (current) => current.state === 'failed');
    expect(detail.error?.code).toBe('STEWARD_DELIVERY_LIMIT');
    expect(detail.error?.message).toMatch(/delivered \d+ times/);
  });

  it('cancels an offered job at once and refuses to cancel it again', async () => {
    const job = await submit();
    const canceled = await h.call('cancelJob', { token: alice, params: { id: job.id } });
    expect(canceled).toMatchObject({
      state: 'canceled',
      error: { code: 'STEWARD_JOB_CANCELED', message: 'canceled by alice' },
    });
    const again = await h.callError('cancelJob', { token: alice, params: { id: job.id } });
    expect(again.status).toBe(409);
    expect(again.error.code).toBe('STEWARD_JOB_NOT_CANCELABLE');
    expect((await h.server.store.listAudit({ action: 'job.cancel', limit: 5 })).map((e) => e.target)).toEqual(
      [job.id],
    );
  });

  it('asks the agent to cancel a running job and lets its final event end it', async () => {
    const taking = takeOffer(h);
    const job = await submit();
    const { offer } = await taking;
    const controls: unknown[] = [];
    await h.bus.consumeControl('agent-1', async (delivery) => {
      controls.push(delivery.body);
      await delivery.ack();
    });
    await h.bus.publishEvent(stateEvent(offer, 1, 'running'));
    await eventually(async () => (await h.server.store.getJob(job.id))?.state === 'running');
    const response = await h.call('cancelJob', { token: alice, params: { id: job.id } });
    expect(response.state).toBe('running');
    await eventually(() => controls.length > 0);
    expect(controls[0]).toEqual({ v: 1, type: 'cancel', jobId: job.id, attempt: 1 });
    expect((await h.server.store.getJob(job.id))?.cancelRequested).toBe(true);
    await h.bus.publishEvent(
      stateEvent(offer, 2, 'canceled', {
        error: { code: 'STEWARD_JOB_CANCELED', message: 'canceled by alice' },
      }),
    );
    await eventually(async () => (await h.server.store.getJob(job.id))?.state === 'canceled');
  });

  it('asks an agent to stop a job that expired while it was loading', async () => {
    const taking = takeOffer(h);
    const job = await submit();
    const { offer } = await taking;
    const controls: unknown[] = [];
    await h.bus.consumeControl('agent-1', async (delivery) => {
      controls.push(delivery.body);
      await delivery.ack();
    });
    await h.bus.publishEvent(stateEvent(offer, 1, 'loading'));
    await eventually(async () => (await h.server.store.getJob(job.id))?.state === 'loading');
    expect(await h.server.sweep(Date.now() + 121_000)).toEqual({ ...NOTHING_SWEPT, expired: 1 });
    await h.bus.publishEvent(stateEvent(offer, 2, 'running'));
    await eventually(() => controls.length > 0);
    expect(controls[0]).toEqual({ v: 1, type: 'cancel', jobId: job.id, attempt: 1 });
    expect((await h.server.store.getJob(job.id))?.state).toBe('expired');
  });

  it('streams a snapshot, job and step changes, and an end event over SSE', async () => {
    const { url } = await h.server.listen();
    const taking = takeOffer(h);
    const job = await submit();
    const { offer } = await taking;
    const received: { event: string; data: unknown }[] = [];
    const done = new Promise<void>((resolve, reject) => {
      const request = http.get(
        `${url}/api/jobs/${job.id}/events`,
        { headers: { authorization: `Bearer ${alice}` } },
        (response) => {
          expect(response.statusCode).toBe(200);
          expect(response.headers['content-type']).toContain('text/event-stream');
          let buffer = '';
          response.setEncoding('utf8');
          response.on('data', (chunk: string) => {
            buffer += chunk;
            let index: number;
            while ((index = buffer.indexOf('\n\n')) !== -1) {
              const block = buffer.slice(0, index);
              buffer = buffer.slice(index + 2);
              const event = /^event: (.*)$/m.exec(block)?.[1];
              const data = /^data: (.*)$/m.exec(block)?.[1];
              if (event && data) {
                received.push({ event, data: JSON.parse(data) as unknown });
                if (event === 'snapshot') {
                  void (async () => {
                    await h.bus.publishEvent(stateEvent(offer, 1, 'running'));
                    await h.bus.publishEvent(stepEvent(offer, 2, 'numbers', 'succeeded', 3));
                    await h.bus.publishEvent(stateEvent(offer, 3, 'succeeded'));
                  })();
                }
              }
            }
          });
          response.on('end', () => resolve());
          response.on('error', reject);
        },
      );
      request.on('error', reject);
    });
    await done;
    expect(received.map((r) => r.event)).toEqual(['snapshot', 'job', 'step', 'job', 'end']);
    expect(received[0]!.data).toMatchObject({
      id: job.id,
      state: 'offered',
      steps: [{ id: 'numbers' }, { id: 'total' }],
    });
    expect(received[2]!.data).toMatchObject({ id: 'numbers', state: 'succeeded', rows: 3 });
    expect(received[4]!.data).toMatchObject({
      state: 'succeeded',
      steps: [{ id: 'numbers', state: 'succeeded' }, { id: 'total' }],
    });
  });

  it('ends the SSE stream at once for a job that already ended', async () => {
    const job = await submit();
    await h.call('cancelJob', { token: alice, params: { id: job.id } });
    const response = await h.call('jobEvents', { token: alice, params: { id: job.id } });
    expect(response.status).toBe(200);
    expect(response.text).toMatch(
      /^event: snapshot\ndata: .*\n\nevent: end\ndata: .*"state":"canceled".*\n\n$/s,
    );
  });
});

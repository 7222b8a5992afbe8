/**
 * Attempt claims: the first agent's applied `loading` event (or, from executors of earlier versions, the
 * workflow fetch) grants the job's attempt to one agent. A real server and
 * store (SQLite and PostgreSQL) with the embedded bus; the test fetches and publishes events in the agents'
 * and executors' place.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Delivery } from '../../src/bus/index.js';
import { createOfferVerifier, type JobOffer, type JobStateEvent } from '../../src/protocol/index.js';
import { backends } from '../store/backends.js';
import {
  errorOf,
  eventually,
  REPORT_WORKFLOW,
  startHarness,
  stateEvent as eventOf,
  type Harness,
} from './harness.js';

const NOTHING_SWEPT = { expired: 0, lost: 0, adoptedQueued: 0, adoptedUnpublished: 0 };

/** A state event of the given agent. */
const stateEvent = (
  offer: JobOffer,
  agentId: string,
  seq: number,
  state: JobStateEvent['state'],
  extra: Partial<JobStateEvent> = {},
): JobStateEvent => eventOf(offer, seq, state, { agentId, ...extra });

describe.each(backends)('attempt claims on $name', (backend) => {
  let h: Harness;
  let alice: string;
  const offers: { offer: JobOffer; delivery: Delivery<unknown> }[] = [];

  beforeEach(async (context) => {
    h = await startHarness({ backend, title: context.task.name, config: { agentLease: '2s' } });
    alice = await h.userToken('alice');
    await h.call('pushWorkflow', { token: alice, body: { source: REPORT_WORKFLOW } });
    offers.length = 0;
    const verifier = createOfferVerifier([h.server.publicKeyPem]);
    await h.bus.consumeOffers(
      async (delivery) => {
        offers.push({ offer: verifier.verify(delivery.body), delivery });
      },
      { prefetch: 10 },
    );
  });

  afterEach(async () => {
    await h.dispose();
  });

  async function submit(): Promise<{ id: string; offer: JobOffer }> {
    const { id } = await h.call('submitJob', {
      token: alice,
      body: { workflow: 'report', params: { region: 'north' } },
    });
    const taken = await eventually(() => offers.find((o) => o.offer.jobId === id));
    return { id, offer: taken.offer };
  }

  /** Raw: some tests send a malformed agent id. */
  function fetchAs(offer: { jobId: string; jobToken: string }, agent?: string, claim?: 'event') {
    const query = agent === undefined ? '' : `?agent=${agent}${claim ? `&claim=${claim}` : ''}`;
    return h.raw({
      method: 'GET',
      url: `/api/exec/jobs/${offer.jobId}/workflow${query}`,
      token: offer.jobToken,
    });
  }

  function detail(id: string) {
    return h.call('showJob', { token: alice, params: { id } });
  }

  async function heartbeat(agentId: string): Promise<void> {
    await h.bus.publishHeartbeat({
      v: 1,
      type: 'heartbeat',
      agentId,
      time: Date.now(),
      labels: [],
      capacity: { slots: 1, free: 0 },
      executors: [],
      isolation: 'per-user',
      draining: false,
    });
    // Heartbeats are applied asynchronously: a sweep run before this one lands would find the agent silent.
    const admin = await h.adminToken();
    await eventually(async () => {
      const listed = await h.call('listAgents', { token: admin });
      return listed.agents.some((agent) => agent.id === agentId);
    });
  }

  it('grants an attempt to the first agent that fetches it, again to that agent, and refuses any other', async () => {
    const { offer } = await submit();
    expect((await fetchAs(offer, 'agent-a')).status).toBe(200);
    const refused = await fetchAs(offer, 'agent-b');
    expect(refused.status).toBe(409);
    expect(errorOf(refused)).toMatchObject({
      code: 'STEWARD_ATTEMPT_CLAIMED',
      details: { claimedBy: 'agent-a' },
    });
    expect(errorOf(refused).message).toMatch(/held by agent agent-a; agent agent-b must not load it/);
    // Its own executor retrying the fetch, or the offer redelivered to it: fine.
    expect((await fetchAs(offer, 'agent-a')).status).toBe(200);
    expect((await fetchAs(offer, 'agent-b')).status).toBe(409);
    // An agent id that is not one is refused before anything is claimed.
    expect((await fetchAs(offer, 'no%20such%2Fagent')).status).toBe(400);
  });

  it('grants an attempt to exactly one of several agents fetching it at once', async () => {
    const { offer } = await submit();
    const agents = Array.from({ length: 8 }, (_, index) => `agent-${index}`);
    const answers = await Promise.all(agents.map((agent) => fetchAs(offer, agent)));
    expect(answers.filter((answer) => answer.status === 200)).toHaveLength(1);
    const holder = agents[answers.findIndex((answer) => answer.status === 200)];
    for (const answer of answers.filter((a) => a.status !== 200)) {
      expect(answer.status).toBe(409);
      expect(errorOf(answer)).toMatchObject({
        code: 'STEWARD_ATTEMPT_CLAIMED',
        details: { claimedBy: holder },
      });
    }
  });

  it('ignores the events of an agent that does not hold the attempt and asks it to stop when it reports running', async () => {
    const { id, offer } = await submit();
    const controls: unknown[] = [];
    await h.bus.consumeControl('agent-b', async (delivery) => {
      controls.push(delivery.body);
      await delivery.ack();
    });
    // Both agents report loading: agent-a's, applied first, claims the attempt; agent-b's is refused.
    await h.bus.publishEvent(stateEvent(offer, 'agent-a', 1, 'loading'));
    await eventually(async () => (await detail(id)).state === 'loading');
    await h.bus.publishEvent(stateEvent(offer, 'agent-b', 1_000_001, 'loading'));
    expect((await fetchAs(offer, 'agent-b', 'event')).status).toBe(409);
    expect((await fetchAs(offer, 'agent-a', 'event')).status).toBe(200);
    // The claim makes agent-a the job's agent: a cancel now would reach the agent that loads the job.
    expect((await detail(id)).agentId).toBe('agent-a');
    // An executor crash reported by the other agent retries nothing.
    await h.bus.publishEvent(
      stateEvent(offer, 'agent-b', 1_000_002, 'failed', {
        error: { code: 'STEWARD_EXECUTOR_CRASHED', message: 'not the holder' },
      }),
    );
    await h.bus.publishEvent(stateEvent(offer, 'agent-b', 1_000_003, 'running'));
    await eventually(() => controls.length > 0);
    expect(controls[0]).toEqual({ v: 1, type: 'cancel', jobId: id, attempt: 1 });
    expect((await detail(id)).state).toBe('loading');
    await h.bus.publishEvent(stateEvent(offer, 'agent-a', 2, 'running'));
    await eventually(async () => (await detail(id)).state === 'running');
    await h.bus.publishEvent(
      stateEvent(offer, 'agent-b', 1_000_004, 'failed', {
        error: { code: 'STEWARD_STEP_FAILED', message: 'a duplicate must not end the job' },
      }),
    );
    await h.bus.publishEvent(stateEvent(offer, 'agent-a', 3, 'succeeded'));
    await eventually(async () => (await detail(id)).state === 'succeeded');
    expect(await detail(id)).toMatchObject({ agentId: 'agent-a', attempt: 1, error: null });
    expect(offers).toHaveLength(1);
  });

  it('frees the claim when its agent hands the offer back, so another agent may load it', async () => {
    const { id, offer } = await submit();
    await h.bus.publishEvent(stateEvent(offer, 'agent-a', 1, 'loading'));
    await eventually(async () => (await detail(id)).state === 'loading');
    expect((await fetchAs(offer, 'agent-a')).status).toBe(200);
    await h.bus.publishEvent(
      stateEvent(offer, 'agent-a', 2, 'offered', {
        error: { code: 'STEWARD_EXECUTOR_CRASHED', message: 'the executor ended while loading the job' },
      }),
    );
    await eventually(async () => (await detail(id)).state === 'offered');
    expect((await detail(id)).error?.code).toBe('STEWARD_EXECUTOR_CRASHED');
    expect((await fetchAs(offer, 'agent-b')).status).toBe(200);
    expect((await fetchAs(offer, 'agent-a')).status).toBe(409);
  });

  it("lets the claim's agent release it before the job starts, so another agent loads the attempt before the hand-back event arrives", async () => {
    const { id, offer } = await submit();
    const release = (agent: string, token = offer.jobToken) =>
      h.raw({
        method: 'DELETE',
        url: `/api/exec/jobs/${id}/claim?agent=${agent}`,
        token,
      });
    expect((await fetchAs(offer, 'agent-a')).status).toBe(200);
    // Only the holder can release: another agent's release changes nothing.
    expect((await release('agent-b')).status).toBe(204);
    expect((await fetchAs(offer, 'agent-b')).status).toBe(409);
    // A wrong token or a malformed agent id is refused outright.
    expect((await release('agent-a', 'stj_not-the-token')).status).toBe(401);
    expect((await release('no%20such%2Fagent')).status).toBe(400);
    // The holder's executor died while loading: its agent releases the claim (again: idempotent), and the
    // redelivered offer loads elsewhere at once, with no `offered` event applied yet.
    expect((await release('agent-a')).status).toBe(204);
    expect((await release('agent-a')).status).toBe(204);
    expect((await detail(id)).state).toBe('offered');
    expect((await fetchAs(offer, 'agent-b')).status).toBe(200);
    expect((await fetchAs(offer, 'agent-a')).status).toBe(409);
    // The hand-back event that follows comes from an agent that no longer holds the attempt: ignored.
    await h.bus.publishEvent(
      stateEvent(offer, 'agent-a', 1, 'offered', {
        error: { code: 'STEWARD_EXECUTOR_CRASHED', message: 'executor died while loading' },
      }),
    );
    await h.bus.publishEvent(stateEvent(offer, 'agent-b', 1_000_001, 'loading'));
    await h.bus.publishEvent(stateEvent(offer, 'agent-b', 1_000_002, 'running'));
    await eventually(async () => (await detail(id)).state === 'running');
    expect(await detail(id)).toMatchObject({ agentId: 'agent-b', attempt: 1, error: null });
    // Once the job runs, its claim stays: a release is a no-op.
    expect((await release('agent-b')).status).toBe(204);
    expect((await fetchAs(offer, 'agent-a')).status).toBe(409);
    expect(offers).toHaveLength(1);
  });

  it('retries a job claimed by an agent silent past its lease as not started; the new attempt is claimable by another agent', async () => {
    const { id, offer } = await submit();
    await heartbeat('agent-a');
    await h.bus.publishEvent(stateEvent(offer, 'agent-a', 1, 'loading'));
    expect((await fetchAs(offer, 'agent-a')).status).toBe(200);
    await eventually(async () => (await detail(id)).state === 'loading');
    // agent-a is alive: a job loading on it is never touched.
    expect(await h.server.sweep(Date.now())).toEqual(NOTHING_SWEPT);
    expect((await detail(id)).state).toBe('loading');
    // agent-a was killed: its redelivered offer is refused elsewhere, so the lease sweep retries the job.
    expect((await fetchAs(offer, 'agent-b')).status).toBe(409);
    await h.server.sweep(Date.now() + 10_000);
    const second = await eventually(() => offers.find((o) => o.offer.jobId === id && o.offer.attempt === 2));
    const job = await detail(id);
    expect(job).toMatchObject({ state: 'offered', attempt: 2, agentId: null });
    expect(job.attempts[0]).toMatchObject({
      attempt: 1,
      state: 'lost',
      error: { code: 'STEWARD_AGENT_LOST' },
    });
    expect(job.attempts[0]?.error?.message).toMatch(/while loading the job; it had not started/);
    expect((await fetchAs(offer, 'agent-a')).status).toBe(401);
    expect((await fetchAs(second.offer, 'agent-b')).status).toBe(200);
    expect((await fetchAs(second.offer, 'agent-a')).status).toBe(409);
  });

  it('retries a job whose agent claimed it and died before its loading event reached the server', async () => {
    const { id, offer } = await submit();
    await heartbeat('agent-a');
    expect((await fetchAs(offer, 'agent-a')).status).toBe(200);
    expect((await detail(id)).state).toBe('offered');
    expect(await h.server.sweep(Date.now())).toEqual(NOTHING_SWEPT);
    await h.server.sweep(Date.now() + 10_000);
    await eventually(() => offers.find((o) => o.offer.jobId === id && o.offer.attempt === 2));
    const job = await detail(id);
    expect(job).toMatchObject({ state: 'offered', attempt: 2 });
    expect(job.attempts[0]).toMatchObject({
      attempt: 1,
      state: 'lost',
      error: { code: 'STEWARD_AGENT_LOST' },
    });
  });

  it('leaves a job just claimed by an agent whose first heartbeat has not arrived yet; retries it a lease later', async () => {
    const { id, offer } = await submit();
    // A new agent's executor can fetch before the server has applied that agent's first heartbeat.
    expect((await fetchAs(offer, 'agent-new')).status).toBe(200);
    expect(await h.server.sweep(Date.now())).toEqual(NOTHING_SWEPT);
    expect((await fetchAs(offer, 'agent-new')).status).toBe(200);
    // Still nothing from it a lease later: it is as good as dead.
    expect(await h.server.sweep(Date.now() + 10_000)).toEqual({ ...NOTHING_SWEPT, lost: 1 });
    await eventually(() => offers.find((o) => o.offer.jobId === id && o.offer.attempt === 2));
    expect((await detail(id)).attempts[0]).toMatchObject({ attempt: 1, state: 'lost' });
  });

  it("claims the attempt with the first agent's loading event; a fetch that checks the claim waits for that event", async () => {
    const { id, offer } = await submit();
    // No loading event applied yet: the checking fetch is answered 503, which the executor retries.
    const early = await fetchAs(offer, 'agent-a', 'event');
    expect(early.status).toBe(503);
    expect(errorOf(early)).toMatchObject({ code: 'STEWARD_UNAVAILABLE' });
    expect(errorOf(early).message).toMatch(/agent agent-a's loading report has not been applied yet/);
    await h.bus.publishEvent(stateEvent(offer, 'agent-a', 1, 'loading'));
    await h.bus.publishEvent(stateEvent(offer, 'agent-b', 1_000_001, 'loading'));
    await eventually(async () => (await fetchAs(offer, 'agent-a', 'event')).status === 200);
    const refused = await fetchAs(offer, 'agent-b', 'event');
    expect(refused.status).toBe(409);
    expect(errorOf(refused)).toMatchObject({
      code: 'STEWARD_ATTEMPT_CLAIMED',
      details: { claimedBy: 'agent-a' },
    });
    // A fetch that claims (an executor of an earlier version) is refused alike; one naming no agent (the
    // holder's, whose confirmed loading event claims) is served.
    expect((await fetchAs(offer, 'agent-b')).status).toBe(409);
    expect((await fetchAs(offer)).status).toBe(200);
    expect(await detail(id)).toMatchObject({ state: 'loading', agentId: 'agent-a', attempt: 1 });
  });
});

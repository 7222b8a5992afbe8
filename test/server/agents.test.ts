/**
 * The agent registry and its admin controls: drain and resume go to the named agent's control queue, only
 * from admins, only for agents that reported, and are audited; the registry shows what heartbeats say.
 * A real server and store (SQLite and PostgreSQL) with the embedded bus; the test stands in for the agent.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Control } from '../../src/protocol/index.js';
import { backends } from '../store/backends.js';
import { errorOf, eventually, startHarness, type Harness } from './harness.js';

describe.each(backends)('agent registry and controls on $name', (backend) => {
  let h: Harness;
  let admin: string;
  let alice: string;
  const controls: Control[] = [];

  beforeEach(async (context) => {
    h = await startHarness({ backend, title: context.task.name });
    admin = await h.adminToken();
    alice = await h.userToken('alice');
    controls.length = 0;
    await h.bus.consumeControl('agent-1', async (delivery) => {
      controls.push(delivery.body as Control);
      await delivery.ack();
    });
  });

  afterEach(async () => {
    await h.dispose();
  });

  async function heartbeat(draining = false, free = 2) {
    await h.bus.publishHeartbeat({
      v: 1,
      type: 'heartbeat',
      agentId: 'agent-1',
      time: Date.now(),
      labels: ['gpu'],
      capacity: { slots: 2, free },
      executors: [],
      isolation: 'per-user',
      draining,
    });
    return eventually(async () => {
      const { agents } = await h.call('listAgents', { token: alice });
      const agent = agents.find((candidate) => candidate.id === 'agent-1');
      return agent?.capacity.free === free && agent.draining === draining ? agent : undefined;
    });
  }

  const control = (action: 'drain' | 'resume', agent: string, token = admin) =>
    // Raw: some ids are malformed on purpose.
    h.raw({ method: 'POST', url: `/api/agents/${agent}/${action}`, token });

  it('sends drain and resume to a known agent, audited, and shows the state its heartbeats report', async () => {
    // An agent not drained says so in every heartbeat.
    expect(await heartbeat()).toMatchObject({ id: 'agent-1', draining: false, labels: ['gpu'] });
    const drained = await control('drain', 'agent-1');
    expect(drained.status, drained.text).toBe(202);
    expect(drained.json).toEqual({ id: 'agent-1', action: 'drain' });
    await eventually(() => controls.length === 1);
    expect(controls[0]).toEqual({ v: 1, type: 'drain' });
    // The registry follows the agent's own report, not the request.
    expect(await heartbeat(true, 1)).toMatchObject({ draining: true, capacity: { slots: 2, free: 1 } });
    expect((await control('resume', 'agent-1')).status).toBe(202);
    await eventually(() => controls.length === 2);
    expect(controls[1]).toEqual({ v: 1, type: 'resume' });
    expect(await heartbeat(false)).toMatchObject({ draining: false });
    const audit = await h.server.store.listAudit({ actor: 'admin', limit: 20 });
    expect(
      audit.filter((entry) => entry.action.startsWith('agent.')).map((entry) => [entry.action, entry.target]),
    ).toEqual([
      ['agent.resume', 'agent-1'],
      ['agent.drain', 'agent-1'],
    ]);
  });

  it('refuses controls from non-admins, for unknown agents and for malformed ids, and sends nothing', async () => {
    await heartbeat();
    const forbidden = await control('drain', 'agent-1', alice);
    expect(forbidden.status).toBe(403);
    expect(errorOf(forbidden).code).toBe('STEWARD_FORBIDDEN');
    const unknown = await control('drain', 'agent-2');
    expect(unknown.status).toBe(404);
    expect(errorOf(unknown)).toMatchObject({ code: 'STEWARD_NOT_FOUND' });
    expect(errorOf(unknown).message).toMatch(/no agent agent-2/);
    expect((await control('resume', 'bad%20agent%2Fid')).status).toBe(400);
    // A control sent now arrives after any wrongly sent one (the control queue is first in, first out).
    expect((await control('resume', 'agent-1')).status).toBe(202);
    await eventually(() => controls.length > 0);
    expect(controls).toEqual([{ v: 1, type: 'resume' }]);
    const audit = await h.server.store.listAudit({ actor: 'alice', limit: 5 });
    expect(audit[0]).toMatchObject({ action: 'forbidden', target: 'POST /api/agents/agent-1/drain' });
  });
  it("shows a non-admin only its own executors, with no other user's name, uid or pid, and an admin all of them", async () => {
    const bob = await h.userToken('bob');
    const executor = (user: string, uid: number, pid: number) => ({
      user,
      uid,
      pid,
      jobs: 1,
      idleSinceMs: null,
      rssBytes: 1000,
    });
    await h.bus.publishHeartbeat({
      v: 1,
      type: 'heartbeat',
      agentId: 'agent-1',
      time: Date.now(),
      labels: [],
      capacity: { slots: 4, free: 2 },
      executors: [executor('alice', 2001, 7001), executor('bob', 2002, 7002)],
      isolation: 'per-user',
      draining: false,
    });
    const seenBy = async (token: string) =>
      (await h.call('listAgents', { token })).agents.find((agent) => agent.id === 'agent-1');
    await eventually(async () => (await seenBy(admin))?.executors.length === 2);
    expect((await seenBy(admin))?.executors.map((e) => e.user)).toEqual(['alice', 'bob']);
    const asAlice = await h.raw({ method: 'GET', url: '/api/agents', token: alice });
    expect((await seenBy(alice))?.executors).toEqual([executor('alice', 2001, 7001)]);
    expect(asAlice.text).not.toMatch(/bob|2002|7002/);
    const asBob = await h.raw({ method: 'GET', url: '/api/agents', token: bob });
    expect((await seenBy(bob))?.executors).toEqual([executor('bob', 2002, 7002)]);
    expect(asBob.text).not.toMatch(/alice|2001|7001/);
    // The agent itself stays visible to everyone, with its capacity.
    expect(await seenBy(bob)).toMatchObject({ id: 'agent-1', capacity: { slots: 4, free: 2 } });
  });

  it('takes heartbeats from their own queue at once while a backlog of job events waits, and drops malformed ones', async () => {
    // 5,000 events of an unknown job (each applied as harmless and dropped) ahead of the heartbeat.
    for (let seq = 1; seq <= 5000; seq++) {
      await h.bus.publishEvent({
        v: 1,
        type: 'state',
        jobId: 'no-such-job',
        attempt: 1,
        seq,
        time: Date.now(),
        agentId: 'agent-1',
        state: 'running',
      });
    }
    await h.bus.publishHeartbeat({ v: 1, type: 'heartbeat', agentId: 'agent-9' } as never);
    await h.bus.publishHeartbeat({
      v: 1,
      type: 'heartbeat',
      agentId: 'agent-2',
      time: Date.now(),
      labels: [],
      capacity: { slots: 4, free: 4 },
      executors: [],
      isolation: 'single-user',
      draining: false,
    });
    await eventually(async () => {
      const { agents } = await h.call('listAgents', { token: alice });
      return agents.some((agent) => agent.id === 'agent-2');
    });
    // Registered while the events before it still wait: it did not queue behind them.
    expect(await h.bus.pendingEvents()).toBeGreaterThan(0);
    const { agents } = await h.call('listAgents', { token: alice });
    expect(agents.map((agent) => agent.id)).not.toContain('agent-9');
  });
});

import { describe, expect, it } from 'vitest';
import { EventBatcher } from '../../src/agent/event-batcher.js';
import { AgentMessage, MAX_BATCH_EVENTS, type JobEvent } from '../../src/protocol/index.js';

/** A `running` state event (one that may wait for company). */
const runningEvent = (seq: number): JobEvent => ({
  v: 1,
  type: 'state',
  jobId: 'j1',
  attempt: 1,
  seq,
  time: 1,
  agentId: 'agent-1',
  state: 'running',
});

function event(seq: number, message = ''): JobEvent {
  return {
    v: 1,
    type: 'state',
    jobId: 'j1',
    attempt: 1,
    seq,
    time: 1,
    agentId: 'agent-1',
    state: 'failed',
    error: { code: 'STEWARD_STEP_FAILED', message },
  };
}

/** The events a published message carries, in order. */
const carried = (message: AgentMessage): JobEvent[] =>
  message.type === 'events' ? message.events : [message];

describe('agent event batcher', () => {
  it('sends events handed in together as one valid message, in order, and a lone event as it is', async () => {
    const sent: AgentMessage[] = [];
    const batcher = new EventBatcher('agent-1', async (message) => void sent.push(message));
    await Promise.all([batcher.send(event(1)), batcher.send(event(2)), batcher.send(event(3))]);
    await batcher.send(event(4));
    expect(sent).toHaveLength(2);
    expect(sent[0]!.type).toBe('events');
    expect(AgentMessage.safeParse(sent[0]).success).toBe(true);
    expect(carried(sent[0]!).map((e) => e.seq)).toEqual([1, 2, 3]);
    expect(sent[1]).toEqual(event(4));
  });

  it('splits at the event count and the byte limit, keeping order', async () => {
    const sent: AgentMessage[] = [];
    const batcher = new EventBatcher('agent-1', async (message) => void sent.push(message));
    const many = Array.from({ length: MAX_BATCH_EVENTS + 5 }, (_, i) => event(i + 1));
    await Promise.all(many.map((e) => batcher.send(e)));
    expect(sent.map((m) => carried(m).length)).toEqual([MAX_BATCH_EVENTS, 5]);

    sent.length = 0;
    const small = new EventBatcher('agent-1', async (message) => void sent.push(message), 16 * 1024);
    const big = Array.from({ length: 6 }, (_, i) => event(i + 1, 'x'.repeat(5000)));
    await Promise.all(big.map((e) => small.send(e)));
    expect(sent.length).toBeGreaterThan(1);
    for (const message of sent)
      expect(Buffer.byteLength(JSON.stringify(message))).toBeLessThanOrEqual(16 * 1024);
    expect(sent.flatMap(carried).map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it("settles each event with its own message's publish", async () => {
    let calls = 0;
    const batcher = new EventBatcher('agent-1', async () => {
      calls += 1;
      if (calls === 1) throw new Error('broker gone');
    });
    const first = Promise.allSettled([batcher.send(event(1)), batcher.send(event(2))]);
    expect((await first).map((r) => r.status)).toEqual(['rejected', 'rejected']);
    await expect(batcher.send(event(3))).resolves.toBeUndefined();
  });

  it("holds a job's running and step events for the window and sends them with its end as one message", async () => {
    const sent: AgentMessage[] = [];
    const batcher = new EventBatcher(
      'agent-1',
      async (message) => void sent.push(message),
      undefined,
      60_000,
    );
    const running = runningEvent(1);
    const step: JobEvent = {
      v: 1,
      type: 'step',
      jobId: 'j1',
      attempt: 1,
      seq: 2,
      time: 1,
      agentId: 'agent-1',
      step: { stepId: 'one', state: 'succeeded', time: 1 },
    };
    const held = [batcher.send(running), batcher.send(step)];
    // Several turns of the event loop later, nothing has left: the window is a minute here.
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(sent).toHaveLength(0);
    await Promise.all([...held, batcher.send(event(3))]);
    expect(sent).toHaveLength(1);
    expect(carried(sent[0]!).map((e) => e.seq)).toEqual([1, 2, 3]);
  });

  it('sends a lone running event once its window has passed', async () => {
    const sent: AgentMessage[] = [];
    const batcher = new EventBatcher('agent-1', async (message) => void sent.push(message), undefined, 5);
    await batcher.send(runningEvent(1));
    expect(sent).toHaveLength(1);
    expect(carried(sent[0]!).map((e) => e.seq)).toEqual([1]);
  });
});

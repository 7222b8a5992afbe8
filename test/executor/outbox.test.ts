/**
 * The executor's outbox: the messages of one turn leave as one frame, in order; a frame never holds more
 * than the protocol allows; `flush` sends at once (before an exit); the agent's side reads every frame back
 * into the messages, and refuses frames it must not trust.
 */
import { describe, expect, it } from 'vitest';
import { Outbox } from '../../src/executor/outbox.js';
import { ExecutorFrame, MAX_EXECUTOR_BATCH, type ExecutorToAgent } from '../../src/protocol/index.js';

const turn = () => new Promise((resolve) => setImmediate(resolve));

function recorder(): { frames: ExecutorFrame[]; outbox: Outbox } {
  const frames: ExecutorFrame[] = [];
  return { frames, outbox: new Outbox((frame) => (frames.push(frame), true)) };
}

const loaded: ExecutorToAgent = { type: 'loaded', jobId: 'job1' };
const running: ExecutorToAgent = {
  type: 'step',
  jobId: 'job1',
  step: { stepId: 'one', state: 'running', time: 1 },
};
const finished: ExecutorToAgent = { type: 'finished', jobId: 'job1', state: 'succeeded' };

describe('executor outbox', () => {
  it("sends a turn's messages as one frame in order, and a lone message as itself", async () => {
    const { frames, outbox } = recorder();
    outbox.send(loaded);
    outbox.send(running);
    expect(frames).toEqual([]);
    await turn();
    expect(frames).toEqual([{ type: 'batch', messages: [loaded, running] }]);
    outbox.send(finished);
    await turn();
    expect(frames[1]).toEqual(finished);
    await turn();
    expect(frames).toHaveLength(2);
  });

  it('splits a long turn into frames the agent accepts, and flush sends at once', () => {
    const { frames, outbox } = recorder();
    const many = Array.from({ length: MAX_EXECUTOR_BATCH + 3 }, (_, i): ExecutorToAgent => ({
      type: 'step',
      jobId: 'job1',
      step: { stepId: `s${i}`, state: 'skipped', time: i },
    }));
    for (const message of many) outbox.send(message);
    outbox.flush();
    expect(frames).toHaveLength(2);
    const read = frames.flatMap((frame) => {
      const parsed = ExecutorFrame.parse(frame);
      return parsed.type === 'batch' ? parsed.messages : [parsed];
    });
    expect(read).toEqual(many);
  });

  it('drops what is queued once the pipe is gone', () => {
    let writes = 0;
    const outbox = new Outbox(() => (writes++, false));
    for (let i = 0; i < MAX_EXECUTOR_BATCH * 2; i++) outbox.send(loaded);
    outbox.flush();
    outbox.flush();
    expect(writes).toBe(1);
  });

  it.each([
    ['an empty batch', { type: 'batch', messages: [] }],
    ['a batch in a batch', { type: 'batch', messages: [{ type: 'batch', messages: [loaded] }] }],
    ['an oversized batch', { type: 'batch', messages: Array(MAX_EXECUTOR_BATCH + 1).fill(loaded) }],
    ['a batch with a bad message', { type: 'batch', messages: [loaded, { type: 'loaded' }] }],
    ['a batch with extra fields', { type: 'batch', messages: [loaded], note: 'x' }],
  ])('the agent refuses %s', (_name, frame) => {
    expect(ExecutorFrame.safeParse(frame).success).toBe(false);
  });
});

/**
 * A job's end closes its steps, in the store's one transition path, on SQLite and PostgreSQL: a step still
 * `running` when the job ends `lost`, `failed` or `canceled` is closed at the job's end, `pending` ones are
 * skipped, and a late step report never reopens a finished step. A job never starts after its first step.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { JobEvent, JobState } from '../../src/protocol/index.js';
import type { Store } from '../../src/store/index.js';
import { aliceJob, backends, openBackendStore, seedAliceWorkflow, type BackendHandle } from './backends.js';

const T0 = 1_767_225_600_000;

describe.each(backends)('closing steps on $name', (backend) => {
  let handle: BackendHandle;
  let store: Store;
  let jobs = 0;

  beforeEach(async (context) => {
    ({ handle, store } = await openBackendStore(backend, context.task.name));
    await seedAliceWorkflow(store, {
      steps: [
        { id: 'a', kind: 'sql', needs: [] },
        { id: 'b', kind: 'shell', needs: ['a'] },
        { id: 'c', kind: 'sql', needs: ['b'] },
      ],
    });
  });

  afterEach(async () => {
    await store.close();
    await handle.dispose();
  });

  /** A job run to step b: loading, running, a done, b running. Returns its id and an event maker. */
  async function runningJob() {
    const id = `20260101000000000-close${++jobs}`;
    await store.insertJobOnce(
      aliceJob(id, {
        jobTokenHash: `token-${id}`,
        createdAt: T0,
        steps: [
          { id: 'a', kind: 'sql' },
          { id: 'b', kind: 'shell' },
          { id: 'c', kind: 'sql' },
        ],
        offered: true,
      }),
    );
    let seq = 0;
    const base = () => ({ v: 1 as const, jobId: id, attempt: 1, seq: ++seq, agentId: 'agent-1' });
    const state = (to: JobState, time: number): JobEvent => ({ ...base(), type: 'state', time, state: to });
    const step = (stepId: string, to: 'running' | 'succeeded', time: number): JobEvent => ({
      ...base(),
      type: 'step',
      time,
      step: { stepId, state: to, time },
    });
    // The executor's first step starts (and ends) before the agent's `running` stamp.
    await store.applyEvents([state('loading', T0 + 100), step('a', 'running', T0 + 200)]);
    await store.applyEvents([state('running', T0 + 300), step('a', 'succeeded', T0 + 400)]);
    await store.applyEvents([step('b', 'running', T0 + 500)]);
    return { id, state, step };
  }

  it('closes a running step and skips pending ones when the job ends, at the job end', async () => {
    for (const end of ['lost', 'failed', 'canceled'] as const) {
      const { id } = await runningJob();
      const ended = await store.transitionJob(id, end, {}, { now: T0 + 10_000 });
      expect(ended.ok, end).toBe(true);
      const steps = Object.fromEntries((await store.listSteps(id)).map((step) => [step.id, step]));
      expect(steps.a?.state).toBe('succeeded');
      expect(steps.b).toMatchObject({
        state: end === 'canceled' ? 'canceled' : 'failed',
        finishedAt: T0 + 10_000,
        durationMs: 10_000 - 500,
        message: `the job ended ${end} while this step was running`,
      });
      expect(steps.c?.state).toBe('skipped');
    }
  });

  it('never reopens a finished step, and starts the job no later than its first step', async () => {
    const { id, step } = await runningJob();
    expect((await store.getJob(id))?.startedAt).toBe(T0 + 200);
    await store.applyEvents([step('b', 'succeeded', T0 + 600)]);
    // A late (redelivered, reordered) `running` of b: b stays succeeded.
    await store.applyEvents([step('b', 'running', T0 + 500)]);
    expect((await store.listSteps(id)).find((s) => s.id === 'b')?.state).toBe('succeeded');
    await store.transitionJob(id, 'lost', {}, { now: T0 + 1000 });
    await store.applyEvents([step('c', 'running', T0 + 1100)]);
    expect((await store.listSteps(id)).find((s) => s.id === 'c')?.state).toBe('skipped');
  });
});

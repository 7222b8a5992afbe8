/**
 * A job's detail (job, steps, attempts) is one snapshot, on SQLite and PostgreSQL: while a writer moves a job
 * through attempts the way the server's event application does (one transaction per change, steps and job
 * together), a reader never sees its steps or attempts ahead of, or behind, the job itself.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { JobEvent, JobState } from '../../src/protocol/index.js';
import { openStore, type JobDetailRecord, type Store } from '../../src/store/index.js';
import { backends, type BackendHandle } from './backends.js';

const JOB = '20260101000000000-detail';
const T0 = 1_767_225_600_000;
const ATTEMPTS = 120;

/**
 * What one consistent read must satisfy; returns the contradictions found (empty when none).
 * - A job not yet started (`queued`, `offered`, `loading`) has every step `pending`: steps are reset in the
 *   same transaction that begins an attempt, and only an attempt that runs moves them.
 * - A job that has ended has no step `pending` or `running` (its final batch ends them with it).
 * - The job's current attempt is the last one listed and is in the job's state (the store mirrors each
 *   transition onto it in the same transaction).
 */
function contradictions({ job, steps, attempts }: JobDetailRecord): string[] {
  const found: string[] = [];
  const notStarted: readonly JobState[] = ['queued', 'offered', 'loading'];
  const terminal: readonly JobState[] = ['succeeded', 'failed', 'canceled', 'expired', 'lost'];
  for (const step of steps) {
    if (notStarted.includes(job.state) && step.state !== 'pending')
      found.push(`job ${job.state} (attempt ${job.attempt}) with step ${step.id} ${step.state}`);
    if (terminal.includes(job.state) && (step.state === 'pending' || step.state === 'running'))
      found.push(`job ${job.state} with step ${step.id} ${step.state}`);
  }
  const current = attempts.at(-1);
  if (current?.attempt !== job.attempt || current.state !== job.state)
    found.push(
      `job ${job.state} at attempt ${job.attempt}, last attempt listed: ${current?.attempt} ${current?.state}`,
    );
  return found;
}

describe.each(backends)('job detail on $name', (backend) => {
  let handle: BackendHandle;
  let store: Store;

  beforeEach(async (context) => {
    handle = await backend.create(context.task.name);
    try {
      store = await openStore(handle.config);
    } catch (error) {
      await handle.dispose();
      throw error;
    }
    await store.createUser({ name: 'alice', role: 'user', passwordHash: null, createdAt: 1 });
    await store.insertWorkflowVersion({
      space: 'alice',
      name: 'wf',
      source: 'name: wf',
      format: 'yaml',
      digest: 'd1',
      description: '',
      params: [],
      steps: [
        { id: 'a', kind: 'sql', needs: [] },
        { id: 'b', kind: 'shell', needs: ['a'] },
      ],
      assets: [],
      createdBy: 'alice',
      createdAt: 2,
    });
  });

  afterEach(async () => {
    await store.close();
    await handle.dispose();
  });

  it('never shows steps or attempts that contradict the job while events and retries are applied', async () => {
    await store.insertJobOnce({
      id: JOB,
      user: 'alice',
      workflow: { space: 'alice', name: 'wf', version: 1, digest: 'd1' },
      params: {},
      labels: [],
      timeoutMs: null,
      jobTokenHash: 'token-1',
      createdAt: T0,
      steps: [
        { id: 'a', kind: 'sql' },
        { id: 'b', kind: 'shell' },
      ],
      offered: true,
    });

    let writing = true;
    const writer = (async () => {
      try {
        for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
          const last = attempt === ATTEMPTS;
          let seq = 0;
          const time = T0 + attempt * 1000;
          const state = (to: JobState): JobEvent => ({
            v: 1,
            type: 'state',
            jobId: JOB,
            attempt,
            seq: ++seq,
            time: time + seq,
            agentId: 'agent-1',
            state: to,
          });
          const step = (stepId: string, to: 'running' | 'succeeded'): JobEvent => ({
            v: 1,
            type: 'step',
            jobId: JOB,
            attempt,
            seq: ++seq,
            time: time + seq,
            agentId: 'agent-1',
            step: { stepId, state: to, time: time + seq },
          });
          // Each batch is one transaction, as the server's group commit applies them.
          await store.applyEvents([state('loading')]);
          await store.applyEvents([state('running'), step('a', 'running'), step('a', 'succeeded')]);
          if (last) {
            await store.applyEvents([step('b', 'running'), step('b', 'succeeded'), state('succeeded')]);
          } else {
            await store.applyEvents([step('b', 'running')]);
            const retried = await store.retryJob(JOB, {
              attempt,
              endState: 'failed',
              error: { code: 'STEWARD_EXECUTOR_CRASHED', message: 'executor ended: SIGKILL' },
              jobTokenHash: `token-${attempt + 1}`,
              loadDeadline: time + 60_000,
              now: time + 900,
            });
            expect(retried.ok).toBe(true);
          }
        }
      } finally {
        writing = false;
      }
    })();

    const seen: string[] = [];
    let reads = 0;
    const statesRead = new Set<JobState>();
    while (writing) {
      const detail = await store.getJobDetail(JOB);
      if (!detail) throw new Error('job vanished');
      reads++;
      statesRead.add(detail.job.state);
      seen.push(...contradictions(detail));
    }
    await writer;

    const final = await store.getJobDetail(JOB);
    expect(final?.job.state).toBe('succeeded');
    expect(final && contradictions(final)).toEqual([]);
    // The reader did overlap the writer (else the test proves nothing).
    expect(reads).toBeGreaterThan(ATTEMPTS);
    expect(statesRead.size).toBeGreaterThan(1);
    expect([...new Set(seen)].slice(0, 10)).toEqual([]);
  });

  it('returns undefined for a job that does not exist', async () => {
    expect(await store.getJobDetail('20260101000000000-none')).toBeUndefined();
  });
});

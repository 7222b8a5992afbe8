/**
 * Job attempts in the store, on SQLite and PostgreSQL: every job has its current attempt recorded, a retry
 * ends it and begins the next one atomically (new token, steps reset), and events of an older attempt only
 * count as seen.
 */
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { JobStateEvent, JobStepEvent } from '../../src/protocol/index.js';
import { openStore, type Store } from '../../src/store/index.js';
import { backends, sqliteBackend, type BackendHandle } from './backends.js';

const JOB = '20260101000000000-attempts';
const T0 = 1_767_225_600_000;

describe.each(backends)('job attempts on $name', (backend) => {
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

  async function seedJob(retries?: number): Promise<void> {
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
      ...(retries !== undefined ? { retries } : {}),
    });
  }

  function state(
    attempt: number,
    seq: number,
    to: JobStateEvent['state'],
    agentId = 'agent-1',
  ): JobStateEvent {
    return { v: 1, type: 'state', jobId: JOB, attempt, seq, time: T0 + 1000 + seq, agentId, state: to };
  }

  function step(attempt: number, seq: number, stepState: JobStepEvent['step']['state']): JobStepEvent {
    return {
      v: 1,
      type: 'step',
      jobId: JOB,
      attempt,
      seq,
      time: T0 + 2000 + seq,
      agentId: 'agent-1',
      step: { stepId: 'a', state: stepState, time: T0 + 2000 + seq },
    };
  }

  it('records the first attempt with the job and keeps it in step with the job state', async () => {
    await seedJob(3);
    expect((await store.getJob(JOB))?.retries).toBe(3);
    expect(await store.listAttempts(JOB)).toEqual([
      expect.objectContaining({ attempt: 1, state: 'queued', agentId: null, offeredAt: T0, startedAt: null }),
    ]);
    await store.transitionJob(JOB, 'offered', { loadDeadline: T0 + 60_000 });
    await store.applyEvent(state(1, 1, 'loading'));
    await store.applyEvent(state(1, 2, 'running'));
    await store.applyEvent(state(1, 3, 'succeeded'));
    const [attempt] = await store.listAttempts(JOB);
    expect(attempt).toMatchObject({
      attempt: 1,
      state: 'succeeded',
      agentId: 'agent-1',
      startedAt: T0 + 1002,
      finishedAt: T0 + 1003,
      error: null,
    });
  });

  it('a retry ends the attempt, begins the next with a new token and pending steps, and only once', async () => {
    await seedJob();
    await store.transitionJob(JOB, 'offered', { loadDeadline: T0 + 60_000 });
    await store.applyEvent(state(1, 1, 'loading'));
    await store.applyEvent(state(1, 2, 'running'));
    await store.applyEvent(step(1, 3, 'running'));
    const error = { code: 'STEWARD_EXECUTOR_CRASHED' as const, message: 'executor ended: SIGKILL' };
    const plan = {
      attempt: 1,
      endState: 'failed' as const,
      error,
      jobTokenHash: 'token-2',
      loadDeadline: T0 + 120_000,
      now: T0 + 5000,
    };
    const retried = await store.retryJob(JOB, plan);
    expect(retried.ok).toBe(true);
    const job = await store.getJob(JOB);
    expect(job).toMatchObject({
      state: 'offered',
      attempt: 2,
      agentId: null,
      executor: null,
      error: null,
      jobTokenHash: 'token-2',
      loadDeadline: T0 + 120_000,
      finishedAt: null,
    });
    expect((await store.listSteps(JOB)).map((s) => [s.id, s.state, s.startedAt])).toEqual([
      ['a', 'pending', null],
      ['b', 'pending', null],
    ]);
    expect(await store.listAttempts(JOB)).toEqual([
      expect.objectContaining({
        attempt: 1,
        state: 'failed',
        agentId: 'agent-1',
        finishedAt: T0 + 5000,
        error,
      }),
      expect.objectContaining({ attempt: 2, state: 'offered', agentId: null, offeredAt: T0 + 5000 }),
    ]);
    // The same attempt cannot be retried twice (a duplicate event, a second server).
    expect((await store.retryJob(JOB, { ...plan, jobTokenHash: 'token-3' })).ok).toBe(false);
    expect((await store.getJob(JOB))?.jobTokenHash).toBe('token-2');
    expect(await store.listAttempts(JOB)).toHaveLength(2);
  });

  it('ignores events of an older attempt after a retry, and applies the new attempt from seq 1 again', async () => {
    await seedJob();
    await store.transitionJob(JOB, 'offered', { loadDeadline: T0 + 60_000 });
    await store.applyEvent(state(1, 1, 'loading'));
    await store.applyEvent(state(1, 2, 'running'));
    await store.retryJob(JOB, {
      attempt: 1,
      endState: 'lost',
      error: { code: 'STEWARD_AGENT_LOST', message: 'silent' },
      jobTokenHash: 'token-2',
      loadDeadline: T0 + 120_000,
    });
    // The old agent comes back and reports: seen, but the job is not touched.
    expect(await store.applyEvent(state(1, 3, 'succeeded'))).toEqual({ applied: true });
    expect(await store.applyEvent(step(1, 4, 'succeeded'))).toEqual({ applied: true });
    expect((await store.getJob(JOB))?.state).toBe('offered');
    expect((await store.listSteps(JOB))[0]?.state).toBe('pending');
    // The new attempt's events use the same seq numbers without being taken for duplicates.
    expect((await store.applyEvent(state(2, 1, 'loading', 'agent-2'))).job?.state).toBe('loading');
    expect((await store.applyEvent(state(2, 2, 'running', 'agent-2'))).job?.state).toBe('running');
    expect((await store.applyEvent(state(2, 3, 'succeeded', 'agent-2'))).job?.state).toBe('succeeded');
    expect((await store.listAttempts(JOB)).map((a) => [a.attempt, a.state, a.agentId])).toEqual([
      [1, 'lost', 'agent-1'],
      [2, 'succeeded', 'agent-2'],
    ]);
  });

  it('retries a job already marked lost, keeping the time it was lost', async () => {
    await seedJob();
    await store.transitionJob(JOB, 'offered', { loadDeadline: T0 + 60_000 });
    await store.applyEvent(state(1, 1, 'running'));
    const error = { code: 'STEWARD_AGENT_LOST' as const, message: 'silent' };
    await store.transitionJob(JOB, 'lost', { error }, { now: T0 + 9000 });
    const retried = await store.retryJob(JOB, {
      attempt: 1,
      endState: 'lost',
      error,
      jobTokenHash: 'token-2',
      loadDeadline: T0 + 120_000,
      now: T0 + 20_000,
    });
    expect(retried.ok).toBe(true);
    expect((await store.listAttempts(JOB))[0]).toMatchObject({ state: 'lost', finishedAt: T0 + 9000, error });
  });

  it('never retries a job that ended', async () => {
    await seedJob();
    await store.transitionJob(JOB, 'offered', { loadDeadline: T0 + 60_000 });
    await store.applyEvent(state(1, 1, 'running'));
    await store.applyEvent(state(1, 2, 'succeeded'));
    const result = await store.retryJob(JOB, {
      attempt: 1,
      endState: 'failed',
      error: { code: 'STEWARD_EXECUTOR_CRASHED', message: 'x' },
      jobTokenHash: 'token-2',
      loadDeadline: T0 + 120_000,
    });
    expect(result.ok).toBe(false);
    expect(result.job?.state).toBe('succeeded');
    expect(await store.listAttempts(JOB)).toHaveLength(1);
  });

  it('clears an executor-loss error handed back with the offer once a later delivery gets further', async () => {
    await seedJob();
    await store.transitionJob(JOB, 'offered', { loadDeadline: T0 + 60_000 });
    await store.applyEvent(state(1, 1, 'loading'));
    const handedBack = await store.applyEvent({
      ...state(1, 2, 'offered'),
      error: { code: 'STEWARD_EXECUTOR_CRASHED', message: 'executor ended while loading' },
    });
    expect(handedBack.job).toMatchObject({ state: 'offered', error: { code: 'STEWARD_EXECUTOR_CRASHED' } });
    await store.applyEvent(state(1, 1_000_001, 'loading', 'agent-2'));
    const running = await store.applyEvent(state(1, 1_000_002, 'running', 'agent-2'));
    expect(running.job).toMatchObject({ state: 'running', error: null, agentId: 'agent-2' });
  });
});

describe('migration 0003 on an existing database', () => {
  it('gives every job that exists before it one attempt row copied from the job', async (context) => {
    const handle = await sqliteBackend.create(context.task.name);
    try {
      let store = await openStore(handle.config);
      await store.createUser({ name: 'bob', role: 'user', passwordHash: null, createdAt: 1 });
      await store.insertWorkflowVersion({
        space: 'bob',
        name: 'wf',
        source: 'name: wf',
        format: 'yaml',
        digest: 'd1',
        description: '',
        params: [],
        steps: [],
        assets: [],
        createdBy: 'bob',
        createdAt: 2,
      });
      await store.insertJobOnce({
        id: JOB,
        user: 'bob',
        workflow: { space: 'bob', name: 'wf', version: 1, digest: 'd1' },
        params: {},
        labels: [],
        timeoutMs: null,
        jobTokenHash: 'h',
        createdAt: T0,
        steps: [],
      });
      await store.close();
      // Roll the database back to before 0003, as a server of the previous release left it, with the job
      // in a later state than the store would have recorded it.
      const db = new Database(handle.config.kind === 'sqlite' ? handle.config.path! : '');
      db.exec(`
        DROP TABLE job_attempts;
        ALTER TABLE jobs DROP COLUMN retries;
        DELETE FROM steward_migrations WHERE name = '0003_job_attempts';
        UPDATE jobs SET state = 'failed', agent_id = 'old-agent', error_code = 'STEWARD_STEP_FAILED',
          error_message = 'boom', started_at = ${T0 + 1}, finished_at = ${T0 + 2};
      `);
      db.close();
      store = await openStore(handle.config);
      try {
        expect(await store.listAttempts(JOB)).toEqual([
          {
            jobId: JOB,
            attempt: 1,
            state: 'failed',
            agentId: 'old-agent',
            offeredAt: T0,
            startedAt: T0 + 1,
            finishedAt: T0 + 2,
            error: { code: 'STEWARD_STEP_FAILED', message: 'boom' },
          },
        ]);
        expect((await store.getJob(JOB))?.retries).toBeNull();
      } finally {
        await store.close();
      }
    } finally {
      await handle.dispose();
    }
  });
});

/**
 * Two Store instances on one PostgreSQL database, as two servers of an HA setup have: events applied by both
 * at once take effect once, racing transitions serialize, and each hears the other's changes.
 */
import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { JobState, JobStateEvent, JobStepEvent } from '../../src/protocol/index.js';
import { openStore, type JobChangeNotice, type Store } from '../../src/store/index.js';
import { until } from '../support/wait.js';
import { createPrivateDatabase } from './backends.js';

let database: { url: string; dispose(): Promise<void> };
let a: Store;
let b: Store;

beforeEach(async (context) => {
  database = await createPrivateDatabase(context.task.name);
  a = await openStore({ kind: 'postgres', url: database.url });
  b = await openStore({ kind: 'postgres', url: database.url });
  await a.createUser({ name: 'alice', role: 'user', passwordHash: null, createdAt: 1 });
  await a.insertWorkflowVersion({
    space: 'alice',
    name: 'wf',
    source: 'name: wf',
    format: 'yaml',
    digest: 'd1',
    description: '',
    params: [],
    steps: [{ id: 'a', kind: 'sql', needs: [] }],
    assets: [],
    createdBy: 'alice',
    createdAt: 2,
  });
});

afterEach(async () => {
  await a?.close();
  await b?.close();
  await database?.dispose();
});

function jobId(n: number): string {
  return `20260101000000000-${String(n).padStart(8, '0')}`;
}

async function seedJobs(count: number, loadDeadline: number | null = null): Promise<string[]> {
  const ids = Array.from({ length: count }, (_, n) => jobId(n));
  for (const id of ids) {
    await a.insertJobOnce({
      id,
      user: 'alice',
      workflow: { space: 'alice', name: 'wf', version: 1, digest: 'd1' },
      params: {},
      labels: [],
      timeoutMs: null,
      jobTokenHash: 'h',
      createdAt: 1,
      steps: [{ id: 'a', kind: 'sql' }],
      loadDeadline,
    });
  }
  return ids;
}

function stateEvent(id: string, seq: number, state: JobStateEvent['state']): JobStateEvent {
  return { v: 1, type: 'state', jobId: id, attempt: 1, seq, time: 1000 + seq, agentId: 'agent-1', state };
}

function stepEvent(
  id: string,
  seq: number,
  stepId: string,
  state: JobStepEvent['step']['state'],
): JobStepEvent {
  return {
    v: 1,
    type: 'step',
    jobId: id,
    attempt: 1,
    seq,
    time: 1000 + seq,
    agentId: 'agent-1',
    step: { stepId, state, time: 1000 + seq * 10 },
  };
}

describe('two stores on one PostgreSQL database', () => {
  it('applies each event once when both stores apply the same events at the same time', async () => {
    const ids = await seedJobs(40);
    for (const id of ids) await a.transitionJob(id, 'offered');
    // Each job's whole life, delivered to both servers (a redelivery after a crash looks like this), with
    // the step events of new steps racing each other: without a row lock two inserts of one step collide.
    const lifeOf = (id: string) => [
      stateEvent(id, 1, 'loading'),
      stateEvent(id, 2, 'running'),
      stepEvent(id, 3, 'a', 'running'),
      stepEvent(id, 4, 'extra1', 'running'),
      stepEvent(id, 5, 'extra2', 'running'),
      stepEvent(id, 6, 'a', 'succeeded'),
      stateEvent(id, 7, 'succeeded'),
    ];
    const outcomes = await Promise.all(
      ids.flatMap((id) =>
        lifeOf(id).flatMap((event) => [
          a.applyEvent(event).then((r) => ({ id, seq: event.seq, applied: r.applied })),
          b.applyEvent(event).then((r) => ({ id, seq: event.seq, applied: r.applied })),
        ]),
      ),
    );
    const appliedPerEvent = new Map<string, number>();
    for (const outcome of outcomes) {
      const key = `${outcome.id}/${outcome.seq}`;
      appliedPerEvent.set(key, (appliedPerEvent.get(key) ?? 0) + (outcome.applied ? 1 : 0));
    }
    expect(appliedPerEvent.size).toBe(ids.length * 7);
    expect([...appliedPerEvent.values()].every((n) => n === 1)).toBe(true);
    for (const id of ids) {
      const job = await b.getJob(id);
      // Events may have been applied out of order (that is what the state machine tolerates), but the end
      // is reached once and the steps exist once.
      expect(job?.state).toBe('succeeded');
      const steps = await a.listSteps(id);
      expect(steps.map((s) => s.id).sort()).toEqual(['a', 'extra1', 'extra2']);
    }
  });

  it('sees the latest workflow version another store pushed after it read (and kept) an older one', async () => {
    const base = {
      space: 'alice',
      name: 'wf-cached',
      format: 'yaml' as const,
      description: 'd',
      params: [],
      steps: [],
      createdBy: 'alice',
      createdAt: 10,
      assets: [],
    };
    await a.insertWorkflowVersion({ ...base, source: 'one', digest: 'd1' });
    expect((await b.getWorkflow('alice', 'wf-cached'))?.source).toBe('one');
    await a.insertWorkflowVersion({ ...base, source: 'two', digest: 'd2' });
    expect((await b.getWorkflow('alice', 'wf-cached'))?.source).toBe('two');
    expect((await b.getWorkflow('alice', 'wf-cached', 1))?.source).toBe('one');
  });

  it('lets exactly one of two racing transitions of a job win, whichever store makes it', async () => {
    const ids = await seedJobs(30);
    for (const id of ids) await a.transitionJob(id, 'offered');
    const targets: JobState[] = ['canceled', 'expired', 'loading', 'failed'];
    const results = await Promise.all(
      ids.flatMap((id) =>
        targets.map((to, n) =>
          (n % 2 === 0 ? a : b)
            .transitionJob(id, to, {}, { from: ['offered'] })
            .then((result) => ({ id, to, ok: result.ok })),
        ),
      ),
    );
    for (const id of ids) {
      const winners = results.filter((r) => r.id === id && r.ok);
      expect(winners).toHaveLength(1);
      expect((await a.getJob(id))?.state).toBe(winners[0]!.to);
    }
  });

  it('expires a stuck queued job past its stored load deadline once, with both stores sweeping', async () => {
    const ids = await seedJobs(20, 5000);
    const overdueA = await a.listJobsPastLoadDeadline(6000);
    const overdueB = await b.listJobsPastLoadDeadline(6000);
    expect(overdueA.map((j) => j.id).sort()).toEqual(ids);
    const expire = (store: Store, id: string) =>
      store.transitionJob(id, 'expired', {}, { from: ['queued', 'offered', 'loading'] });
    const results = await Promise.all([
      ...overdueA.map((job) => expire(a, job.id)),
      ...overdueB.map((job) => expire(b, job.id)),
    ]);
    expect(results.filter((r) => r.ok)).toHaveLength(ids.length);
    expect(await a.listJobsPastLoadDeadline(6000)).toEqual([]);
    expect(await a.listJobsPastLoadDeadline(4000)).toEqual([]);
  });

  it("hears the other store's committed changes, not its own, and again after its connection was cut", async () => {
    const [id] = await seedJobs(1);
    const heard: JobChangeNotice[] = [];
    let reconnects = 0;
    const listener = await b.listenForChanges({
      onNotice: (notice) => heard.push(notice),
      onReconnect: () => reconnects++,
      onError: () => undefined,
    });
    expect(listener).toBeDefined();
    try {
      await b.transitionJob(id!, 'offered');
      await a.applyEvent(stateEvent(id!, 1, 'loading'));
      await a.applyEvent(stepEvent(id!, 2, 'a', 'running'));
      await waitFor(() => heard.length >= 2);
      expect(heard.map((n) => [n.origin, n.jobId, n.stepId])).toEqual([
        [a.instanceId, id, undefined],
        [a.instanceId, id, 'a'],
      ]);
      // A rolled-back change is never announced.
      await expect(
        a.db.transaction().execute(async (trx) => {
          await trx.updateTable('jobs').set({ updated_at: 1 }).where('id', '=', id!).execute();
          throw new Error('roll back');
        }),
      ).rejects.toThrow('roll back');

      // Cut the LISTEN connection from the server side, as a PostgreSQL restart or failover would.
      const admin = new pg.Client({ connectionString: database.url });
      await admin.connect();
      await admin.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()`,
      );
      await admin.end();
      await waitFor(() => reconnects === 1);
      await a.applyEvent(stateEvent(id!, 3, 'running'));
      await waitFor(() => heard.length >= 3);
      expect(heard[2]).toEqual({ origin: a.instanceId, jobId: id });
    } finally {
      await listener?.close();
    }
  });
});

async function waitFor(condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  await until('the condition', condition, timeoutMs, 20);
}

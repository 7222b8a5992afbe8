/**
 * What a no-op job costs the store in SQL statements, phase by phase, on SQLite and PostgreSQL: a real
 * server over the embedded bus, the test in the agent's and executor's place (each event its own delivery,
 * so each phase is counted on its own). The counts come from the store's own statement counter
 * (`Store.statements`, fed by Kysely's log hook, BEGIN and COMMIT included); the test waits for each phase
 * through a connection of its own that the counter does not see. The bounds are a regression guard: a change
 * that adds statements to a job's path fails here and has to say why.
 */
import BetterSqlite3 from 'better-sqlite3';
import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  createOfferVerifier,
  type JobEvent,
  type JobOffer,
  type JobStepEvent,
} from '../../src/protocol/index.js';
import { statementsSince, type StatementCountsSnapshot } from '../../src/store/index.js';
import { backends } from '../store/backends.js';
import { eventually, startHarness, stateEvent, type Harness } from './harness.js';

const NOOP = `name: noop
steps:
  - id: one
    sql: SELECT 1 AS ok
outputs: []
`;

/** Reads the job's row as the database has it, outside the counted store. */
interface Peek {
  job(id: string): Promise<{ state: string; offer_published_at: number | null; claimed_by: string | null }>;
  step(id: string, stepId: string): Promise<{ state: string } | undefined>;
  close(): Promise<void>;
}

async function openPeek(h: Harness): Promise<Peek> {
  const config = h.storeConfig;
  if (config.kind === 'sqlite') {
    const db = new BetterSqlite3(config.path, { readonly: true });
    return {
      job: async (id) => db.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as never,
      step: async (id, stepId) =>
        db.prepare('SELECT * FROM job_steps WHERE job_id = ? AND step_id = ?').get(id, stepId) as never,
      close: async () => {
        db.close();
      },
    };
  }
  const client = new pg.Client({
    connectionString: config.url,
    ...(config.schema ? { options: `-c search_path=${config.schema}` } : {}),
  });
  await client.connect();
  return {
    job: async (id) => (await client.query('SELECT * FROM jobs WHERE id = $1', [id])).rows[0] as never,
    step: async (id, stepId) =>
      (await client.query('SELECT * FROM job_steps WHERE job_id = $1 AND step_id = $2', [id, stepId]))
        .rows[0] as never,
    close: () => client.end(),
  };
}

type Phase =
  | 'submit'
  | 'loading'
  | 'fetch'
  | 'running'
  | 'stepRunning'
  | 'stepSucceeded'
  | 'succeeded'
  | 'detailAndResults';

/**
 * Upper bounds per phase: statements (BEGIN/COMMIT included) other than PostgreSQL's change notices, the
 * same on both stores, and the notices (`pg_notify`, one per changed job or step; none on SQLite).
 */
const BOUNDS: Record<Phase, { statements: number; notices: number }> = {
  submit: { statements: 12, notices: 1 },
  loading: { statements: 6, notices: 1 },
  fetch: { statements: 3, notices: 0 },
  running: { statements: 7, notices: 1 },
  stepRunning: { statements: 7, notices: 1 },
  stepSucceeded: { statements: 7, notices: 1 },
  succeeded: { statements: 8, notices: 1 },
  detailAndResults: { statements: 11, notices: 0 },
};
/** The statements of the events after the fetch (running, two step events, succeeded) in one message. */
const BATCHED_EVENTS_BOUND = 15;
const TOTAL_BOUND = { statements: 61, notices: 6 };

describe.each(backends)('SQL statements per no-op job on $name', (backend) => {
  let h: Harness;
  let peek: Peek;
  let alice: string;
  const offers = new Map<string, JobOffer>();

  beforeEach(async (context) => {
    // Background loops (sweeps, notification polling, the scheduler) stay quiet while the job is measured.
    h = await startHarness({
      backend,
      title: context.task.name,
      config: { loadTimeout: '10m', agentLease: '10m', notifications: { pollInterval: '1h' } },
      scheduler: { enabled: false },
    });
    peek = await openPeek(h);
    alice = await h.userToken('alice');
    await h.call('pushWorkflow', { token: alice, body: { source: NOOP } });
    const verifier = createOfferVerifier([h.server.publicKeyPem]);
    await h.bus.consumeOffers(
      async (delivery) => {
        const offer = verifier.verify(delivery.body);
        offers.set(offer.jobId, offer);
        await delivery.ack();
      },
      { prefetch: 10 },
    );
  });

  afterEach(async () => {
    await peek.close();
    await h.dispose();
  });

  const counts = (): StatementCountsSnapshot => h.server.store.statements.snapshot();

  /**
   * Runs one no-op job as an agent and executor would, counting each phase's statements. `batched`: the
   * events after the fetch travel in one message (as an agent sends what is ready together), counted as
   * the `running` phase.
   */
  async function runJob(batched = false): Promise<Partial<Record<Phase, StatementCountsSnapshot>>> {
    const phases: Partial<Record<Phase, StatementCountsSnapshot>> = {};
    let mark = counts();
    const measure = async (phase: Phase, settled: () => Promise<unknown>): Promise<void> => {
      await eventually(settled);
      const now = counts();
      phases[phase] = statementsSince(mark, now);
      mark = now;
    };
    const { id } = await h.call('submitJob', { token: alice, body: { workflow: 'noop' } });
    // The offer's confirmation is recorded after the answer on PostgreSQL (before it on SQLite): both count.
    await measure('submit', async () => offers.has(id) && (await peek.job(id)).offer_published_at !== null);
    const offer = offers.get(id)!;
    let seq = 0;
    const publish = (event: JobEvent) => h.bus.publishEvent(event);
    const step = (state: 'running' | 'succeeded'): JobStepEvent => ({
      v: 1,
      type: 'step',
      jobId: id,
      attempt: offer.attempt,
      seq: ++seq,
      time: Date.now(),
      agentId: 'agent-1',
      step: { stepId: 'one', state, time: Date.now(), ...(state === 'succeeded' ? { rows: 1 } : {}) },
    });
    await publish(stateEvent(offer, ++seq, 'loading'));
    await measure('loading', async () => (await peek.job(id)).state === 'loading');
    const fetched = await h.raw({
      method: 'GET',
      url: `/api/exec/jobs/${id}/workflow?agent=agent-1`,
      token: offer.jobToken,
    });
    expect(fetched.status).toBe(200);
    await measure('fetch', async () => (await peek.job(id)).claimed_by === 'agent-1');
    if (batched) {
      const events = [stateEvent(offer, ++seq, 'running'), step('running'), step('succeeded')];
      events.push(stateEvent(offer, ++seq, 'succeeded'));
      await h.bus.publishEvent({ v: 1, type: 'events', agentId: 'agent-1', events });
      await measure('running', async () => (await peek.job(id)).state === 'succeeded');
      return phases;
    }
    await publish(stateEvent(offer, ++seq, 'running'));
    await measure('running', async () => (await peek.job(id)).state === 'running');
    await publish(step('running'));
    await measure('stepRunning', async () => (await peek.step(id, 'one'))?.state === 'running');
    await publish(step('succeeded'));
    await measure('stepSucceeded', async () => (await peek.step(id, 'one'))?.state === 'succeeded');
    await publish(stateEvent(offer, ++seq, 'succeeded'));
    await measure('succeeded', async () => (await peek.job(id)).state === 'succeeded');
    await h.call('showJob', { token: alice, params: { id } });
    await h.call('listResults', { token: alice, params: { id } });
    await measure('detailAndResults', async () => true);
    return phases;
  }

  it('stays within the statement bounds of each phase of a no-op job', async () => {
    // The first job warms the caches (workflow version, parsed workflow, the token's last use).
    await runJob();
    const phases = await runJob();
    const sum = (f: (c: StatementCountsSnapshot) => number) =>
      Object.values(phases).reduce((total, c) => total + f(c), 0);
    const table = (of: Partial<Record<Phase, StatementCountsSnapshot>>) =>
      Object.fromEntries(
        Object.entries(of).map(([phase, c]) => [
          phase,
          `${c.total - c.notify} (select ${c.select}, insert ${c.insert}, update ${c.update}, delete ${c.delete}, begin/commit ${c.begin + c.commit}) + ${c.notify} notices`,
        ]),
      );
    const total = { statements: sum((c) => c.total - c.notify), notices: sum((c) => c.notify) };
    console.log(`SQL statements per no-op job on ${backend.name}:`, total, table(phases));
    for (const [phase, bound] of Object.entries(BOUNDS) as [Phase, (typeof BOUNDS)[Phase]][]) {
      const c = phases[phase]!;
      expect(c.rollback, `${phase}: rollbacks`).toBe(0);
      expect(c.total - c.notify, `${phase}: statements`).toBeLessThanOrEqual(bound.statements);
      expect(c.notify, `${phase}: notices`).toBeLessThanOrEqual(bound.notices);
    }
    expect(total.statements).toBeLessThanOrEqual(TOTAL_BOUND.statements);
    expect(total.notices).toBeLessThanOrEqual(TOTAL_BOUND.notices);
  });

  it("applies a job's events that arrive in one message with one lock and one record of them", async () => {
    await runJob(true);
    const phases = await runJob(true);
    const events = phases.running!;
    console.log(`SQL statements of a no-op job's events in one message on ${backend.name}:`, events);
    // begin, lock, record, running (first-step read, job, attempt), 2 × step (read, write), the end (job,
    // attempt, steps, schedule-free rules read), commit.
    expect(events.total - events.notify).toBeLessThanOrEqual(BATCHED_EVENTS_BOUND);
    expect(events.rollback).toBe(0);
  });
});

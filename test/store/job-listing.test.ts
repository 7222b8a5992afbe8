/**
 * The jobs list at scale, on a real SQLite file and a real PostgreSQL schema: 10,000 jobs are paged
 * through the (created_at, id) indexes, so a page — the first or one deep in the list — costs about what it
 * costs with 100 jobs. Shown twice: by the query plan, and by timing pages against a 100-job store (a
 * ratio, interleaved so a busy machine slows both alike).
 */
import { CompiledQuery } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, type JobPageFilter, type Store } from '../../src/store/index.js';
import { backends, type Backend, type BackendHandle } from './backends.js';

const USERS = ['papi-ann', 'papi-ben', 'papi-cem', 'papi-dai'];
const BASE_TIME = Date.UTC(2026, 0, 1);

interface Seeded {
  store: Store;
  handle: BackendHandle;
}

/** A store with `count` jobs of four users, one a minute (some sharing a time), inserted in bulk. */
async function seeded(backend: Backend, title: string, count: number): Promise<Seeded> {
  const handle = await backend.create(title);
  const store = await openStore(handle.config);
  for (const name of USERS) {
    await store.createUser({ name, role: 'user', passwordHash: null, createdAt: 1 });
    await store.insertWorkflowVersion({
      space: name,
      name: 'report',
      source: 'name: report',
      format: 'yaml',
      digest: 'd',
      description: '',
      params: [],
      steps: [],
      assets: [],
      createdBy: name,
      createdAt: 1,
    });
  }
  const rows = Array.from({ length: count }, (_, i) => {
    const user = USERS[i % USERS.length]!;
    // Every third job shares its minute with the one before: ties are broken by id.
    const createdAt = BASE_TIME + (i - (i % 3 === 2 ? 1 : 0)) * 60_000;
    return {
      id: `${String(createdAt).padStart(17, '0')}-${String(i).padStart(8, '0')}`,
      user_name: user,
      workflow_space: user,
      workflow_name: 'report',
      workflow_version: 1,
      workflow_digest: 'd',
      params_json: '{}',
      labels_json: '[]',
      state: i % 10 === 0 ? 'failed' : 'succeeded',
      attempt: 1,
      agent_id: null,
      executor_json: null,
      error_code: null,
      error_message: null,
      timeout_ms: null,
      job_token_hash: `h${i}`,
      load_deadline: null,
      cancel_requested: 0,
      created_at: createdAt,
      started_at: null,
      finished_at: null,
      updated_at: createdAt,
      retries: null,
      submit_key: null,
      offer_published_at: null,
      claimed_by: null,
      cluster: 'local',
      pinned: 0,
    };
  });
  for (let start = 0; start < rows.length; start += 500)
    await store.db
      .insertInto('jobs')
      .values(rows.slice(start, start + 500))
      .execute();
  // What autovacuum does on a live database: give the planner the table's statistics.
  if (backend.name === 'postgres') await store.db.executeQuery(CompiledQuery.raw('ANALYZE jobs'));
  return { store, handle };
}

async function plan(store: Store, filter: JobPageFilter): Promise<string> {
  const query = store.listings.jobPageQuery(filter).compile();
  const prefix = store.dialect === 'sqlite' ? 'EXPLAIN QUERY PLAN ' : 'EXPLAIN ';
  const result = await store.db.executeQuery(CompiledQuery.raw(prefix + query.sql, [...query.parameters]));
  return result.rows.map((row) => Object.values(row as Record<string, unknown>).join(' ')).join('\n');
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

describe.each(backends)('the jobs list at scale on $name', (backend) => {
  let small: Seeded;
  let large: Seeded;
  beforeAll(async () => {
    small = await seeded(backend, 'papi listing small', 100);
    large = await seeded(backend, 'papi listing large', 10_000);
  }, 120_000);
  afterAll(async () => {
    for (const seededStore of [small, large]) {
      await seededStore?.store.close();
      await seededStore?.handle.dispose();
    }
  });

  it('walks every job exactly once, newest first, across pages and equal times', async () => {
    const seen: string[] = [];
    let before: JobPageFilter['before'];
    for (let pages = 0; pages < 100; pages++) {
      const page = await large.store.listings.jobs({ limit: 333, ...(before ? { before } : {}) });
      seen.push(...page.items.map((job) => job.id));
      if (!page.next) break;
      before = page.next;
    }
    expect(seen).toHaveLength(10_000);
    expect(new Set(seen).size).toBe(10_000);
    // Ids start with the creation time here, so id order is (created_at, id) order.
    const expected = (await large.store.listJobs({ limit: 10_000 })).map((job) => job.id);
    expect(seen).toEqual(expected);
    const failed = await large.store.listings.jobs({ user: 'papi-ann', state: 'failed', limit: 1000 });
    expect(failed.items.length).toBe(500);
    expect(failed.items.every((job) => job.user === 'papi-ann' && job.state === 'failed')).toBe(true);
  });

  it('reads a page, the first or a deep one, through the index', async () => {
    const deep = { createdAt: BASE_TIME + 500 * 60_000, id: `${BASE_TIME + 500 * 60_000}-00000500` };
    for (const filter of [
      { user: 'papi-ann', limit: 50 },
      { user: 'papi-ann', limit: 50, before: deep },
      { limit: 50 },
      { limit: 50, before: deep },
    ] satisfies JobPageFilter[]) {
      const text = await plan(large.store, filter);
      // SQLite takes the user's index; PostgreSQL may walk the all-jobs one when a user has a quarter of all
      // jobs (its cost model: as cheap). Either is an index range in (created_at, id) order.
      const index =
        filter.user !== undefined && backend.name === 'sqlite' ? /jobs_user_created/ : /jobs_(user_)?created/;
      expect(text, JSON.stringify(filter)).toMatch(index);
      // Never a sort of the whole table (SQLite says "USE TEMP B-TREE FOR ORDER BY"; PostgreSQL "Sort").
      expect(text).not.toMatch(/TEMP B-TREE|Sort\b|Seq Scan/);
    }
  });

  it('pages 10,000 jobs about as fast as 100', async () => {
    // Same page size everywhere (a user has 25 jobs in the small store): only the store's size differs.
    const deepLarge = (await large.store.listings.jobs({ user: 'papi-cem', limit: 2400 })).next!;
    const deepSmall = (await small.store.listings.jobs({ user: 'papi-cem', limit: 5 })).next!;
    const time = async (store: Store, filter: JobPageFilter): Promise<number> => {
      const started = process.hrtime.bigint();
      await store.listings.jobs(filter);
      return Number(process.hrtime.bigint() - started) / 1e6;
    };
    const smallTimes: number[] = [];
    const largeTimes: number[] = [];
    for (let round = 0; round < 40; round++) {
      for (const filter of [{ user: 'papi-cem', limit: 20 }, { limit: 20 }] satisfies JobPageFilter[]) {
        smallTimes.push(await time(small.store, filter));
        largeTimes.push(await time(large.store, filter));
      }
      smallTimes.push(await time(small.store, { user: 'papi-cem', limit: 20, before: deepSmall }));
      largeTimes.push(await time(large.store, { user: 'papi-cem', limit: 20, before: deepLarge }));
    }
    // A scan and sort of 10,000 rows costs tens of times a 100-row one; an index range costs the same.
    const ratio = median(largeTimes) / median(smallTimes);
    expect(
      ratio,
      `median page: ${median(largeTimes)} ms at 10,000 jobs, ${median(smallTimes)} ms at 100`,
    ).toBeLessThan(4);
  });
});

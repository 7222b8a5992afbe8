/**
 * Migration 0008 (spaces) on a database as the previous release left it: global workflow names, one of them
 * with a version pushed by a second user, and jobs that ran each version.
 */
import { sql } from 'kysely';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../../src/store/index.js';
import { backends, type BackendHandle } from './backends.js';

const T = 1_767_225_600_000;

describe.each(backends)('migration 0008 (spaces) on $name', (backend) => {
  let handle: BackendHandle;
  let store: Store | undefined;

  beforeEach(async (context) => {
    handle = await backend.create(context.task.name);
  });

  afterEach(async () => {
    await store?.close();
    store = undefined;
    await handle.dispose();
  });

  /** Writes rows with the pre-0008 columns, as the previous release did. */
  async function seedGlobalWorkflows(old: Store): Promise<void> {
    const db = old.db;
    for (const user of ['alice', 'bob', 'carol'])
      await sql`INSERT INTO users (name, role, password_hash, disabled, created_at, source)
                VALUES (${user}, 'user', NULL, 0, ${T}, 'local')`.execute(db);
    const versions: [string, number, string][] = [
      ['report', 1, 'alice'],
      ['report', 2, 'bob'], // bob's push that became version 2 of alice's workflow
      ['report', 3, 'alice'],
      ['daily', 1, 'bob'],
    ];
    for (const [name, version, by] of versions) {
      await sql`INSERT INTO workflows (name, version, source, format, digest, description, params_json,
                                       steps_json, created_by, created_at)
                VALUES (${name}, ${version}, ${`name: ${name} # by ${by}`}, 'yaml', ${`d-${name}-${version}`},
                        '', '[]', '[{"id":"a","kind":"sql","needs":[]}]', ${by}, ${T + version})`.execute(db);
      await sql`INSERT INTO workflow_assets (name, version, path, digest, size)
                VALUES (${name}, ${version}, 'q.sql', ${`${by}${version}`.padEnd(64, '0')}, 7)`.execute(db);
    }
    const jobs: [string, string, string, number][] = [
      ['20260101000000000-00000001', 'alice', 'report', 2],
      ['20260101000000000-00000002', 'alice', 'report', 3],
      ['20260101000000000-00000003', 'bob', 'daily', 1],
      ['20260101000000000-00000004', 'carol', 'report', 1],
    ];
    for (const [id, user, name, version] of jobs) {
      await sql`INSERT INTO jobs (id, user_name, workflow_name, workflow_version, workflow_digest, params_json,
                                  labels_json, state, attempt, job_token_hash, cancel_requested, created_at,
                                  updated_at, finished_at, submit_key, offer_published_at)
                VALUES (${id}, ${user}, ${name}, ${version}, ${`d-${name}-${version}`}, '{}', '[]', 'succeeded', 1,
                        ${`hash-${id}`}, 0, ${T}, ${T + 5}, ${T + 5}, ${`key-${id}`}, ${T})`.execute(db);
      await sql`INSERT INTO job_attempts (job_id, attempt, state, agent_id, offered_at, finished_at)
                VALUES (${id}, 1, 'succeeded', 'agent-1', ${T}, ${T + 5})`.execute(db);
      await sql`INSERT INTO job_steps (job_id, step_id, kind, position, state)
                VALUES (${id}, 'a', 'sql', 0, 'succeeded')`.execute(db);
      await sql`INSERT INTO results (job_id, name, kind, formats_json, size, rows, created_at)
                VALUES (${id}, 'out', 'table', '["csv"]', 10, 1, ${T + 4})`.execute(db);
    }
  }

  it("moves every version into its pusher's personal space with its number, and keeps every job on the version it ran", async () => {
    const old = await openStore(handle.config, { migrateUntil: '0007_agent_draining' });
    try {
      await seedGlobalWorkflows(old);
    } finally {
      await old.close();
    }
    const applied: string[] = [];
    store = await openStore(handle.config, { onMigration: (name) => applied.push(name) });
    expect(applied).toEqual([
      '0008_spaces',
      '0009_user_deleted',
      '0010_job_listing',
      '0011_job_files',
      '0012_clusters',
      '0013_schedules',
      '0014_notifications',
      '0015_retention',
    ]);

    // Every user (and pusher) has a personal space.
    expect((await store.spaces.listSpaces()).map((s) => [s.name, s.kind, s.owner])).toEqual([
      ['alice', 'personal', 'alice'],
      ['bob', 'personal', 'bob'],
      ['carol', 'personal', 'carol'],
    ]);

    // The first pusher's versions stay together; bob's version 2 is in bob's space, still number 2.
    expect(
      (await store.listWorkflowVersions('alice', 'report')).map((w) => [w.version, w.createdBy]),
    ).toEqual([
      [1, 'alice'],
      [3, 'alice'],
    ]);
    expect((await store.listWorkflowVersions('bob', 'report')).map((w) => [w.version, w.createdBy])).toEqual([
      [2, 'bob'],
    ]);
    expect((await store.listWorkflows('bob')).map((w) => `${w.name}@${w.latestVersion}`)).toEqual([
      'daily@1',
      'report@2',
    ]);
    // alice's `report` never resolves to bob's code any more.
    expect((await store.getWorkflow('alice', 'report'))?.source).toBe('name: report # by alice');
    expect(await store.getWorkflow('alice', 'report', 2)).toBeUndefined();
    // Assets moved with their versions.
    expect((await store.getWorkflow('bob', 'report', 2))?.assets).toEqual([
      { path: 'q.sql', digest: 'bob2'.padEnd(64, '0'), size: 7 },
    ]);
    expect(
      await store.workflowHasAsset({ space: 'alice', name: 'report', version: 3 }, 'alice3'.padEnd(64, '0')),
    ).toBeDefined();

    // Every job kept, pointing at the version it ran, with its steps, attempts and results.
    const expected: [string, string, string, number][] = [
      ['20260101000000000-00000001', 'bob', 'report', 2],
      ['20260101000000000-00000002', 'alice', 'report', 3],
      ['20260101000000000-00000003', 'bob', 'daily', 1],
      ['20260101000000000-00000004', 'alice', 'report', 1],
    ];
    for (const [id, space, name, version] of expected) {
      const detail = await store.getJobDetail(id);
      expect(detail?.job.workflow, id).toEqual({ space, name, version, digest: `d-${name}-${version}` });
      expect(detail?.job.state).toBe('succeeded');
      expect(detail?.steps.map((s) => [s.id, s.state])).toEqual([['a', 'succeeded']]);
      expect(detail?.attempts.map((a) => a.agentId)).toEqual(['agent-1']);
      expect((await store.listResults(id)).map((r) => r.name)).toEqual(['out']);
      // The pinned version stays readable for the job.
      expect((await store.getWorkflow(space, name, version, { includeDeleted: true }))?.createdBy).toBe(
        space,
      );
    }
    expect((await store.listJobs({ limit: 10 })).length).toBe(4);

    // Numbering continues after the highest version in the space.
    const next = await store.insertWorkflowVersion({
      space: 'bob',
      name: 'report',
      source: 'name: report',
      format: 'yaml',
      digest: 'd-new',
      description: '',
      params: [],
      steps: [],
      assets: [],
      createdBy: 'bob',
      createdAt: T + 100,
    });
    expect(next.version).toBe(3);

    // The unique submit key index survived the rebuild, and the job's foreign key now names the space.
    await expect(
      sql`INSERT INTO jobs (id, user_name, workflow_space, workflow_name, workflow_version, workflow_digest,
                            params_json, labels_json, state, attempt, job_token_hash, cancel_requested,
                            created_at, updated_at, submit_key)
          VALUES ('20260101000000000-00000009', 'alice', 'alice', 'report', 1, 'x', '{}', '[]', 'queued', 1,
                  'h9', 0, ${T}, ${T}, 'key-20260101000000000-00000001')`.execute(store.db),
    ).rejects.toThrow();
    await expect(
      sql`INSERT INTO jobs (id, user_name, workflow_space, workflow_name, workflow_version, workflow_digest,
                            params_json, labels_json, state, attempt, job_token_hash, cancel_requested,
                            created_at, updated_at)
          VALUES ('20260101000000000-00000010', 'carol', 'carol', 'report', 1, 'x', '{}', '[]', 'queued', 1,
                  'h10', 0, ${T}, ${T})`.execute(store.db),
    ).rejects.toThrow();
  });
});

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../../src/store/index.js';
import type { JobStateEvent, JobStepEvent } from '../../src/protocol/index.js';
import { backends, type BackendHandle } from './backends.js';

describe.each(backends)('store on $name', (backend) => {
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
  });

  afterEach(async () => {
    await store.close();
    await handle.dispose();
  });

  async function seedJob(id = '20260101000000000-aaaaaaaa', cluster?: string): Promise<void> {
    await store.createUser({ name: 'alice', role: 'user', passwordHash: null, createdAt: 1 });
    await store.insertWorkflowVersion({
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
    await store.insertJobOnce({
      id,
      user: 'alice',
      workflow: { space: 'alice', name: 'wf', version: 1, digest: 'd1' },
      params: { n: 1 },
      labels: ['gpu'],
      timeoutMs: null,
      jobTokenHash: 'h',
      createdAt: 1_767_225_600_000,
      steps: [{ id: 'a', kind: 'sql' }],
      ...(cluster !== undefined ? { cluster } : {}),
    });
  }

  function stateEvent(
    seq: number,
    state: JobStateEvent['state'],
    extra: Partial<JobStateEvent> = {},
  ): JobStateEvent {
    return {
      v: 1,
      type: 'state',
      jobId: '20260101000000000-aaaaaaaa',
      attempt: 1,
      seq,
      time: 1_767_225_601_000 + seq,
      agentId: 'agent-1',
      state,
      ...extra,
    };
  }

  it('applies migrations once, so reopening an existing database keeps its rows', async () => {
    await store.createUser({ name: 'alice', role: 'user', passwordHash: 'x', createdAt: 5 });
    await store.close();
    store = await openStore(handle.config);
    expect(await store.getUser('alice')).toEqual({
      name: 'alice',
      role: 'user',
      passwordHash: 'x',
      disabled: false,
      createdAt: 5,
      source: 'local',
      deletedAt: null,
    });
  });

  it('creates directory users without a password, updates their role, and never touches a local user', async () => {
    const created = await store.upsertDirectoryUser({ name: 'dora', role: 'user', time: 7 });
    expect(created).toMatchObject({ name: 'dora', role: 'user', passwordHash: null, source: 'ldap' });
    expect(await store.upsertDirectoryUser({ name: 'dora', role: 'admin', time: 8 })).toMatchObject({
      role: 'admin',
      createdAt: 7,
    });
    await store.createUser({ name: 'lena', role: 'user', passwordHash: 'h', createdAt: 1 });
    expect(await store.upsertDirectoryUser({ name: 'lena', role: 'admin', time: 9 })).toMatchObject({
      role: 'user',
      passwordHash: 'h',
      source: 'local',
    });
  });

  it.runIf(backend.name === 'postgres')(
    'migrates a fresh schema exactly once when several servers open it at once',
    async () => {
      const fresh = await backend.create('concurrent open');
      const migrated: string[] = [];
      const stores = await Promise.all(
        [1, 2, 3].map(() => openStore(fresh.config, { onMigration: (name) => migrated.push(name) })),
      );
      try {
        expect(migrated).toEqual([
          '0001_initial',
          '0002_user_source',
          '0003_job_attempts',
          '0004_ha_jobs',
          '0005_attempt_claims',
          '0006_login_failures',
          '0007_agent_draining',
          '0008_spaces',
          '0009_user_deleted',
          '0010_job_listing',
          '0011_job_files',
          '0012_clusters',
          '0013_schedules',
          '0014_notifications',
          '0015_retention',
        ]);
        expect(await stores[2]!.countUsers()).toBe(0);
      } finally {
        await Promise.all(stores.map((s) => s.close()));
        await fresh.dispose();
      }
    },
  );

  it('refuses a second user with the same name', async () => {
    expect(await store.createUser({ name: 'bob', role: 'user', passwordHash: null, createdAt: 1 })).toBe(
      true,
    );
    expect(await store.createUser({ name: 'bob', role: 'admin', passwordHash: null, createdAt: 1 })).toBe(
      false,
    );
    expect(await store.countUsers()).toBe(1);
  });

  it('returns epoch-ms times beyond 32 bits as numbers', async () => {
    await store.createUser({ name: 'carol', role: 'user', passwordHash: null, createdAt: 1_767_225_600_123 });
    const user = await store.getUser('carol');
    expect(user?.createdAt).toBe(1_767_225_600_123);
    expect(typeof user?.createdAt).toBe('number');
  });

  it('finds a token by its hash with its user, and forgets it once revoked', async () => {
    await store.createUser({ name: 'alice', role: 'user', passwordHash: null, createdAt: 1 });
    await store.createToken({
      id: 't1',
      user: 'alice',
      name: 'ci',
      kind: 'api',
      tokenHash: 'abc',
      createdAt: 1,
      expiresAt: null,
    });
    const found = await store.findToken('abc');
    expect(found?.user.name).toBe('alice');
    expect(found?.token.revoked).toBe(false);
    expect((await store.listTokens('alice')).map((t) => t.id)).toEqual(['t1']);
    expect(await store.revokeToken('bob', 't1')).toBe(false);
    expect(await store.revokeToken('alice', 't1')).toBe(true);
    expect((await store.findToken('abc'))?.token.revoked).toBe(true);
    expect(await store.listTokens('alice')).toEqual([]);
  });

  it('numbers workflow versions from 1 and keeps every version with its assets', async () => {
    await store.createUser({ name: 'alice', role: 'user', passwordHash: null, createdAt: 1 });
    const base = {
      space: 'alice',
      name: 'wf',
      format: 'yaml' as const,
      description: 'd',
      params: [],
      steps: [],
      createdBy: 'alice',
      createdAt: 10,
    };
    const v1 = await store.insertWorkflowVersion({ ...base, source: 'one', digest: 'd1', assets: [] });
    const v2 = await store.insertWorkflowVersion({
      ...base,
      source: 'two',
      digest: 'd2',
      createdAt: 20,
      assets: [{ path: 'q.sql', digest: 'f'.repeat(64), size: 3 }],
    });
    expect([v1.version, v2.version]).toEqual([1, 2]);
    expect((await store.getWorkflow('alice', 'wf'))?.source).toBe('two');
    expect((await store.getWorkflow('alice', 'wf', 1))?.source).toBe('one');
    expect((await store.getWorkflow('alice', 'wf', 2))?.assets).toEqual([
      { path: 'q.sql', digest: 'f'.repeat(64), size: 3 },
    ]);
    expect(await store.getWorkflow('alice', 'wf', 3)).toBeUndefined();
    expect(await store.getWorkflow('bob', 'wf')).toBeUndefined();
    expect((await store.listWorkflowVersions('alice', 'wf')).map((w) => w.version)).toEqual([1, 2]);
    expect(await store.listWorkflows('alice')).toEqual([
      { space: 'alice', name: 'wf', latestVersion: 2, description: 'd', updatedAt: 20, updatedBy: 'alice' },
    ]);
    expect(await store.listWorkflows('bob')).toEqual([]);
    const v2ref = { space: 'alice', name: 'wf', version: 2 };
    expect(await store.workflowHasAsset(v2ref, 'f'.repeat(64))).toBeDefined();
    expect(await store.workflowHasAsset({ ...v2ref, version: 1 }, 'f'.repeat(64))).toBeUndefined();

    // Deleting hides every version from runs and lists, and keeps them for the jobs that ran them.
    expect(await store.deleteWorkflow('alice', 'wf', 'alice', 30)).toBe(2);
    expect(await store.getWorkflow('alice', 'wf')).toBeUndefined();
    expect(await store.getWorkflow('alice', 'wf', 2)).toBeUndefined();
    expect(await store.listWorkflows('alice')).toEqual([]);
    expect((await store.getWorkflow('alice', 'wf', 2, { includeDeleted: true }))?.source).toBe('two');
    // A push after the delete starts a new live workflow, numbered after the deleted versions.
    const v3 = await store.insertWorkflowVersion({ ...base, source: 'three', digest: 'd3', assets: [] });
    expect(v3.version).toBe(3);
    expect((await store.listWorkflowVersions('alice', 'wf')).map((w) => w.version)).toEqual([3]);
  });

  it('gives concurrent pushes of one workflow distinct consecutive versions', async () => {
    await store.createUser({ name: 'alice', role: 'user', passwordHash: null, createdAt: 1 });
    const base = {
      space: 'alice',
      name: 'wf',
      format: 'yaml' as const,
      description: '',
      params: [],
      steps: [],
      createdBy: 'alice',
      createdAt: 10,
      assets: [],
    };
    const versions = await Promise.all(
      [1, 2, 3, 4].map((i) => store.insertWorkflowVersion({ ...base, source: `s${i}`, digest: `d${i}` })),
    );
    expect(versions.map((v) => v.version).sort()).toEqual([1, 2, 3, 4]);
  });

  it('moves a job only along allowed transitions', async () => {
    await seedJob();
    const id = '20260101000000000-aaaaaaaa';
    const offered = await store.transitionJob(id, 'offered', { loadDeadline: 123 });
    expect(offered.ok).toBe(true);
    expect(offered.job?.loadDeadline).toBe(123);
    const illegal = await store.transitionJob(id, 'lost');
    expect(illegal.ok).toBe(false);
    expect(illegal.job?.state).toBe('offered');
    const guarded = await store.transitionJob(id, 'canceled', {}, { from: ['queued'] });
    expect(guarded.ok).toBe(false);
    const canceled = await store.transitionJob(id, 'canceled', {
      error: { code: 'STEWARD_JOB_CANCELED', message: 'canceled by alice' },
    });
    expect(canceled.ok).toBe(true);
    expect(canceled.job?.finishedAt).not.toBeNull();
    expect(canceled.job?.error).toEqual({ code: 'STEWARD_JOB_CANCELED', message: 'canceled by alice' });
    expect((await store.transitionJob(id, 'running')).ok).toBe(false);
    expect((await store.transitionJob('missing', 'running')).job).toBeNull();
  });

  it('lets exactly one of two racing transitions win', async () => {
    await seedJob();
    const id = '20260101000000000-aaaaaaaa';
    await store.transitionJob(id, 'offered');
    const results = await Promise.all([
      store.transitionJob(id, 'expired'),
      store.transitionJob(id, 'canceled'),
    ]);
    expect(results.filter((r) => r.ok)).toHaveLength(1);
  });

  it('applies an event with the same (job, attempt, seq) only once', async () => {
    await seedJob();
    const id = '20260101000000000-aaaaaaaa';
    await store.transitionJob(id, 'offered');
    const executor = { pid: 42, osUser: 'alice', uid: 1001, gid: 1001, groups: [1001] };
    const first = await store.applyEvent(stateEvent(1, 'loading', { executor }));
    expect(first.applied).toBe(true);
    expect(first.job?.state).toBe('loading');
    expect(first.job?.executor).toEqual(executor);
    expect(first.job?.agentId).toBe('agent-1');
    const again = await store.applyEvent(stateEvent(1, 'loading', { executor }));
    expect(again).toEqual({ applied: false });
    const running = await store.applyEvent(stateEvent(2, 'running'));
    expect(running.job?.state).toBe('running');
    expect(running.job?.startedAt).toBe(1_767_225_601_002);
  });

  it('records but skips a late event whose state is no longer reachable', async () => {
    await seedJob();
    const id = '20260101000000000-aaaaaaaa';
    await store.transitionJob(id, 'offered');
    await store.applyEvent(stateEvent(1, 'loading'));
    await store.applyEvent(stateEvent(3, 'succeeded'));
    const late = await store.applyEvent(stateEvent(2, 'running'));
    expect(late).toEqual({ applied: true });
    expect((await store.getJob(id))?.state).toBe('succeeded');
  });

  it('ignores events of an older attempt', async () => {
    await seedJob();
    const id = '20260101000000000-aaaaaaaa';
    await store.transitionJob(id, 'offered');
    const stale = await store.applyEvent(stateEvent(1, 'loading', { attempt: 2 }));
    expect(stale.applied).toBe(true);
    expect((await store.getJob(id))?.state).toBe('offered');
  });

  it('drops events for jobs it does not know', async () => {
    expect(await store.applyEvent(stateEvent(1, 'loading', { jobId: 'nope' }))).toEqual({ applied: false });
  });

  it('upserts step rows from step events, known and unknown', async () => {
    await seedJob();
    const step = (
      seq: number,
      stepId: string,
      state: JobStepEvent['step']['state'],
      extra: Partial<JobStepEvent['step']> = {},
    ): JobStepEvent => ({
      v: 1,
      type: 'step',
      jobId: '20260101000000000-aaaaaaaa',
      attempt: 1,
      seq,
      time: 1000 + seq,
      agentId: 'agent-1',
      step: { stepId, state, time: 1000 + seq * 10, ...extra },
    });
    await store.applyEvent(step(1, 'a', 'running'));
    const done = await store.applyEvent(step(2, 'a', 'succeeded', { rows: 7 }));
    expect(done.step).toMatchObject({
      id: 'a',
      kind: 'sql',
      state: 'succeeded',
      startedAt: 1010,
      finishedAt: 1020,
      durationMs: 10,
      rows: 7,
      progress: 1,
    });
    expect((await store.applyEvent(step(2, 'a', 'failed'))).applied).toBe(false);
    await store.applyEvent(step(3, 'extra', 'running', { message: 'hello' }));
    const steps = await store.listSteps('20260101000000000-aaaaaaaa');
    expect(steps.map((s) => [s.id, s.state])).toEqual([
      ['a', 'succeeded'],
      ['extra', 'running'],
    ]);
  });

  it('lists jobs newest first with filters and paging', async () => {
    await seedJob('20260101000000000-aaaaaaaa');
    for (const id of ['20260101000001000-bbbbbbbb', '20260101000002000-cccccccc']) {
      await store.insertJobOnce({
        id,
        user: 'alice',
        workflow: { space: 'alice', name: 'wf', version: 1, digest: 'd1' },
        params: {},
        labels: [],
        timeoutMs: 5,
        jobTokenHash: 'h',
        createdAt: 1,
        steps: [],
      });
    }
    expect((await store.listJobs({ limit: 10 })).map((j) => j.id.slice(-1))).toEqual(['c', 'b', 'a']);
    expect(
      (await store.listJobs({ limit: 10, before: '20260101000002000-cccccccc' })).map((j) => j.id.slice(-1)),
    ).toEqual(['b', 'a']);
    expect(await store.listJobs({ limit: 10, user: 'bob' })).toEqual([]);
    expect((await store.listJobs({ limit: 1, state: 'queued', workflow: 'wf' })).length).toBe(1);
  });

  it('finds offered and loading jobs whose load deadline passed', async () => {
    await seedJob();
    await store.transitionJob('20260101000000000-aaaaaaaa', 'offered', { loadDeadline: 1000 });
    expect(await store.listJobsPastLoadDeadline(999)).toEqual([]);
    expect((await store.listJobsPastLoadDeadline(1001)).map((j) => j.id)).toEqual([
      '20260101000000000-aaaaaaaa',
    ]);
  });

  it('accumulates the formats of a table result', async () => {
    await seedJob();
    await store.upsertResult({
      jobId: '20260101000000000-aaaaaaaa',
      name: 't',
      kind: 'table',
      format: 'parquet',
      size: 100,
      rows: 3,
      createdAt: 1,
    });
    const both = await store.upsertResult({
      jobId: '20260101000000000-aaaaaaaa',
      name: 't',
      kind: 'table',
      format: 'csv',
      size: 50,
      rows: 3,
      createdAt: 2,
    });
    expect(both).toMatchObject({ formats: ['csv', 'parquet'], size: 100, rows: 3 });
    expect((await store.listResults('20260101000000000-aaaaaaaa')).map((r) => r.name)).toEqual(['t']);
  });

  it('merges two formats of one table that arrive at once, in either order', async () => {
    await seedJob();
    const upload = (name: string, format: 'parquet' | 'csv', size: number) =>
      store.upsertResult({
        jobId: '20260101000000000-aaaaaaaa',
        name,
        kind: 'table',
        format,
        size,
        rows: 3,
        createdAt: 1,
      });
    await Promise.all([upload('a', 'csv', 50), upload('a', 'parquet', 100)]);
    await Promise.all([upload('b', 'parquet', 100), upload('b', 'csv', 50)]);
    const results = await store.listResults('20260101000000000-aaaaaaaa');
    expect(results).toEqual([
      expect.objectContaining({ name: 'a', formats: ['csv', 'parquet'], size: 100, rows: 3 }),
      expect.objectContaining({ name: 'b', formats: ['csv', 'parquet'], size: 100, rows: 3 }),
    ]);
  });

  it('appends audit entries and lists them newest first', async () => {
    await store.appendAudit({
      time: 1,
      actor: 'alice',
      action: 'login',
      target: null,
      source: '127.0.0.1',
      detail: null,
    });
    await store.appendAudit({
      time: 2,
      actor: 'bob',
      action: 'job.submit',
      target: 'j1',
      source: null,
      detail: { workflow: 'wf' },
    });
    const all = await store.listAudit({ limit: 10 });
    expect(all.map((e) => e.action)).toEqual(['job.submit', 'login']);
    expect(all[0]?.detail).toEqual({ workflow: 'wf' });
    expect(all[0]!.id).toBeGreaterThan(all[1]!.id);
    expect((await store.listAudit({ actor: 'alice', limit: 10 })).length).toBe(1);
  });

  it('keeps one registry row per agent, updated by heartbeats', async () => {
    const beat = {
      v: 1 as const,
      type: 'heartbeat' as const,
      agentId: 'a1',
      time: 1,
      labels: ['x'],
      capacity: { slots: 4, free: 4 },
      executors: [],
      isolation: 'per-user' as const,
      draining: false,
    };
    await store.upsertAgent(beat, 100);
    await store.upsertAgent({ ...beat, capacity: { slots: 4, free: 2 } }, 200);
    expect(await store.listAgents()).toEqual([
      {
        id: 'a1',
        labels: ['x'],
        isolation: 'per-user',
        capacity: { slots: 4, free: 2 },
        executors: [],
        lastSeen: 200,
        draining: false,
        cluster: 'local',
        clockOffsetMs: -199,
        keyFingerprints: null,
        serverProbe: null,
      },
    ]);
    expect(await store.listAgents(201)).toEqual([]);
    // A drained agent says so in its heartbeats; a resumed one says it is not.
    await store.upsertAgent({ ...beat, draining: true }, 300);
    expect((await store.listAgents())[0]).toMatchObject({ draining: true, lastSeen: 300 });
    await store.upsertAgent(beat, 400);
    expect((await store.listAgents())[0]).toMatchObject({ draining: false, lastSeen: 400 });
    // Heartbeats through a cluster's bus record the cluster and what the attach checks read.
    const probe = { url: 'http://server:8080', ok: false, error: 'ECONNREFUSED' };
    await store.upsertAgent(
      { ...beat, time: 550, keyFingerprints: ['abc'], serverProbe: probe },
      500,
      'prod',
    );
    expect(await store.listAgents(0, 'prod')).toEqual([
      expect.objectContaining({
        id: 'a1',
        cluster: 'prod',
        clockOffsetMs: 50,
        keyFingerprints: ['abc'],
        serverProbe: probe,
      }),
    ]);
    expect(await store.listAgents(0, 'local')).toEqual([]);
    expect(await store.agentCluster('a1')).toBe('prod');
  });

  it('stores clusters detached, moves their state only from the states given, and removes only detached ones', async () => {
    const cluster = {
      name: 'prod',
      brokerUrl: 'amqp://steward@mq:5672',
      vhost: 'prod',
      passwordFile: '/etc/steward/prod-pw',
      caFile: null,
      certFile: null,
      keyFile: null,
    };
    expect(await store.clusters.create(cluster)).toBe(true);
    expect(await store.clusters.create(cluster)).toBe(false);
    expect(await store.clusters.get('prod')).toMatchObject({ ...cluster, state: 'detached' });
    expect(await store.clusters.setState('prod', 'detaching', ['attached'])).toBe(false);
    expect(await store.clusters.setState('prod', 'attached', ['detached'])).toBe(true);
    expect(await store.clusters.remove('prod')).toBe(false);
    expect(await store.clusters.setState('prod', 'detaching', ['attached'])).toBe(true);
    await seedJob('job-prod-1', 'prod');
    expect((await store.getJob('job-prod-1'))?.cluster).toBe('prod');
    expect((await store.clusters.unfinishedJobs()).get('prod')).toEqual({ queued: 1 });
    expect(await store.clusters.jobIds('prod', ['queued'])).toEqual(['job-prod-1']);
    expect(await store.clusters.setState('prod', 'detached', ['detaching'])).toBe(true);
    expect(await store.clusters.remove('prod')).toBe(true);
    expect(await store.clusters.list()).toEqual([]);
  });
});

/**
 * The cluster API on a real server (embedded bus, SQLite): admins only and audited; submit-time routing and
 * refusals; the detach policy for queued jobs; an attach refused with the failed checks when the broker is
 * unreachable. The whole path over RabbitMQ is in test/distributed/clusters.test.ts.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { REPORT_WORKFLOW, startHarness, type Harness } from './harness.js';

let h: Harness;
let admin: string;
let alice: string;

beforeEach(async (context) => {
  h = await startHarness({ title: context.task.name });
  admin = await h.adminToken();
  alice = await h.userToken('alice');
  await h.call('pushWorkflow', { token: alice, body: { source: REPORT_WORKFLOW } });
});
afterEach(async () => {
  await h.dispose();
});

describe('clusters API', () => {
  it('is for admins only, and lists the built-in local cluster as the attached default', async () => {
    expect((await h.callError('listClusters', { token: alice })).error.code).toBe('STEWARD_FORBIDDEN');
    const { clusters } = await h.call('listClusters', { token: admin });
    expect(clusters).toEqual([
      expect.objectContaining({
        name: 'local',
        builtIn: true,
        default: true,
        state: 'attached',
        broker: null,
      }),
    ]);
  });

  it('stores a cluster detached, refuses a password in the URL, and audits additions', async () => {
    const refused = await h.callError('addCluster', {
      token: admin,
      body: { name: 'prod', broker: 'amqp://steward:secret@127.0.0.1:1' },
    });
    expect(refused.error.code).toBe('STEWARD_BAD_REQUEST');
    expect(refused.error.message).toMatch(/password-file/);
    const added = await h.call('addCluster', {
      token: admin,
      body: { name: 'prod', broker: 'amqp://steward@127.0.0.1:1', vhost: 'prod', passwordFile: '/etc/pw' },
    });
    expect(added).toMatchObject({ name: 'prod', state: 'detached', builtIn: false, passwordFile: '/etc/pw' });
    expect(
      (await h.callError('addCluster', { token: admin, body: { name: 'prod', broker: 'amqp://h' } })).status,
    ).toBe(409);
    const { entries } = await h.call('listAudit', { token: admin, query: { action: 'cluster.add' } });
    expect(entries).toEqual([expect.objectContaining({ actor: 'admin', target: 'prod' })]);
  });

  it('refuses submits to an unknown or detached cluster before storing a job', async () => {
    await h.call('addCluster', { token: admin, body: { name: 'dev', broker: 'amqp://steward@127.0.0.1:1' } });
    const body = { workflow: 'report', params: { region: 'emea' } };
    const unknown = await h.callError('submitJob', { token: alice, body: { ...body, cluster: 'nowhere' } });
    expect(unknown).toMatchObject({ status: 404, error: { code: 'STEWARD_CLUSTER_UNKNOWN' } });
    const detached = await h.callError('submitJob', { token: alice, body: { ...body, cluster: 'dev' } });
    expect(detached).toMatchObject({ status: 409, error: { code: 'STEWARD_CLUSTER_DETACHED' } });
    expect((await h.call('listJobs', { token: alice, query: {} })).jobs).toEqual([]);
    // Without a cluster the job goes to the default one, `local`.
    const job = await h.call('submitJob', { token: alice, body });
    expect(job.cluster).toBe('local');
  });

  it('names the label no live agent of the cluster has', async () => {
    await h.bus.publishHeartbeat({
      v: 1,
      type: 'heartbeat',
      agentId: 'agent-1',
      time: Date.now(),
      labels: ['cpu'],
      capacity: { slots: 2, free: 2 },
      executors: [],
      isolation: 'per-user',
      draining: false,
    });
    await expect
      .poll(async () => (await h.call('listClusters', { token: admin })).clusters[0]?.agents)
      .toEqual(['agent-1']);
    const refused = await h.callError('submitJob', {
      token: alice,
      body: { workflow: 'report', params: { region: 'emea' }, labels: ['cpu', 'gpu'] },
    });
    expect(refused).toMatchObject({ status: 409, error: { code: 'STEWARD_LABEL_UNAVAILABLE' } });
    expect(refused.error.message).toContain('label gpu');
  });

  it("fails a detached cluster's queued jobs, saying so, and removes only detached clusters", async () => {
    await h.call('addCluster', {
      token: admin,
      body: { name: 'edge', broker: 'amqp://steward@127.0.0.1:1' },
    });
    const workflow = (await h.server.store.getWorkflow('alice', 'report'))!;
    await h.server.store.insertJobOnce({
      id: '20261203000000000-queued01',
      user: 'alice',
      workflow: { space: 'alice', name: 'report', version: workflow.version, digest: workflow.digest },
      params: { region: 'emea' },
      labels: [],
      timeoutMs: null,
      jobTokenHash: 'h',
      createdAt: Date.now(),
      steps: [],
      cluster: 'edge',
    });
    const detached = await h.call('detachCluster', { token: admin, params: { name: 'edge' } });
    expect(detached.state).toBe('detached');
    const job = await h.call('showJob', { token: alice, params: { id: '20261203000000000-queued01' } });
    expect(job).toMatchObject({
      state: 'failed',
      cluster: 'edge',
      error: { code: 'STEWARD_CLUSTER_DETACHED' },
    });
    expect((await h.callError('detachCluster', { token: admin, params: { name: 'local' } })).status).toBe(
      409,
    );
    await h.call('removeCluster', { token: admin, params: { name: 'edge' } });
    expect((await h.call('listClusters', { token: admin })).clusters.map((c) => c.name)).toEqual(['local']);
  });

  it('refuses attach with the failed checks when the broker cannot be reached, and audits the refusal', async () => {
    await h.call('addCluster', {
      token: admin,
      body: { name: 'gone', broker: 'amqp://steward@127.0.0.1:1' },
    });
    const refused = await h.callError('attachCluster', { token: admin, params: { name: 'gone' }, body: {} });
    expect(refused).toMatchObject({ status: 409, error: { code: 'STEWARD_CLUSTER_CHECK_FAILED' } });
    expect(refused.error.details?.checks).toEqual([
      expect.objectContaining({
        id: 'cluster.broker.reachable',
        status: 'fail',
        code: 'STEWARD_CLUSTER_BROKER_UNREACHABLE',
      }),
    ]);
    const { entries } = await h.call('listAudit', {
      token: admin,
      query: { action: 'cluster.attach.refused' },
    });
    expect(entries).toEqual([expect.objectContaining({ target: 'gone' })]);
    const listed = await h.call('listClusters', { token: admin });
    expect(listed.clusters.find((c) => c.name === 'gone')?.state).toBe('detached');
  });
});

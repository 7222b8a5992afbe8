/**
 * The agent's own enforcement with a real `steward agent` on RabbitMQ: a job that freezes its executor ends
 * at its time limit plus the grace, reported by the agent, and the slot serves the next job; a second agent
 * with the same id on this host refuses to start while the first one's job runs on.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Job, type JobDetail } from '../../src/protocol/index.js';
import { Cluster } from '../support/distributed.js';
import { OsUsers } from '../support/os-users.js';
import { createVhost, deleteVhost } from '../support/rabbitmq.js';
import { isRoot } from '../support/steward.js';

let vhost = '';
let cluster: Cluster | undefined;
const osUsers = new OsUsers();

async function running(c: Cluster, id: string): Promise<void> {
  await c.waitForJob(id, 'the job to run', (job) => job.state === 'running');
}

beforeAll(async () => {
  vhost = await createVhost('enforce');
  cluster = await Cluster.start({ vhost, server: { loadTimeout: '2m' } });
  for (const source of [
    'name: freeze\nsteps:\n  - id: f\n    shell: "kill -STOP $PPID; sleep 3600"\n',
    'name: napper\nsteps:\n  - id: nap\n    shell: sleep 3\n',
  ]) {
    const pushed = await cluster.request('POST', '/api/workflows', { source });
    expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
  }
}, 120_000);

afterAll(async () => {
  await cluster?.destroy();
  await osUsers.cleanup();
  if (vhost) await deleteVhost(vhost);
}, 60_000);

describe.runIf(isRoot)('what a RabbitMQ agent enforces itself', () => {
  it('ends a job that froze its executor at its time limit plus the grace, and runs the next job in its slot', async () => {
    const c = cluster!;
    const userMap = { admin: (await osUsers.user('en')).name };
    await c.startAgent('worker', {
      slots: 1,
      userMap,
      deadlineGrace: '2s',
      executorHeartbeat: { interval: '1s', misses: 30 },
    });
    const submitted = await c.request('POST', '/api/jobs', {
      workflow: 'freeze',
      params: {},
      timeoutSeconds: 4,
    });
    expect(submitted.status, JSON.stringify(submitted.json)).toBe(201);
    const frozen = Job.parse(submitted.json).id;
    await running(c, frozen);
    const next = await c.submit('napper');
    const [ended, after] = (await c.settle([frozen, next], 60_000)) as [JobDetail, JobDetail];
    expect(ended.state).toBe('failed');
    expect(ended.error?.code, ended.error?.message).toBe('STEWARD_AGENT_ENDED_JOB');
    expect(ended.error?.message).toContain('time limit of 4 s');
    expect(Date.parse(ended.finishedAt!) - Date.parse(ended.startedAt!)).toBeLessThan((4 + 2 + 1.5) * 1000);
    expect(after.state, JSON.stringify(after.error)).toBe('succeeded');
  }, 90_000);

  it('refuses a second agent with the same id on this host in one line naming agent.id, and the first one’s job succeeds', async () => {
    const c = cluster!;
    const nap = await c.submit('napper');
    await running(c, nap);
    const refused = await c.startAgent('twin', { id: c.agentId('worker') }).then(
      () => undefined,
      (error: Error) => error,
    );
    const lines = (refused?.message ?? '')
      .split('\n')
      .filter((line) => line.includes('STEWARD_AGENT_ID_IN_USE'));
    expect(lines, refused?.message).toHaveLength(1);
    expect(lines[0]).toContain(`another agent with id "${c.agentId('worker')}" runs on this host`);
    expect(lines[0]).toContain('set agent.id');
    const job = await c.settleOne(nap, 30_000);
    expect(job.state, JSON.stringify(job.error)).toBe('succeeded');
  }, 90_000);
});

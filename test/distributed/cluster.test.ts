/**
 * One `steward server` and two `steward agent` processes through RabbitMQ (a fresh vhost on the machine's
 * broker): jobs share the load, a label only one agent has routes there, and a label no live agent has is
 * refused at submit, naming it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorResponse } from '../../src/protocol/index.js';
import { Cluster } from '../support/distributed.js';
import { OsUsers } from '../support/os-users.js';
import { createVhost, deleteVhost } from '../support/rabbitmq.js';
import { isRoot } from '../support/steward.js';

const NOOP = `name: noop
description: one tiny query
steps:
  - id: one
    sql: SELECT 1 AS x
outputs: [one]
`;

let vhost = '';
let cluster: Cluster | undefined;
const osUsers = new OsUsers();

beforeAll(async () => {
  vhost = await createVhost('cluster');
  cluster = await Cluster.start({ vhost, server: { loadTimeout: '15s' } });
  // As root, jobs of "admin" run as a real unprivileged OS account.
  const userMap = isRoot ? { admin: (await osUsers.user('cl')).name } : {};
  await Promise.all([
    cluster.startAgent('agent-a', { labels: ['shared'], slots: 2, userMap }),
    cluster.startAgent('agent-b', { labels: ['shared', 'special'], slots: 2, userMap }),
  ]);
  const pushed = await cluster.request('POST', '/api/workflows', { source: NOOP });
  expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
}, 120_000);

afterAll(async () => {
  await cluster?.destroy();
  await osUsers.cleanup();
  if (vhost) await deleteVhost(vhost);
}, 60_000);

describe('server and agents through RabbitMQ', () => {
  it('shares jobs between the agents', async () => {
    const ids = await Promise.all(Array.from({ length: 16 }, () => cluster!.submit('noop')));
    const jobs = await cluster!.settle(ids);
    expect(
      jobs.map((job) => job.state),
      JSON.stringify(jobs.filter((job) => job.state !== 'succeeded').map((job) => job.error)),
    ).toEqual(ids.map(() => 'succeeded'));
    const agents = new Set(jobs.map((job) => job.agentId as string));
    expect([...agents].sort()).toEqual([cluster!.agentId('agent-a'), cluster!.agentId('agent-b')]);
  });

  it('runs a job that needs a label only on the agent that has it', async () => {
    const ids = await Promise.all(Array.from({ length: 6 }, () => cluster!.submit('noop', ['special'])));
    const jobs = await cluster!.settle(ids);
    for (const job of jobs) {
      expect(job.state).toBe('succeeded');
      expect(job.agentId).toBe(cluster!.agentId('agent-b'));
    }
  });

  it('refuses at submit a job that needs a label no live agent has, naming the label', async () => {
    const refused = await cluster!.request('POST', '/api/jobs', { workflow: 'noop', labels: ['gpu'] });
    expect(refused.status).toBe(409);
    const { error } = ErrorResponse.parse(refused.json);
    expect(error.code).toBe('STEWARD_LABEL_UNAVAILABLE');
    expect(error.message).toMatch(/label gpu/);
  });
});

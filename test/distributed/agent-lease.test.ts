/**
 * An agent that stops (killed here) through a real `steward server` and `steward agent` on RabbitMQ: past
 * the agent lease its job ends `lost` with no step left `running` (nor a duration that keeps growing), and
 * `GET /api/agents` shows the agent `offline` without the executors of its last heartbeat.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { AgentInfo } from '../../src/protocol/index.js';
import { Cluster, tearDownCluster } from '../support/distributed.js';
import { OsUsers } from '../support/os-users.js';
import { createVhost } from '../support/rabbitmq.js';
import { isRoot } from '../support/steward.js';
import { until } from '../support/wait.js';

const SLOW = `name: slow
steps:
  - id: first
    sql: SELECT 1 AS x
  - id: wait
    needs: [first]
    shell: sleep 300
  - id: after
    needs: [wait]
    sql: SELECT 2 AS y
`;

let vhost = '';
let cluster: Cluster | undefined;
const osUsers = new OsUsers();

beforeAll(async () => {
  vhost = await createVhost('agent-lease');
  cluster = await Cluster.start({ vhost, server: { agentLease: '3s' } });
  const userMap = isRoot ? { admin: (await osUsers.user('al')).name } : {};
  await cluster.startAgent('agent', { slots: 1, userMap });
  await cluster.pushWorkflow(SLOW);
}, 120_000);

afterAll(() => tearDownCluster(cluster, osUsers, vhost), 60_000);

async function agents(): Promise<z.infer<typeof AgentInfo>[]> {
  const response = await cluster!.request('GET', '/api/agents');
  return z.object({ agents: z.array(AgentInfo) }).parse(response.json).agents;
}

describe('an agent that stops', () => {
  it('ends its job lost with every step closed, and shows offline without executors', async () => {
    const id = await cluster!.submit('slow');
    await cluster!.waitForJob(id, 'the shell step to run', (job) =>
      job.steps.some((step) => step.id === 'wait' && step.state === 'running'),
    );
    // The agent list is as of the agent's last heartbeat: wait for one that reports the executor.
    const live = await until('a heartbeat listing the executor', async () => {
      const agent = (await agents()).find((item) => item.id === cluster!.agentId('agent'));
      return agent && agent.executors.length > 0 ? agent : undefined;
    });
    expect(live).toMatchObject({ state: 'active' });

    await cluster!.agents.get('agent')!.stop('SIGKILL');
    const job = await cluster!.settleOne(id, 60_000);
    expect(job.state).toBe('lost');
    const steps = Object.fromEntries(job.steps.map((step) => [step.id, step]));
    expect(steps.first?.state).toBe('succeeded');
    expect(steps.wait).toMatchObject({
      state: 'failed',
      message: 'the job ended lost while this step was running',
    });
    expect(steps.wait?.finishedAt).toBe(job.finishedAt);
    expect(steps.wait?.durationMs).toBeGreaterThan(0);
    expect(steps.after?.state).toBe('skipped');
    // Nothing counts up any more: the step's duration is fixed.
    const later = await until('a second read of the job', async () => cluster!.job(id));
    expect(later.steps.find((step) => step.id === 'wait')?.durationMs).toBe(steps.wait?.durationMs);

    const offline = await until('the agent to show offline', async () =>
      (await agents()).find((agent) => agent.id === cluster!.agentId('agent') && agent.state === 'offline'),
    );
    expect(offline.executors).toEqual([]);
    expect(offline.capacity.free).toBe(0);
  }, 120_000);
});

/**
 * Taking an agent out of service with the CLI: `steward agents drain` stops a real agent (through
 * RabbitMQ) taking new jobs while the job it runs finishes, `--wait` returns once it has none left, and
 * `steward agents resume` lets the job that waited meanwhile run there.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentEvents, matching, readLogRecords } from '../support/logs.js';
import { Cluster, type Daemon } from '../support/distributed.js';
import { OsUsers } from '../support/os-users.js';
import { createVhost, deleteVhost } from '../support/rabbitmq.js';
import { CliUser, isRoot } from '../support/steward.js';
import { until } from '../support/wait.js';

const ADMIN_PASSWORD = 'admin-password-for-drain-tests';

let vhost = '';
let cluster: Cluster | undefined;
let cli: CliUser | undefined;
const osUsers = new OsUsers();

beforeAll(async () => {
  vhost = await createVhost('drain');
  cluster = await Cluster.start({ vhost, server: { loadTimeout: '2m' }, adminPassword: ADMIN_PASSWORD });
  for (const source of [
    'name: napper\nsteps:\n  - id: nap\n    shell: sleep 3\n',
    'name: noop\nsteps:\n  - id: one\n    sql: SELECT 1 AS x\n',
  ]) {
    const pushed = await cluster.request('POST', '/api/workflows', { source });
    expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
  }
  cli = await CliUser.create('admin', cluster.url);
  await cli.login(ADMIN_PASSWORD);
}, 120_000);

afterAll(async () => {
  await cluster?.destroy();
  await cli?.cleanup();
  await osUsers.cleanup();
  if (vhost) await deleteVhost(vhost);
}, 60_000);

describe.runIf(isRoot)('draining an agent', () => {
  it('stops new jobs, lets the running one finish, waits for it, and resumes', async () => {
    const c = cluster!;
    const userMap = { admin: (await osUsers.user('dr')).name };
    await c.startAgent('worker', { slots: 2, userMap });
    const id = c.agentId('worker');
    const nap = await c.submit('napper');
    await c.waitForJob(nap, 'the nap to start', (job) => job.state === 'running');

    const drained = await cli!.run(['agents', 'drain', id]);
    expect(drained.code, drained.stderr).toBe(0);
    expect(drained.stdout).toContain(`drain sent to agent ${id}`);
    // The registry shows the drain once the agent applied it (it reports at once).
    let listed = '';
    await until(
      () => `the agent shown draining:\n${listed}`,
      async () => {
        listed = (await cli!.run(['agents'])).stdout;
        return listed
          .split('\n')
          .find((line) => line.startsWith(id))
          ?.includes('draining');
      },
      10_000,
      100,
    );
    // A job submitted now waits: the agent has a free slot but takes nothing.
    const waiting = await c.submit('noop');
    const waited = await cli!.run(['agents', 'drain', id, '--wait', '--timeout', '60']);
    expect(waited.code, waited.stderr).toBe(0);
    expect(waited.stdout).toContain(`agent ${id} is drained`);
    // The job it had ran to its end; the new one was never taken.
    expect((await c.job(nap)).state).toBe('succeeded');
    expect((await c.job(waiting)).state).toBe('offered');

    const resumed = await cli!.run(['agents', 'resume', id]);
    expect(resumed.code, resumed.stderr).toBe(0);
    const job = await c.settleOne(waiting, 30_000);
    expect(job.state).toBe('succeeded');
    expect(job.agentId).toBe(id);
    expect(job.attempt).toBe(1);

    const unknown = await cli!.run(['agents', 'drain', 'no-such-agent']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('STEWARD_NOT_FOUND');
    await c.agents.get('worker')!.stop();
    c.agents.delete('worker');
  }, 120_000);

  it('with agent.stopGrace, lets running jobs end before stopping on SIGTERM; a second signal stops at once', async () => {
    const c = cluster!;
    const userMap = { admin: (await osUsers.user('dg')).name };
    const runningJob = async (): Promise<string> => {
      const jobId = await c.submit('napper');
      await c.waitForJob(
        jobId,
        'the nap to start',
        (job) => job.state === 'running' && job.steps[0]?.state === 'running',
      );
      return jobId;
    };
    const exited = (agent: Daemon) =>
      new Promise<void>((resolve) =>
        agent.child.exitCode !== null ? resolve() : agent.child.once('exit', () => resolve()),
      );

    const patient = await c.startAgent('patient', { slots: 2, userMap, stopGrace: '30s' });
    const nap = await runningJob();
    const started = Date.now();
    patient.child.kill('SIGTERM');
    await exited(patient);
    c.agents.delete('patient');
    // It waited for the 3 s nap, not for the whole grace.
    expect((await c.job(nap)).state).toBe('succeeded');
    expect(Date.now() - started).toBeLessThan(20_000);
    const log = await readLogRecords(c.agentDir('patient'));
    expect(matching(log, agentEvents.stopping)).toHaveLength(1);
    expect(matching(log, agentEvents.stoppedWithJobsRunning)).toEqual([]);

    const hurried = await c.startAgent('hurried', { slots: 2, userMap, stopGrace: '5m' });
    await runningJob();
    const hurriedAt = Date.now();
    hurried.child.kill('SIGTERM');
    // The second signal once the first is being acted on (it logged that it is stopping).
    await until(
      'the agent to start stopping',
      async () => matching(await readLogRecords(c.agentDir('hurried')), agentEvents.stopping).length > 0,
    );
    hurried.child.kill('SIGTERM');
    await exited(hurried);
    c.agents.delete('hurried');
    expect(Date.now() - hurriedAt).toBeLessThan(15_000);
    const hurriedLog = await readLogRecords(c.agentDir('hurried'));
    expect(matching(hurriedLog, agentEvents.stoppedWithJobsRunning)).toMatchObject([{ interrupted: true }]);
  }, 120_000);
});

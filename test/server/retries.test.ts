/**
 * Retries in a real `steward up` (server, embedded bus and agent in one process), with jobs running as a real
 * OS user: an executor killed with SIGKILL mid-run makes the job run again as a new attempt when its budget
 * allows, and end `failed` when it does not; a job that kills its own executor every time stops after its
 * budget, with every attempt listed.
 */
import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobDetail } from '../../src/protocol/index.js';
import { ApiUser } from '../support/api.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { CliUser, StewardInstance, isRoot, tempDir } from '../support/steward.js';
import { until } from '../support/wait.js';

const workflows = [
  {
    name: 'slow',
    steps: [{ id: 'wait', shell: 'sleep 3\necho done > "$STEWARD_OUTPUT_DIR/done.txt"' }],
    outputs: ['wait'],
  },
  // `$PPID` of a shell step is its executor: this job kills the executor of every attempt.
  { name: 'suicide', steps: [{ id: 'kill', shell: 'kill -9 $PPID\nsleep 30' }] },
  { name: 'quick', steps: [{ id: 'q', shell: 'true' }] },
];

describe.runIf(isRoot)('job retries in steward up', () => {
  const osUsers = new OsUsers();
  let scratch: string;
  let steward: StewardInstance;
  let user: TestUser;
  let api: ApiUser;
  let cli: CliUser;

  beforeAll(async () => {
    scratch = await tempDir('retries');
    user = await osUsers.user('rt');
    const config = path.join(scratch, 'steward.yaml');
    // A unique agent id: agents name their cgroups after it, and two agents of one id kill each other's.
    const agentId = `retries-${randomBytes(3).toString('hex')}`;
    await writeFile(config, stringify({ agent: { id: agentId, heartbeatInterval: '300ms' } }));
    steward = await StewardInstance.start({ extraArgs: ['--config', config] });
    const admin = await ApiUser.login(steward.url, 'admin', steward.adminPassword);
    await admin.createUser(user.name, 'retries-password-1');
    api = await ApiUser.login(steward.url, user.name, 'retries-password-1');
    cli = await CliUser.create(user.name, steward.url);
    await cli.login('retries-password-1');
    // The user runs workflows of their own personal space.
    for (const workflow of workflows) {
      const file = path.join(scratch, `${workflow.name}.yaml`);
      await writeFile(file, stringify(workflow));
      const pushed = await cli.run(['workflow', 'push', file]);
      expect(pushed.code, pushed.stderr).toBe(0);
    }
  }, 90_000);

  afterAll(async () => {
    await steward?.destroy();
    await cli?.cleanup();
    await osUsers.cleanup();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 60_000);

  async function submit(workflow: string, retries?: number): Promise<string> {
    const { status, body } = await api.request('POST', '/api/jobs', {
      workflow,
      ...(retries !== undefined ? { retries } : {}),
    });
    expect(status, JSON.stringify(body)).toBe(201);
    return (body as { id: string }).id;
  }

  /** Waits for the job's step to run, then kills its executor with SIGKILL; returns the killed pid. */
  async function killExecutorMidStep(id: string): Promise<number> {
    const running = await until(
      'the step to run',
      async () => {
        const job = await api.job(id);
        return job.state === 'running' && job.executor && job.steps[0]?.state === 'running' ? job : undefined;
      },
      30_000,
    );
    const pid = running.executor!.pid;
    expect(running.executor!.uid).toBe(user.uid);
    process.kill(pid, 'SIGKILL');
    return pid;
  }

  it('runs a job whose executor was killed mid-run again as attempt 2, which succeeds', async () => {
    const id = await submit('slow', 1);
    const killed = await killExecutorMidStep(id);
    const job: JobDetail = await api.waitFor(id, 60_000);
    expect(job.state, JSON.stringify(job.error)).toBe('succeeded');
    expect(job.attempt).toBe(2);
    expect(job.executor?.pid).not.toBe(killed);
    expect(job.steps.map((step) => step.state)).toEqual(['succeeded']);
    expect(job.attempts).toHaveLength(2);
    expect(job.attempts[0]).toMatchObject({ attempt: 1, state: 'failed' });
    expect(job.attempts[0]!.error?.code).toBe('STEWARD_EXECUTOR_CRASHED');
    expect(job.attempts[0]!.finishedAt).not.toBeNull();
    expect(job.attempts[1]).toMatchObject({ attempt: 2, state: 'succeeded', error: null });
    expect(job.attempts[1]!.agentId).toBe(job.agentId);
    const results = await api.request('GET', `/api/jobs/${id}/results/done.txt`);
    expect(String(results.body).trim()).toBe('done');

    // `steward job` lists both attempts with their agent, state and error.
    const shown = await cli.run(['job', id]);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toMatch(/ATTEMPT\s+AGENT\s+STATE/);
    expect(shown.stdout).toMatch(/^1\s+retries-\S+\s+failed\s.*STEWARD_EXECUTOR_CRASHED/m);
    expect(shown.stdout).toMatch(/^2\s+retries-\S+\s+succeeded\s/m);
  }, 90_000);

  it('fails a job that had started a step when its executor is killed, with no new attempt by default', async () => {
    const id = await submit('slow');
    await killExecutorMidStep(id);
    const job = await api.waitFor(id, 60_000);
    expect(job.state).toBe('failed');
    expect(job.error?.code).toBe('STEWARD_EXECUTOR_CRASHED');
    expect(job.error?.message).toContain(
      'not retried (attempt 1; a step had started and server.retries.ran is 0)',
    );
    expect(job.attempt).toBe(1);
    expect(job.attempts.map((attempt) => attempt.state)).toEqual(['failed']);
  }, 90_000);

  it('stops retrying a job that kills its executor every time once its budget is spent', async () => {
    const id = await submit('suicide', 2);
    const job = await api.waitFor(id, 90_000);
    expect(job.state).toBe('failed');
    expect(job.error?.code).toBe('STEWARD_EXECUTOR_CRASHED');
    expect(job.error?.message).toContain("not retried (attempt 3; the job's retries is 2)");
    expect(job.attempts.map((attempt) => [attempt.attempt, attempt.state, attempt.error?.code])).toEqual([
      [1, 'failed', 'STEWARD_EXECUTOR_CRASHED'],
      [2, 'failed', 'STEWARD_EXECUTOR_CRASHED'],
      [3, 'failed', 'STEWARD_EXECUTOR_CRASHED'],
    ]);
    // No loop: a job submitted now is offered and runs after anything the spent job could still cause.
    const later = await api.waitFor(await submit('quick'), 30_000);
    expect(later.state, JSON.stringify(later.error)).toBe('succeeded');
    expect((await api.job(id)).attempts).toHaveLength(3);
  }, 120_000);

  it('refuses a retries value outside 0..10 with the field named', async () => {
    for (const retries of [-1, 11, 1.5, 'two']) {
      const { status, body } = await api.request('POST', '/api/jobs', { workflow: 'slow', retries });
      expect(status).toBe(400);
      expect(JSON.stringify(body)).toContain('retries');
    }
    const cliRun = await cli.run(['run', 'slow', '--retries', '11']);
    expect(cliRun.code).not.toBe(0);
    expect(cliRun.stderr).toContain('--retries: expected a whole number from 0 to 10, got "11"');
  });
});

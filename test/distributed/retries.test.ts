/**
 * Retries and poison jobs with a real server, real agents and RabbitMQ. A job whose agent is killed with
 * SIGKILL runs again on the other agent as attempt 2. A job whose executor dies every time it loads (here a
 * watcher kills every process of its OS user the moment one appears) goes round the agents until the bus's
 * delivery limit, then ends `failed` with STEWARD_POISON_JOB: exactly that many deliveries, no retry, no loop;
 * on quorum queues (the broker counts) and on classic queues (the bus counts).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Job, type JobDetail } from '../../src/protocol/index.js';
import { agentEvents, matching, readLogRecords } from '../support/logs.js';
import { Cluster } from '../support/distributed.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { brokerUrl, createVhost, deleteVhost } from '../support/rabbitmq.js';
import { isRoot } from '../support/steward.js';

const DELIVERY_LIMIT = 6;
/** The asset makes loading take a moment, so the watcher kills the executor before it reports loaded. */
const POISON_WORKFLOW =
  'name: poison\nassets: [big.bin]\nsteps:\n  - id: one\n    shell: cat big.bin > /dev/null\n';
/** Agent ids unique per run: agents name cgroups after their id, and two of one id kill each other's executors. */
const tag = randomBytes(3).toString('hex');

let vhost = '';
let cluster: Cluster | undefined;
const osUsers = new OsUsers();
let runner: TestUser;
let poisoned: TestUser;

function pgrep(uid: number): Promise<number[]> {
  return new Promise((resolve) => {
    execFile('pgrep', ['-u', String(uid)], (_error, stdout) =>
      resolve(
        String(stdout)
          .split('\n')
          .filter(Boolean)
          .map((line) => Number(line)),
      ),
    );
  });
}

/** Kills every process of `uid` as soon as it is seen, until stopped; remembers each pid it killed. */
function startKiller(uid: number): { killed: Set<number>; stop: () => Promise<void> } {
  const killed = new Set<number>();
  let running = true;
  const loop = (async () => {
    while (running) {
      for (const pid of await pgrep(uid)) {
        try {
          process.kill(pid, 'SIGKILL');
          killed.add(pid);
        } catch {
          // already gone
        }
      }
    }
  })();
  return {
    killed,
    stop: async () => {
      running = false;
      await loop;
    },
  };
}

beforeAll(async () => {
  vhost = await createVhost('retries');
  const bus = { kind: 'amqp', urls: [brokerUrl], vhost, deliveryLimit: DELIVERY_LIMIT };
  cluster = await Cluster.start({ vhost, server: { bus, loadTimeout: '2m', agentLease: '3s' } });
  runner = await osUsers.user('rr');
  poisoned = await osUsers.user('rp');
  for (const source of [
    'name: napper\nsteps:\n  - id: nap\n    shell: sleep 4\n',
    'name: dozer\nsteps:\n  - id: doze\n    shell: sleep 12\n',
    POISON_WORKFLOW,
  ]) {
    await pushWorkflow(cluster, source);
  }
}, 120_000);

afterAll(async () => {
  await cluster?.destroy();
  await osUsers.cleanup();
  if (vhost) await deleteVhost(vhost);
}, 60_000);

async function pushWorkflow(c: Cluster, source: string): Promise<void> {
  const assets =
    source === POISON_WORKFLOW ? { 'big.bin': randomBytes(24 * 1024 * 1024).toString('base64') } : undefined;
  const pushed = await c.request('POST', '/api/workflows', { source, ...(assets ? { assets } : {}) });
  expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
}

function agentBus(): Record<string, unknown> {
  return { ...cluster!.bus, deliveryLimit: DELIVERY_LIMIT };
}

describe.runIf(isRoot)('retries over RabbitMQ', () => {
  // A test that failed half-way leaves its agents running; they must not take the next test's jobs.
  afterEach(async () => {
    for (const agent of cluster?.agents.values() ?? []) await agent.stop();
    cluster?.agents.clear();
  }, 60_000);

  it('runs a job whose agent was killed with SIGKILL again on the other agent as attempt 2', async () => {
    const c = cluster!;
    const first = `first-${tag}`;
    const second = `second-${tag}`;
    const userMap = { admin: runner.name };
    const victim = await c.startAgent(first, { slots: 1, userMap, bus: agentBus() });
    const submitted = await c.request('POST', '/api/jobs', { workflow: 'napper', retries: 1 });
    expect(submitted.status, JSON.stringify(submitted.json)).toBe(201);
    const id = Job.parse(submitted.json).id;
    await c.waitForJob(
      id,
      'the step to run',
      (job) => job.state === 'running' && job.steps[0]?.state === 'running',
    );
    // Killed first, then the other agent starts: starting it takes a moment, and on a busy machine the
    // 4 s nap could end before a kill that waited for it.
    await victim.stop('SIGKILL');
    await c.startAgent(second, { slots: 1, userMap, bus: agentBus() });
    const job = await c.settleOne(id, 60_000);
    expect(job.state, JSON.stringify(job.error)).toBe('succeeded');
    expect(job.attempt).toBe(2);
    expect(job.agentId).toBe(c.agentId(second));
    expect(job.attempts).toHaveLength(2);
    expect(job.attempts[0]).toMatchObject({ attempt: 1, state: 'lost', agentId: c.agentId(first) });
    expect(job.attempts[0]?.error?.code).toBe('STEWARD_AGENT_LOST');
    expect(job.attempts[1]).toMatchObject({
      attempt: 2,
      state: 'succeeded',
      agentId: c.agentId(second),
      error: null,
    });
    for (const agent of c.agents.values()) await agent.stop();
    c.agents.clear();
  }, 90_000);

  it('holds a newer attempt on an agent that still runs the older one, stops the older one, then runs it', async () => {
    const c = cluster!;
    const id0 = `holder-${tag}`;
    // Two slots, so the agent is offered the new attempt while it still holds the old one.
    const holder = await c.startAgent(id0, { slots: 2, userMap: { admin: runner.name }, bus: agentBus() });
    const submitted = await c.request('POST', '/api/jobs', { workflow: 'dozer', retries: 1 });
    expect(submitted.status, JSON.stringify(submitted.json)).toBe(201);
    const id = Job.parse(submitted.json).id;
    const waitFor = (what: string, check: (job: JobDetail) => boolean, timeoutMs = 30_000) =>
      c.waitForJob(id, what, check, timeoutMs);
    await waitFor(
      'the step never ran',
      (job) => job.state === 'running' && job.steps[0]?.state === 'running',
    );
    // Frozen, not killed: silent past the lease, so the server gives attempt 1 up and offers attempt 2.
    holder.child.kill('SIGSTOP');
    try {
      await waitFor('no attempt 2', (job) => job.attempt === 2, 20_000);
    } finally {
      holder.child.kill('SIGCONT');
    }
    const job = await c.settleOne(id, 60_000);
    expect(job.state, JSON.stringify(job.error)).toBe('succeeded');
    expect(job.attempt).toBe(2);
    expect(job.attempts.map((attempt) => [attempt.attempt, attempt.state, attempt.agentId])).toEqual([
      [1, 'lost', c.agentId(id0)],
      [2, 'succeeded', c.agentId(id0)],
    ]);
    const log = await readLogRecords(c.agentDir(id0));
    expect(matching(log, agentEvents.olderAttemptStopped)).toMatchObject([
      { jobId: id, heldAttempt: 1, newAttempt: 2 },
    ]);
    // Attempt 2 began while attempt 1's 12 s nap would still have been running: the old one was stopped,
    // not waited for (and never ran beside it: the agent held attempt 2 back until then).
    expect(Date.parse(job.attempts[1]!.startedAt!) - Date.parse(job.attempts[0]!.startedAt!)).toBeLessThan(
      11_000,
    );
    await holder.stop();
    c.agents.clear();
  }, 120_000);

  it(`fails a job that kills every executor loading it as poison after exactly ${DELIVERY_LIMIT} deliveries`, async () => {
    await expectPoisonJobFailsAtTheLimit(cluster!, agentBus(), 'quorum queues');
  }, 200_000);
});

/** Classic queues count no deliveries; the bus counts them itself, so the limit holds there as well. */
describe.runIf(isRoot)('poison jobs over RabbitMQ classic queues', () => {
  let classicVhost = '';
  let classic: Cluster | undefined;

  beforeAll(async () => {
    classicVhost = await createVhost('retries-classic');
    classic = await Cluster.start({
      vhost: classicVhost,
      bus: { queueType: 'classic', deliveryLimit: DELIVERY_LIMIT },
      server: { loadTimeout: '2m', agentLease: '3s' },
    });
    await pushWorkflow(classic, POISON_WORKFLOW);
  }, 120_000);

  afterAll(async () => {
    await classic?.destroy();
    if (classicVhost) await deleteVhost(classicVhost);
  }, 60_000);

  it(`fails a job that kills every executor loading it as poison after exactly ${DELIVERY_LIMIT} deliveries`, async () => {
    await expectPoisonJobFailsAtTheLimit(classic!, classic!.bus, 'classic queues');
  }, 200_000);
});

/**
 * A job whose executor dies every time it loads goes round two agents until the bus's delivery limit, then
 * ends `failed` with STEWARD_POISON_JOB: exactly that many deliveries, no retry, no loop.
 */
async function expectPoisonJobFailsAtTheLimit(
  c: Cluster,
  bus: Record<string, unknown>,
  label: string,
): Promise<void> {
  const userMap = { admin: poisoned.name };
  await c.startAgent(`poison-a-${tag}`, { slots: 2, userMap, bus });
  await c.startAgent(`poison-b-${tag}`, { slots: 2, userMap, bus });
  const killer = startKiller(poisoned.uid);
  try {
    // A generous retry budget: a poison job must not use it.
    const submitted = await c.request('POST', '/api/jobs', { workflow: 'poison', retries: 5 });
    expect(submitted.status, JSON.stringify(submitted.json)).toBe(201);
    const id = Job.parse(submitted.json).id;
    const job = await c.settleOne(id, 90_000);
    expect(job.state).toBe('failed');
    expect(job.error?.code, job.error?.message).toBe('STEWARD_POISON_JOB');
    expect(job.error?.message).toContain(`offer dead-lettered after ${DELIVERY_LIMIT} deliveries`);
    expect(job.error?.message).toContain('not retried');
    expect(job.attempt).toBe(1);
    expect(job.attempts).toHaveLength(1);
    expect(job.attempts[0]).toMatchObject({ state: 'failed', error: { code: 'STEWARD_POISON_JOB' } });
    // One executor killed per delivery; and no delivery after the dead-lettering.
    expect(killer.killed.size).toBe(DELIVERY_LIMIT);
    // No delivery after the dead-lettering: a second poison job, offered after anything the first could still
    // cause, goes its whole way to the limit, and the executors killed are exactly both jobs' deliveries.
    const later = await c.request('POST', '/api/jobs', { workflow: 'poison', retries: 5 });
    expect(later.status, JSON.stringify(later.json)).toBe(201);
    const laterJob = await c.settleOne(Job.parse(later.json).id, 90_000);
    expect(laterJob.error?.code).toBe('STEWARD_POISON_JOB');
    expect(killer.killed.size).toBe(2 * DELIVERY_LIMIT);
    expect((await c.job(id)).attempts).toHaveLength(1);
    console.log(
      `poison job (${label}): ${killer.killed.size} executors killed, ${DELIVERY_LIMIT} deliveries, failed once`,
    );
  } finally {
    await killer.stop();
    for (const agent of c.agents.values()) await agent.stop();
    c.agents.clear();
  }
}

/**
 * The agent's offer handling, in-process over the embedded bus: a real `Agent` with a test pool (executors
 * that are scripted, not spawned) and a test host (no root, no OS users, no cgroups). What is under test is
 * the agent — verification, placement, parking, acks, drain, cancel, enforcement, hand-backs — through the
 * same bus semantics the single-machine mode runs on.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import type { AgentHost, AgentPool, PoolEvents, PooledExecutor } from '../../src/agent/collaborators.js';
import type { OsAccount } from '../../src/agent/accounts.js';
import { EmbeddedBus, type DeadLetter } from '../../src/bus/index.js';
import { compileAgentConfig } from '../../src/config/index.js';
import {
  AgentMessage,
  Heartbeat,
  PROTOCOL_VERSION,
  createOfferSigner,
  createOfferVerifier,
  generateSigningKeyPem,
  type AgentToExecutor,
  type JobEvent,
  type JobOffer,
  type JobState,
} from '../../src/protocol/index.js';
import { agentEvents, isEvent, matching, parseLogRecords, type LogRecord } from '../support/logs.js';
import { until } from '../support/wait.js';

/** An executor that records what the agent sends it; the test scripts its answers. */
class TestExecutor implements PooledExecutor {
  readonly received: AgentToExecutor[] = [];
  readonly identity = undefined;
  readonly cgroup = undefined;
  readonly process = {
    send: (message: AgentToExecutor): boolean => {
      this.received.push(message);
      this.onMessage(message);
      return true;
    },
  };
  constructor(
    readonly account: OsAccount,
    readonly pid: number,
    private readonly onMessage: (message: AgentToExecutor) => void,
  ) {}
}

type Script = 'load' | 'hold';

/** One executor per user, started on first use; `script` says whether a job loads on its own. */
class TestPool implements AgentPool {
  readonly byUser = new Map<string, TestExecutor>();
  readonly killed: string[] = [];
  script: Script = 'load';
  /** Whether an executor answers a cancel by ending the job. */
  honoursCancel = true;
  private nextPid = 1000;

  constructor(private readonly events: PoolEvents) {}

  setCgroups(): void {}
  async prime(): Promise<void> {}
  async close(): Promise<void> {}
  async acquire(account: OsAccount): Promise<PooledExecutor> {
    let executor = this.byUser.get(account.name);
    if (!executor) {
      const created: TestExecutor = new TestExecutor(account, this.nextPid++, (message) =>
        this.answer(created, message),
      );
      executor = created;
      this.byUser.set(account.name, executor);
    }
    return executor;
  }
  jobStarted(): void {}
  jobEnded(): void {}
  replenish(): void {}

  hasExecutorFor(osName: string): boolean {
    return this.byUser.has(osName);
  }
  responsive(): boolean {
    return true;
  }
  killHung(executor: PooledExecutor, cause: string): void {
    this.killed.push(`${executor.account.name}: ${cause}`);
  }
  executors(): [] {
    return [];
  }

  /** The executor that got the job (by id), once it has. */
  executorOf(jobId: string): TestExecutor | undefined {
    for (const executor of this.byUser.values())
      if (executor.received.some((m) => m.type === 'job' && m.jobId === jobId)) return executor;
    return undefined;
  }

  finish(jobId: string, state: JobState): void {
    const executor = this.executorOf(jobId);
    if (!executor) throw new Error(`no executor has job ${jobId}`);
    this.events.onMessage(executor, { type: 'finished', jobId, state });
  }

  load(jobId: string): void {
    const executor = this.executorOf(jobId);
    if (!executor) throw new Error(`no executor has job ${jobId}`);
    this.events.onMessage(executor, { type: 'loaded', jobId });
  }

  /** The executor dies (with its jobs), as the real pool reports it. */
  crash(jobId: string): void {
    const executor = this.executorOf(jobId);
    if (!executor) throw new Error(`no executor has job ${jobId}`);
    this.byUser.delete(executor.account.name);
    this.events.onExit(executor, { kind: 'signaled', code: null, signal: 'SIGKILL', cause: 'crashed' }, [
      jobId,
    ]);
  }

  private answer(executor: TestExecutor, message: AgentToExecutor): void {
    if (message.type === 'job' && this.script === 'load')
      setImmediate(() => this.events.onMessage(executor, { type: 'loaded', jobId: message.jobId }));
    if (message.type === 'cancel' && this.honoursCancel)
      setImmediate(() =>
        this.events.onMessage(executor, { type: 'finished', jobId: message.jobId, state: 'canceled' }),
      );
  }
}

function testHost(dir: string, released: string[]): AgentHost {
  const dirsOf = (account: { name: string }) => ({
    root: dir,
    workspaceDir: path.join(dir, account.name),
    tempDir: path.join(dir, account.name, 'tmp'),
  });
  return {
    isolation: 'single-user',
    lock: async () => ({ release: async () => undefined }),
    prepareWorkspaceRoot: async () => undefined,
    detectCgroups: async () => ({ version: 'none', detail: 'test host' }),
    removeCgroupParents: async () => undefined,
    resolveAccount: async (user) => ({
      name: user,
      uid: 5000,
      gid: 5000,
      home: path.join(dir, user),
      shell: '/bin/sh',
    }),
    osNameOf: (user) => user,
    ensureHome: async () => undefined,
    userDirs: dirsOf,
    prepareUserDirs: async (account) => dirsOf(account),
    releaseClaim: async (offer) => void released.push(`${offer.jobId}:${offer.attempt}`),
    houseKeep: async () => ({ prunedLogs: 0, removed: 0, failed: [] }),
    userLog: () => undefined,
    closeLogs: () => undefined,
  };
}

interface Harness {
  agent: Agent;
  bus: EmbeddedBus;
  pool: TestPool;
  events: JobEvent[];
  heartbeats: Heartbeat[];
  deadLetters: DeadLetter[];
  released: string[];
  /** The agent's log records (debug and up). */
  logs: LogRecord[];
  publish(jobId: string, options?: { user?: string; labels?: string[]; timeoutMs?: number }): JobOffer;
  republish(offer: JobOffer): void;
  states(jobId: string): string[];
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function startAgent(config: Record<string, unknown>, deliveryLimit = 20): Promise<Harness> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'agent-in-process-'));
  const bus = new EmbeddedBus({ deliveryLimit });
  const keys = generateSigningKeyPem();
  const signer = createOfferSigner(keys.privateKeyPem);
  const events: JobEvent[] = [];
  const heartbeats: Heartbeat[] = [];
  const deadLetters: DeadLetter[] = [];
  const released: string[] = [];
  const logs: LogRecord[] = [];
  await bus.consumeEvents(async (delivery) => {
    const message = AgentMessage.parse(delivery.body);
    if (message.type === 'events') events.push(...message.events);
    else events.push(message);
    await delivery.ack();
  });
  await bus.consumeHeartbeats(async (delivery) => {
    heartbeats.push(Heartbeat.parse(delivery.body));
    await delivery.ack();
  });
  await bus.consumeDeadLetters((letter) => void deadLetters.push(letter));
  let pool: TestPool | undefined;
  const agent = new Agent({
    config: compileAgentConfig({ id: 'agent-in-process', ...config }, { dataDir: dir }),
    bus,
    logger: pino({ level: 'debug' }, { write: (line: string) => void logs.push(...parseLogRecords(line)) }),
    verifier: createOfferVerifier([keys.publicKeyPem]),
    host: testHost(dir, released),
    pool: (poolEvents) => (pool = new TestPool(poolEvents)),
  });
  await agent.start();
  cleanups.push(async () => {
    await agent.stop();
    await bus.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const publish = (offer: JobOffer) => void bus.publishOffer(signer.sign(offer));
  return {
    agent,
    bus,
    pool: pool!,
    events,
    heartbeats,
    deadLetters,
    released,
    logs,
    publish(jobId, options = {}) {
      const offer: JobOffer = {
        v: PROTOCOL_VERSION,
        jobId,
        attempt: 1,
        user: options.user ?? 'alice',
        workflow: { name: 'wf', version: 1, digest: 'sha256:0' },
        params: {},
        labels: options.labels ?? [],
        jobToken: 'token-'.padEnd(32, 'x'),
        serverUrl: 'http://127.0.0.1:9',
        limits: options.timeoutMs ? { timeoutMs: options.timeoutMs } : {},
        deadline: Date.now() + 120_000,
        issuedAt: Date.now(),
      };
      publish(offer);
      return offer;
    },
    republish: publish,
    states: (jobId) =>
      events
        .filter((e) => e.jobId === jobId && e.type === 'state')
        .map((e) => (e.type === 'state' ? e.state : '')),
  };
}

/** Runs a job of alice's, then sends the agent a cancel for it. */
async function runThenCancel(h: Harness, jobId: string): Promise<void> {
  h.publish(jobId);
  await until(`${jobId} running`, () => h.states(jobId).includes('running'));
  await h.bus.publishControl('agent-in-process', { v: PROTOCOL_VERSION, type: 'cancel', jobId, attempt: 1 });
}

/**
 * An agent with 3 slots and a cap of 1 job per user, running alice's `running` and bob's `bobs`, with
 * alice's `parked` parked: bob's came after it, so once bob's runs, alice's second has reached the agent.
 */
async function parkedBehindAlice(running: string, parked: string, bobs: string): Promise<Harness> {
  const h = await startAgent({ slots: 3, capacity: { maxJobsPerUser: 1 } });
  h.publish(running);
  await until(`${running} running`, () => h.states(running).includes('running'));
  h.publish(parked);
  h.publish(bobs, { user: 'bob' });
  await until('bob’s job running', () => h.states(bobs).includes('running'));
  return h;
}

describe('agent (in-process, embedded bus)', () => {
  it('loads an offer on the user’s executor, reports running only once loaded, and reports the executor’s end', async () => {
    const h = await startAgent({ slots: 2 });
    h.pool.script = 'hold';
    h.publish('job-a');
    await until('the executor got the job', () => h.pool.executorOf('job-a') !== undefined);
    const job = h.pool.executorOf('job-a')!.received.find((m) => m.type === 'job');
    expect(job).toMatchObject({ type: 'job', jobId: 'job-a', attempt: 1, agentId: 'agent-in-process' });
    await until('loading reported', () => h.states('job-a').length === 1);
    expect(h.states('job-a')).toEqual(['loading']);
    h.pool.load('job-a');
    await until('running reported', () => h.states('job-a').length === 2);
    h.pool.finish('job-a', 'succeeded');
    await until('the end reported', () => h.states('job-a').length === 3);
    expect(h.states('job-a')).toEqual(['loading', 'running', 'succeeded']);
    // The first delivery's events are numbered from 1, in order.
    expect(h.events.filter((e) => e.jobId === 'job-a').map((e) => e.seq)).toEqual([1, 2, 3]);
  });

  it('dead-letters a forged offer and a replay of a job it ran', async () => {
    const h = await startAgent({ slots: 1 });
    void h.bus.publishOffer({ v: PROTOCOL_VERSION, payload: '{}', signature: 'AAAA', keyId: 'nobody' });
    const offer = h.publish('job-r');
    await until('job-r running', () => h.states('job-r').includes('running'));
    h.pool.finish('job-r', 'succeeded');
    await until('job-r ended', () => h.states('job-r').includes('succeeded'));
    h.republish(offer);
    await until('two dead letters', () => h.deadLetters.length === 2);
    expect(h.deadLetters.map((d) => d.reason.split(':')[0])).toEqual([
      'STEWARD_OFFER_SIGNATURE_INVALID',
      'STEWARD_OFFER_REPLAYED',
    ]);
    expect(h.states('job-r')).toEqual(['loading', 'running', 'succeeded']);
    // The forged offer is logged as rejected; a replay is dead-lettered quietly.
    expect(matching(h.logs, agentEvents.offerRejected)).toMatchObject([
      { code: 'STEWARD_OFFER_SIGNATURE_INVALID', deliveryCount: 1 },
    ]);
  });

  it('parks an offer over the per-user cap and places it, on its first delivery, when the user’s job ends', async () => {
    const h = await parkedBehindAlice('job-1', 'job-2', 'job-3');
    // Another user's job is not held up by alice's cap: it runs while job-2 waits.
    expect(h.states('job-2')).toEqual([]);
    h.pool.finish('job-1', 'succeeded');
    await until('job-2 running', () => h.states('job-2').includes('running'));
    const stateEvents = h.events.filter((e) => e.type === 'state');
    const ended = stateEvents.findIndex(
      (e) => e.jobId === 'job-1' && e.type === 'state' && e.state === 'succeeded',
    );
    const loading = stateEvents.findIndex((e) => e.jobId === 'job-2');
    expect(loading).toBeGreaterThan(ended);
    // Held, not handed back: its events are its first delivery's.
    expect(h.events.find((e) => e.jobId === 'job-2')?.seq).toBe(1);
    expect(matching(h.logs, agentEvents.offerHeld)).toMatchObject([{ jobId: 'job-2', user: 'alice' }]);
  });

  it('hands parked offers back when drained, takes none while drained, and takes jobs again once resumed', async () => {
    const h = await parkedBehindAlice('job-d1', 'job-p', 'job-b');
    await h.bus.publishControl('agent-in-process', { v: PROTOCOL_VERSION, type: 'drain' });
    await until('a draining heartbeat', () => h.heartbeats.some((b) => b.draining === true));
    expect(h.heartbeats.at(-1)).toMatchObject({ draining: true, capacity: { slots: 3, free: 1 } });
    h.publish('job-d2', { user: 'carol' });
    h.pool.finish('job-d1', 'succeeded');
    h.pool.finish('job-b', 'succeeded');
    await until('both jobs ended', () => h.states('job-d1').length === 3 && h.states('job-b').length === 3);
    // A drained agent's prefetch is 0: neither the handed-back offer nor the new one came back to it.
    expect(h.states('job-p')).toEqual([]);
    expect(h.states('job-d2')).toEqual([]);
    await h.bus.publishControl('agent-in-process', { v: PROTOCOL_VERSION, type: 'resume' });
    await until('job-p and job-d2 running', () =>
      ['job-p', 'job-d2'].every((id) => h.states(id).includes('running')),
    );
    // job-p was handed back at the drain (its second delivery numbers from 1,000,001); job-d2 waited
    // in the queue (its first).
    expect(h.events.find((e) => e.jobId === 'job-p')!.seq).toBe(1_000_001);
    expect(h.events.find((e) => e.jobId === 'job-d2')!.seq).toBe(1);
    expect(h.heartbeats.at(-1)?.draining).toBe(false);
    expect(matching(h.logs, isEvent('agent.drained'))).toHaveLength(1);
    expect(matching(h.logs, isEvent('agent.resumed'))).toHaveLength(1);
  });

  it('hands an offer back for other agents when it lacks the labels', async () => {
    const h = await startAgent({ slots: 1, labels: ['cpu'] }, 5);
    h.publish('job-gpu', { labels: ['gpu'] });
    h.publish('job-cpu', { labels: ['cpu'] });
    await until('job-cpu running', () => h.states('job-cpu').includes('running'));
    // job-gpu went round the queue (to nobody else) until its delivery limit dead-lettered it.
    await until('job-gpu dead-lettered', () => h.deadLetters.length === 1);
    expect(h.deadLetters[0]).toMatchObject({ queue: 'offers', deliveryCount: 5 });
    expect(h.states('job-gpu')).toEqual([]);
  });

  it('passes a cancel to the executor, and ends the job itself when the executor does not honour it', async () => {
    const h = await startAgent({ slots: 2, deadlineGrace: 200 });
    await runThenCancel(h, 'job-c1');
    await until('job-c1 canceled', () => h.states('job-c1').includes('canceled'));
    expect(h.pool.executorOf('job-c1')!.received.map((m) => m.type)).toContain('cancel');
    expect(h.pool.killed).toEqual([]);

    h.pool.honoursCancel = false;
    await runThenCancel(h, 'job-c2');
    await until('job-c2 ended by the agent', () => h.states('job-c2').includes('canceled'));
    const end = h.events.find((e) => e.jobId === 'job-c2' && e.type === 'state' && e.state === 'canceled');
    expect(end).toMatchObject({ error: { code: 'STEWARD_AGENT_ENDED_JOB' } });
    // No job cgroup here: the executor was the only way to reach the job's processes.
    expect(h.pool.killed).toEqual(['alice: killed by the agent to end a job']);
  });

  it('hands the offer back when the executor dies before the load, and runs its redelivery', async () => {
    const h = await startAgent({ slots: 1 });
    h.pool.script = 'hold';
    h.publish('job-x');
    await until('the executor got job-x', () => h.pool.executorOf('job-x') !== undefined);
    h.pool.crash('job-x');
    await until('job-x handed back', () => h.states('job-x').includes('offered'));
    const handedBack = h.events.find(
      (e) => e.jobId === 'job-x' && e.type === 'state' && e.state === 'offered',
    );
    expect(handedBack).toMatchObject({ error: { code: 'STEWARD_EXECUTOR_CRASHED' } });
    // The claim is released twice: a fetch of the dead executor may land after the first.
    await until('the claim released twice', () => h.released.length === 2);
    expect(h.released).toEqual(['job-x:1', 'job-x:1']);
    await until('job-x redelivered to a new executor', () => h.pool.executorOf('job-x') !== undefined);
    h.pool.load('job-x');
    await until('job-x running', () => h.states('job-x').includes('running'));
    // The redelivery numbers its events in its own range.
    expect(h.events.filter((e) => e.jobId === 'job-x').map((e) => e.seq)).toEqual([
      1, 2, 1_000_001, 1_000_002,
    ]);
  });

  it('stops an older attempt of a job when a newer one arrives, and runs the newer one afterwards', async () => {
    const h = await startAgent({ slots: 2 });
    const first = h.publish('job-n');
    await until('attempt 1 running', () => h.states('job-n').includes('running'));
    h.republish({ ...first, attempt: 2 });
    await until('attempt 1 canceled', () =>
      h.events.some(
        (e) => e.jobId === 'job-n' && e.attempt === 1 && e.type === 'state' && e.state === 'canceled',
      ),
    );
    await until('attempt 2 running', () =>
      h.events.some(
        (e) => e.jobId === 'job-n' && e.attempt === 2 && e.type === 'state' && e.state === 'running',
      ),
    );
    expect(matching(h.logs, agentEvents.olderAttemptStopped)).toMatchObject([
      { jobId: 'job-n', heldAttempt: 1, newAttempt: 2 },
    ]);
  });
});

/**
 * Faults with a real server, real agents and RabbitMQ: an agent killed with SIGKILL while a burst of offers
 * loads, and offers published straight to the broker that are unsigned, forged, tampered or expired.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import amqp from 'amqplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOfferSigner, generateSigningKeyPem, type JobOffer } from '../../src/protocol/index.js';
import { agentEvents, matching, readLogRecords } from '../support/logs.js';
import { until } from '../support/wait.js';
import { Cluster } from '../support/distributed.js';
import { countFaults, formatCounts } from '../support/fault-counts.js';
import { OsUsers } from '../support/os-users.js';
import { brokerUrl, createVhost, deleteVhost } from '../support/rabbitmq.js';
import { isRoot } from '../support/steward.js';

const NOOP = `name: noop
description: one tiny query
steps:
  - id: one
    sql: SELECT 1 AS x
outputs: [one]
`;
const BURST = Number(process.env.STEWARD_TEST_BURST ?? 500);

let vhost = '';
let cluster: Cluster | undefined;
let userMap: Record<string, string> = {};
const osUsers = new OsUsers();

beforeAll(async () => {
  vhost = await createVhost('faults');
  cluster = await Cluster.start({ vhost, server: { loadTimeout: '5m', agentLease: '3s' } });
  userMap = isRoot ? { admin: (await osUsers.user('fa')).name } : {};
  const pushed = await cluster.request('POST', '/api/workflows', { source: NOOP });
  expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
}, 120_000);

afterAll(async () => {
  await cluster?.destroy();
  await osUsers.cleanup();
  if (vhost) await deleteVhost(vhost);
}, 60_000);

describe('faults', () => {
  it(`kill -9 of an agent while a burst of ${BURST} offers loads: nothing stuck, nothing run twice unseen`, async () => {
    const c = cluster!;
    const victim = await c.startAgent('victim', { slots: 6, userMap, warmExecutors: 2 });
    await c.startAgent('survivor', { slots: 6, userMap, warmExecutors: 2 });
    const ids = await Promise.all(Array.from({ length: BURST }, () => c.submit('noop')));
    // Wait until the victim holds work, then kill it without a chance to clean up.
    await c.waitForAnyJob(
      ids.slice(0, 40),
      'the victim agent to take a job',
      (job) => job.agentId === victim.id,
    );
    await victim.stop('SIGKILL');
    const counts = await countFaults(c, ids, 300_000);
    console.log(formatCounts(`kill -9 agent, burst ${BURST}`, counts));
    const jobs = await Promise.all(ids.map((id) => c.job(id)));
    const lost = jobs.filter((job) => job.state === 'lost');
    // Only jobs the victim had already started may be lost (their outcome is unknown), and each says why.
    expect(counts.stuck).toBe(0);
    expect(counts.duplicated).toBe(0);
    expect(counts.lost).toBe(lost.length);
    expect(lost.length).toBeLessThanOrEqual(6);
    for (const job of lost) {
      expect(job.agentId).toBe(victim.id);
      expect(job.error?.code).toBe('STEWARD_AGENT_LOST');
    }
    const odd = jobs.filter((job) => job.state !== 'succeeded' && job.state !== 'lost');
    expect(
      odd.map((job) => ({ id: job.id, state: job.state, attempts: job.attempts, error: job.error })),
    ).toEqual([]);
    expect(counts.states.succeeded).toBe(BURST - lost.length);
    // Everything that was loading on the victim went round to the survivor.
    const bySurvivor = jobs.filter((job) => job.agentId === c.agentId('survivor')).length;
    expect(bySurvivor).toBeGreaterThan(0);
  }, 420_000);

  it('kill -9 of an executor mid-run: its running jobs fail saying so, the rest of the burst completes', async () => {
    const c = cluster!;
    const pushed = await c.request('POST', '/api/workflows', {
      source: 'name: short\nsteps:\n  - id: nap\n    shell: sleep 0.5\n',
    });
    expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
    for (const agent of c.agents.values()) await agent.stop();
    await c.startAgent('exec-victim', { slots: 8, userMap, warmExecutors: 2 });
    const total = BURST;
    const ids = await Promise.all(Array.from({ length: total }, () => c.submit('short')));
    // A job whose step runs: one killed before its first step would be retried (server.retries.notStarted).
    const running = await c.waitForAnyJob(
      ids.slice(0, 16),
      'a job to run its step',
      (job) =>
        job.state === 'running' && !!job.executor?.pid && job.steps.some((step) => step.state === 'running'),
    );
    const pid = running.executor!.pid;
    process.kill(pid, 'SIGKILL');
    const counts = await countFaults(c, ids, 300_000);
    console.log(formatCounts(`kill -9 executor, burst ${total}`, counts));
    expect(counts.stuck).toBe(0);
    expect(counts.lost).toBe(0);
    expect(counts.duplicated).toBe(0);
    const jobs = await Promise.all(ids.map((id) => c.job(id)));
    const failed = jobs.filter((job) => job.state !== 'succeeded');
    expect(failed.length).toBeGreaterThan(0);
    // One executor per (user, machine): at most the agent's slots were in it.
    expect(failed.length).toBeLessThanOrEqual(8);
    for (const job of failed) {
      expect(job.state).toBe('failed');
      expect(job.error?.code).toBe('STEWARD_EXECUTOR_CRASHED');
      expect(job.executor?.pid).toBe(pid);
    }
  }, 420_000);

  it('ends the running job of an agent silent past its lease as lost, saying why', async () => {
    const c = cluster!;
    const pushed = await c.request('POST', '/api/workflows', {
      source: 'name: napper\nsteps:\n  - id: nap\n    shell: sleep 20\n',
    });
    expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
    for (const agent of c.agents.values()) await agent.stop();
    const sleepy = await c.startAgent('sleepy', { slots: 1, userMap });
    const id = await c.submit('napper');
    // Until its step runs: a job lost before any step started would be retried (server.retries.notStarted).
    await c.waitForJob(
      id,
      'the step to run',
      (job) => job.state === 'running' && job.steps[0]?.state === 'running',
    );
    await sleepy.stop('SIGKILL');
    const started = Date.now();
    const job = await c.settleOne(id, 30_000);
    expect(job.state).toBe('lost');
    expect(job.agentId).toBe(sleepy.id);
    expect(job.error?.code).toBe('STEWARD_AGENT_LOST');
    expect(job.error?.message).toMatch(new RegExp(`agent ${sleepy.id} sent no heartbeat for more than 3s`));
    // Within the lease (3 s) plus one sweep (1 s) plus slack, well before the 20 s nap would have ended.
    expect(Date.now() - started).toBeLessThan(10_000);
  }, 60_000);

  it('never runs unsigned, forged, tampered or expired offers published straight to the broker', async () => {
    const c = cluster!;
    for (const agent of c.agents.values()) await agent.stop();
    const guard = await c.startAgent('guard', { slots: 2, userMap });
    const serverKey = await readFile(path.join(c.dataDir, 'keys', 'offer-signing.pem'), 'utf8');
    const genuine = createOfferSigner(serverKey);
    const stranger = createOfferSigner(generateSigningKeyPem().privateKeyPem);
    const now = Date.now();
    const offer = (jobId: string, deadline = now + 60_000): JobOffer => ({
      v: 1,
      jobId,
      attempt: 1,
      user: 'root',
      workflow: { name: 'noop', version: 1, digest: 'x'.repeat(64) },
      params: {},
      labels: [],
      jobToken: 'stj_forged_token_not_real',
      serverUrl: c.url,
      limits: {},
      deadline,
      issuedAt: now,
    });
    const tampered = genuine.sign(offer('tampered'));
    const bodies: Record<string, unknown> = {
      unsigned: { v: 1, payload: JSON.stringify(offer('unsigned')), signature: '', keyId: 'none' },
      forged: stranger.sign(offer('forged')),
      tampered: { ...tampered, payload: tampered.payload.replace('"user":"root"', '"user":"admin"') },
      expired: genuine.sign(offer('expired', now - 1000)),
    };
    const connection = await amqp.connect(`${brokerUrl}/${encodeURIComponent(vhost)}`);
    const channel = await connection.createConfirmChannel();
    for (const body of Object.values(bodies)) {
      channel.sendToQueue('steward.v1.offers', Buffer.from(JSON.stringify(body)), { persistent: true });
    }
    await channel.waitForConfirms();
    await connection.close();
    const rejected = await until(
      'four rejected offers in the agent log',
      async () => {
        const records = matching(await readLogRecords(c.agentDir('guard')), agentEvents.offerRejected);
        return records.length >= 4 && records;
      },
      20_000,
      100,
    );
    expect(rejected).toHaveLength(4);
    const codes = rejected.map((record) => record.code).sort();
    expect(codes).toEqual([
      'STEWARD_OFFER_EXPIRED',
      'STEWARD_OFFER_SIGNATURE_INVALID',
      'STEWARD_OFFER_SIGNATURE_INVALID',
      'STEWARD_OFFER_SIGNATURE_INVALID',
    ]);
    // None of them was taken as a job.
    const jobIds = (await readLogRecords(c.agentDir('guard'))).map((record) => record.jobId);
    expect(jobIds.filter((id) => ['unsigned', 'forged', 'tampered', 'expired'].includes(String(id)))).toEqual(
      [],
    );
    await guard.stop();
  }, 60_000);
});

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { EmbeddedBus, type Delivery, type Subscription } from '../../src/bus/index.js';
import { compileServerConfig } from '../../src/config/index.js';
import {
  createOfferVerifier,
  NotificationMessage,
  verifySignatureHeader,
  type JobOffer,
  type JobStepEvent,
} from '../../src/protocol/index.js';
import { createServer } from '../../src/server/index.js';
import { pino } from 'pino';
import { backends, postgresBackend, sqliteBackend } from '../store/backends.js';
import { startSmtpReceiver, startWebhookReceiver, type WebhookReceiver } from '../support/receivers.js';
import { until } from '../support/wait.js';
import { REPORT_WORKFLOW, stateEvent, startHarness, type Harness } from './harness.js';

/** Fast polling and short backoffs, so retries happen within a test. */
const FAST = { pollInterval: '50ms', initialBackoff: '300ms', maxBackoff: '5s' };

let h: Harness | undefined;
let receiver: WebhookReceiver | undefined;
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  await h?.dispose();
  h = undefined;
  await receiver?.close();
  receiver = undefined;
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

async function takeOffer(harness: Harness): Promise<{ offer: JobOffer; subscription: Subscription }> {
  const verifier = createOfferVerifier([harness.server.publicKeyPem]);
  let subscription: Subscription | undefined;
  const delivery = await new Promise<Delivery<unknown>>((resolve) => {
    void harness.bus.consumeOffers(async (d) => resolve(d), { prefetch: 1 }).then((s) => (subscription = s));
  });
  await delivery.ack();
  return { offer: verifier.verify(delivery.body), subscription: subscription! };
}

function stepEvent(
  offer: JobOffer,
  seq: number,
  stepId: string,
  step: Partial<JobStepEvent['step']>,
): JobStepEvent {
  return {
    v: 1,
    type: 'step',
    jobId: offer.jobId,
    attempt: offer.attempt,
    seq,
    time: Date.now(),
    agentId: 'agent-1',
    step: { stepId, state: 'running', time: Date.now(), ...step },
  };
}

/** Submits `report` as `token` and reports it, like an agent would, to its end: failed in step `total`, or succeeded. */
async function runJob(harness: Harness, token: string, end: 'failed' | 'succeeded'): Promise<string> {
  const taking = takeOffer(harness);
  const job = await harness.call('submitJob', {
    token,
    body: { workflow: 'report', params: { region: 'emea' } },
  });
  const { offer, subscription } = await taking;
  await subscription.cancel();
  await harness.bus.publishEvent(stateEvent(offer, 1, 'loading'));
  await harness.bus.publishEvent(stateEvent(offer, 2, 'running'));
  await harness.bus.publishEvent(stepEvent(offer, 3, 'numbers', { state: 'succeeded', rows: 3 }));
  if (end === 'failed') {
    await harness.bus.publishEvent(
      stepEvent(offer, 4, 'total', {
        state: 'failed',
        error: { code: 'STEWARD_STEP_FAILED', message: 'Binder Error: column "n" not found' },
      }),
    );
    await harness.bus.publishEvent(
      stateEvent(offer, 5, 'failed', {
        error: {
          code: 'STEWARD_STEP_FAILED',
          message: 'step total failed: Binder Error: column "n" not found',
        },
      }),
    );
  } else {
    await harness.bus.publishEvent(stepEvent(offer, 4, 'total', { state: 'succeeded', rows: 1 }));
    await harness.bus.publishEvent(stateEvent(offer, 5, 'succeeded'));
  }
  await until(
    `job ${job.id} ${end}`,
    async () => (await harness.call('showJob', { token, params: { id: job.id } })).state === end,
  );
  return job.id;
}

async function setUp(backend = sqliteBackend, title: string, config: Record<string, unknown> = {}) {
  h = await startHarness({ backend, title, config: { notifications: { ...FAST, ...config } } });
  const { url } = await h.server.listen();
  const alice = await h.userToken('alice');
  await h.call('pushWorkflow', { token: alice, body: { source: REPORT_WORKFLOW } });
  return { harness: h, alice, url };
}

/** A schedule named `nightly` of the user's (a rule may be scoped only to a schedule that exists). */
async function addNightlySchedule(harness: Harness, token: string): Promise<void> {
  await harness.call('createSchedule', {
    token,
    body: {
      name: 'nightly',
      workflow: 'report',
      params: { region: 'emea' },
      cron: '0 3 * * *',
      timeZone: 'UTC',
    },
  });
}

function parseMessage(body: string): NotificationMessage {
  return NotificationMessage.parse(JSON.parse(body));
}

describe.each(backends)('webhook notifications on $name', (backend) => {
  it("posts a signed message with the job's id, state, workflow, failing step, error and portal link, once per matching end", async (context) => {
    const { harness, alice, url } = await setUp(backend, context.task.name);
    receiver = await startWebhookReceiver();
    const rule = await harness.call('createNotificationRule', {
      token: alice,
      body: { when: 'failure', channel: { type: 'webhook', url: receiver.url } },
    });
    expect(rule.secret).toMatch(/^[A-Za-z0-9_-]{40,}$/);
    const secret = rule.secret!;

    // A success does not match a failure rule: no delivery is queued with its end (same transaction).
    await runJob(harness, alice, 'succeeded');
    expect((await harness.call('listNotificationDeliveries', { token: alice })).deliveries).toEqual([]);

    const failed = await runJob(harness, alice, 'failed');
    const request = await until('the webhook', () => receiver!.requests[0]);
    expect(request.method).toBe('POST');
    expect(request.headers['content-type']).toBe('application/json');
    expect(verifySignatureHeader(secret, String(request.headers['steward-signature']), request.body)).toBe(
      true,
    );
    expect(
      verifySignatureHeader(
        'not-the-secret-at-all',
        String(request.headers['steward-signature']),
        request.body,
      ),
    ).toBe(false);
    const message = parseMessage(request.body);
    expect(request.headers['steward-delivery']).toBe(message.deliveryId);
    expect(request.headers['steward-event']).toBe('job.ended');
    expect(message.job).toMatchObject({
      id: failed,
      state: 'failed',
      outcome: 'failure',
      user: 'alice',
      workflow: { space: 'alice', name: 'report', version: 1 },
      error: {
        code: 'STEWARD_STEP_FAILED',
        message: 'step total failed: Binder Error: column "n" not found',
      },
      failingStep: { id: 'total', error: 'Binder Error: column "n" not found' },
      url: `${url}/jobs/${failed}`,
    });
    expect(message.rule).toEqual({ id: rule.id, when: 'failure', schedule: null });

    const delivered = await until('the delivery settled', async () => {
      const [delivery] = (await harness.call('listNotificationDeliveries', { token: alice })).deliveries;
      return delivery?.state === 'delivered' ? delivery : undefined;
    });
    expect(delivered).toMatchObject({ id: message.deliveryId, jobId: failed, attempts: 1, lastError: null });
    expect(receiver.requests).toHaveLength(1);
  });

  it('delivers a delivery still pending when the server restarts, with the same delivery id', async (context) => {
    const { harness, alice } = await setUp(backend, context.task.name, {
      initialBackoff: '2s',
      maxBackoff: '2s',
    });
    receiver = await startWebhookReceiver();
    receiver.respond = () => 503;
    await harness.call('createNotificationRule', {
      token: alice,
      body: { when: 'always', channel: { type: 'webhook', url: receiver.url } },
    });
    const failed = await runJob(harness, alice, 'failed');
    const first = await until('the first attempt', () => receiver!.requests[0]);
    // Stop once the failed attempt is on record: a stop while it is in flight gives the claim back uncounted.
    await until('the first attempt settled as a retry', async () => {
      const [delivery] = (await harness.call('listNotificationDeliveries', { token: alice })).deliveries;
      return delivery?.state === 'pending' && delivery.attempts === 1 && delivery.lastError !== null;
    });
    await harness.stop();
    receiver.respond = () => 200;
    await harness.restart();
    const second = await until('the attempt after the restart', () => receiver!.requests[1], 20_000);
    expect(second.headers['steward-delivery']).toBe(first.headers['steward-delivery']);
    expect(parseMessage(second.body).job?.id).toBe(failed);
    const token = await harness.login('alice', 'password-of-alice');
    await until('delivered', async () => {
      const [delivery] = (await harness.call('listNotificationDeliveries', { token })).deliveries;
      return delivery?.state === 'delivered' && delivery.attempts === 2;
    });
  });
});

describe('webhook retries', () => {
  it('retries a failing receiver with growing, jittered waits until it answers, at least once', async (context) => {
    const { harness, alice } = await setUp(sqliteBackend, context.task.name);
    receiver = await startWebhookReceiver();
    receiver.respond = (received) => (received.length <= 3 ? 500 : 204);
    await harness.call('createNotificationRule', {
      token: alice,
      body: { when: 'failure', channel: { type: 'webhook', url: receiver.url } },
    });
    await runJob(harness, alice, 'failed');
    await until('four attempts', () => receiver!.requests.length >= 4, 20_000);
    const ids = new Set(receiver.requests.map((request) => request.headers['steward-delivery']));
    expect(ids.size).toBe(1);
    const at = receiver.requests.map((request) => request.at);
    // Waits of 300 ms · 2^(n−1), the upper half random: at least 150, 300 and 600 ms.
    expect(at[1]! - at[0]!).toBeGreaterThanOrEqual(140);
    expect(at[2]! - at[1]!).toBeGreaterThanOrEqual(290);
    expect(at[3]! - at[2]!).toBeGreaterThanOrEqual(590);
    const delivery = await until('delivered', async () => {
      const [found] = (await harness.call('listNotificationDeliveries', { token: alice })).deliveries;
      return found?.state === 'delivered' ? found : undefined;
    });
    expect(delivery.attempts).toBe(4);
    expect(delivery.lastError).toMatch(/^HTTP 500: receiver says no/);
  });

  it('gives a delivery up after maxAttempts and audits it', async (context) => {
    const { harness, alice } = await setUp(sqliteBackend, context.task.name, {
      maxAttempts: 2,
      initialBackoff: '100ms',
    });
    receiver = await startWebhookReceiver();
    receiver.respond = () => 500;
    await harness.call('createNotificationRule', {
      token: alice,
      body: { when: 'failure', channel: { type: 'webhook', url: receiver.url } },
    });
    const failed = await runJob(harness, alice, 'failed');
    const delivery = await until('given up', async () => {
      const [found] = (await harness.call('listNotificationDeliveries', { token: alice })).deliveries;
      return found?.state === 'failed' ? found : undefined;
    });
    expect(delivery.attempts).toBe(2);
    expect(receiver.requests).toHaveLength(2);
    const audit = await harness.server.store.listAudit({ action: 'notification.failed', limit: 10 });
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({ actor: 'system', target: failed });
    expect(audit[0]!.detail).toMatchObject({
      delivery: delivery.id,
      user: 'alice',
      attempts: 2,
      channel: 'webhook',
    });
  });

  it('does not follow a redirect, says where it pointed, and stops waiting for a silent receiver', async (context) => {
    const { harness, alice } = await setUp(sqliteBackend, context.task.name, { webhookTimeout: '500ms' });
    receiver = await startWebhookReceiver();
    const rule = await harness.call('createNotificationRule', {
      token: alice,
      body: { when: 'failure', channel: { type: 'webhook', url: receiver.url } },
    });
    receiver.respond = () => 302;
    const result = await harness.call('testNotificationRule', { token: alice, params: { id: rule.id } });
    expect(result.delivered).toBe(false);
    expect(result.error).toMatch(/^HTTP 302: redirects are not followed/);
    receiver.respond = () => 0;
    const silent = await harness.call('testNotificationRule', { token: alice, params: { id: rule.id } });
    expect(silent).toEqual({ delivered: false, error: 'no answer within 500 ms' });
    receiver.respond = () => 200;
    expect(await harness.call('testNotificationRule', { token: alice, params: { id: rule.id } })).toEqual({
      delivered: true,
      error: null,
    });
    const test = receiver.requests[2]!;
    expect(test.headers['steward-event']).toBe('notification.test');
    expect(verifySignatureHeader(rule.secret!, String(test.headers['steward-signature']), test.body)).toBe(
      true,
    );
  });
});

describe('a lost job retried after all', () => {
  it('drops the message about the lost attempt as superseded by the new attempt', async (context) => {
    const { harness, alice } = await setUp(sqliteBackend, context.task.name);
    receiver = await startWebhookReceiver();
    receiver.respond = () => 500;
    await harness.call('createNotificationRule', {
      token: alice,
      body: { when: 'failure', channel: { type: 'webhook', url: receiver.url } },
    });
    const taking = takeOffer(harness);
    const job = await harness.call('submitJob', {
      token: alice,
      body: { workflow: 'report', params: { region: 'emea' } },
    });
    const { offer, subscription } = await taking;
    await subscription.cancel();
    await harness.bus.publishEvent(stateEvent(offer, 1, 'loading'));
    await harness.bus.publishEvent(stateEvent(offer, 2, 'running'));
    await until(
      'running',
      async () =>
        (await harness.call('showJob', { token: alice, params: { id: job.id } })).state === 'running',
    );
    const error = { code: 'STEWARD_AGENT_LOST' as const, message: 'agent agent-1 sent no heartbeat' };
    expect((await harness.server.store.transitionJob(job.id, 'lost', { error })).ok).toBe(true);
    await until('an attempt at the lost message', () => receiver!.requests.length >= 1);
    // The agent's late crash report makes the server retry the lost job as attempt 2 (recovery.ts).
    const retried = await harness.server.store.retryJob(job.id, {
      attempt: 1,
      endState: 'lost',
      error,
      jobTokenHash: 'new-token-hash',
      loadDeadline: Date.now() + 60_000,
    });
    expect(retried.ok).toBe(true);
    const dropped = await until('dropped', async () => {
      const [delivery] = (await harness.call('listNotificationDeliveries', { token: alice })).deliveries;
      return delivery?.state === 'dropped' ? delivery : undefined;
    });
    expect(dropped.lastError).toBe('superseded: the job was retried as attempt 2 after this end');
  });
});

describe('email notifications', () => {
  it('sends the job id, state, failing step, error and link through a real SMTP server, logged in', async (context) => {
    const smtp = await startSmtpReceiver({ user: 'steward', password: 'smtp-password-1' });
    cleanups.push(() => smtp.close());
    const dir = mkdtempSync(path.join(os.tmpdir(), 'steward-smtp-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(path.join(dir, 'password'), 'smtp-password-1\n', { mode: 0o600 });
    const { harness, alice } = await setUp(sqliteBackend, context.task.name, {
      smtp: {
        host: '127.0.0.1',
        port: smtp.port,
        starttls: 'never',
        user: 'steward',
        passwordFile: path.join(dir, 'password'),
        from: 'Steward <steward@example.org>',
      },
    });
    await harness.call('createNotificationRule', {
      token: alice,
      body: { when: 'failure', channel: { type: 'email', address: 'alice@example.org' } },
    });
    const failed = await runJob(harness, alice, 'failed');
    const received = await until('the email', () => smtp.messages[0]);
    expect(received.user).toBe('steward');
    expect(received.to).toEqual(['alice@example.org']);
    expect(received.from).toBe('steward@example.org');
    expect(received.mail.subject).toBe(`[Steward] job ${failed} failed: alice/report@1`);
    const text = received.mail.text ?? '';
    expect(text).toContain(`Job:       ${failed}`);
    expect(text).toContain('State:     failed');
    expect(text).toContain('Failing step: total');
    expect(text).toContain('Step error: Binder Error: column "n" not found');
    expect(text).toContain('Error:     STEWARD_STEP_FAILED: step total failed');
    expect(text).toMatch(new RegExp(`Open the job: http://127\\.0\\.0\\.1:\\d+/jobs/${failed}`));
    await until('delivered', async () => {
      const [delivery] = (await harness.call('listNotificationDeliveries', { token: alice })).deliveries;
      return delivery?.state === 'delivered';
    });
  });
});

describe('notification rules', () => {
  it('validates targets, bounds rules per user, keeps rules private and shows a secret only once', async (context) => {
    const { harness, alice } = await setUp(sqliteBackend, context.task.name, { maxRulesPerUser: 2 });
    const bob = await harness.userToken('bob');
    const admin = await harness.adminToken();
    const refused = async (body: unknown) =>
      (await harness.callError('createNotificationRule', { token: alice, body: body as never })).error;
    expect(
      (await refused({ when: 'failure', channel: { type: 'webhook', url: 'ftp://example.org/x' } })).code,
    ).toBe('STEWARD_BAD_REQUEST');
    expect(
      (await refused({ when: 'failure', channel: { type: 'webhook', url: 'https://u:p@example.org/x' } }))
        .message,
    ).toMatch(/no user name or password/);
    expect(
      (await refused({ when: 'failure', channel: { type: 'email', address: 'not an address' } })).code,
    ).toBe('STEWARD_BAD_REQUEST');
    expect(
      (await refused({ when: 'sometimes', channel: { type: 'email', address: 'a@example.org' } })).code,
    ).toBe('STEWARD_BAD_REQUEST');
    expect(
      (await refused({ when: 'failure', channel: { type: 'email', address: 'a@example.org' } })).code,
    ).toBe('STEWARD_EMAIL_NOT_CONFIGURED');

    expect(
      (
        await refused({
          when: 'always',
          schedule: 'nightly',
          channel: { type: 'webhook', url: 'https://h.example.org/' },
        })
      ).code,
    ).toBe('STEWARD_NOT_FOUND');
    await addNightlySchedule(harness, alice);
    const given = await harness.call('createNotificationRule', {
      token: alice,
      body: {
        when: 'always',
        schedule: 'nightly',
        channel: {
          type: 'webhook',
          url: 'https://hooks.example.org/T000/secret-path',
          secret: 'a-secret-given-by-alice',
        },
      },
    });
    expect(given.secret).toBeNull();
    await harness.call('createNotificationRule', {
      token: alice,
      body: { when: 'success', channel: { type: 'webhook', url: 'https://hooks.example.org/other' } },
    });
    const limit = await refused({
      when: 'failure',
      channel: { type: 'webhook', url: 'https://example.org/x' },
    });
    expect(limit.code).toBe('STEWARD_NOTIFICATION_RULE_LIMIT');

    const own = (await harness.call('listNotificationRules', { token: alice })).rules;
    expect(own.map((rule) => [rule.when, rule.schedule, rule.target])).toEqual([
      ['always', 'nightly', 'https://hooks.example.org/T000/secret-path'],
      ['success', null, 'https://hooks.example.org/other'],
    ]);
    expect(JSON.stringify(own)).not.toContain('a-secret-given-by-alice');
    expect((await harness.call('listNotificationRules', { token: bob })).rules).toEqual([]);
    expect(
      (await harness.callError('listNotificationRules', { token: bob, query: { all: 'true' } })).error.code,
    ).toBe('STEWARD_FORBIDDEN');
    const all = (await harness.call('listNotificationRules', { token: admin, query: { all: 'true' } })).rules;
    expect(all.map((rule) => rule.target)).toEqual([
      'https://hooks.example.org/…',
      'https://hooks.example.org/…',
    ]);

    expect(
      (await harness.callError('deleteNotificationRule', { token: bob, params: { id: given.id } })).error
        .code,
    ).toBe('STEWARD_NOT_FOUND');
    await harness.call('deleteNotificationRule', { token: alice, params: { id: given.id } });
    expect((await harness.call('listNotificationRules', { token: alice })).rules).toHaveLength(1);
    const audit = await harness.server.store.listAudit({ actor: 'alice', limit: 20 });
    expect(audit.map((entry) => entry.action)).toEqual(
      expect.arrayContaining(['notification.rule.add', 'notification.rule.remove']),
    );
  });

  it("drops a removed rule's pending deliveries and never matches a schedule rule for unscheduled jobs", async (context) => {
    const { harness, alice } = await setUp(sqliteBackend, context.task.name, {
      initialBackoff: '1h',
      maxBackoff: '1h',
    });
    receiver = await startWebhookReceiver();
    receiver.respond = () => 500;
    const rule = await harness.call('createNotificationRule', {
      token: alice,
      body: { when: 'failure', channel: { type: 'webhook', url: receiver.url } },
    });
    await addNightlySchedule(harness, alice);
    await harness.call('createNotificationRule', {
      token: alice,
      body: { when: 'always', schedule: 'nightly', channel: { type: 'webhook', url: receiver.url } },
    });
    await runJob(harness, alice, 'failed');
    await until('the first attempt', () => receiver!.requests.length === 1);
    // Only the default rule fired: the job was not started by schedule "nightly".
    const queued = (await harness.call('listNotificationDeliveries', { token: alice })).deliveries;
    expect(queued).toHaveLength(1);
    const pending = queued[0];
    expect(pending).toMatchObject({ ruleId: rule.id, state: 'pending' });
    await harness.call('deleteNotificationRule', { token: alice, params: { id: rule.id } });
    const [dropped] = (await harness.call('listNotificationDeliveries', { token: alice })).deliveries;
    expect(dropped).toMatchObject({ id: pending!.id, state: 'dropped', lastError: 'its rule was removed' });
  });
});

describe('notifications on two servers sharing PostgreSQL', () => {
  it('sends each job end once although both servers dispatch', async (context) => {
    const { harness, alice } = await setUp(postgresBackend, context.task.name);
    receiver = await startWebhookReceiver();
    // A second server on the same database and shared directory, with its own dispatcher.
    const otherDir = mkdtempSync(path.join(os.tmpdir(), 'steward-second-server-'));
    const otherBus = new EmbeddedBus({});
    const other = await createServer({
      config: compileServerConfig({
        dataDir: otherDir,
        sharedDir: harness.dataDir,
        signingKeyFile: path.join(harness.dataDir, 'keys', 'offer-signing.pem'),
        port: 0,
        store: harness.storeConfig,
        notifications: FAST,
      }),
      bus: otherBus,
      logger: pino({ level: 'silent' }),
    });
    cleanups.push(async () => {
      await other.close();
      await otherBus.close();
      rmSync(otherDir, { recursive: true, force: true });
    });
    await harness.call('createNotificationRule', {
      token: alice,
      body: { when: 'always', channel: { type: 'webhook', url: receiver.url } },
    });
    const jobs = [];
    for (let n = 0; n < 6; n++) jobs.push(await runJob(harness, alice, n % 2 === 0 ? 'failed' : 'succeeded'));
    await until('every delivery settled', async () => {
      const { deliveries } = await harness.call('listNotificationDeliveries', { token: alice });
      return deliveries.length === 6 && deliveries.every((delivery) => delivery.state === 'delivered');
    });
    const ids = receiver.requests.map((request) => String(request.headers['steward-delivery']));
    expect(ids).toHaveLength(6);
    expect(new Set(ids).size).toBe(6);
    expect(new Set(receiver.requests.map((request) => parseMessage(request.body).job?.id))).toEqual(
      new Set(jobs),
    );
  });
});

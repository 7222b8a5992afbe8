/**
 * Notifications × schedules: a rule scoped to a schedule (`steward notify add --schedule NAME`) fires for a
 * job that schedule really fired (the server's scheduler pass, on a clock the test moves), and the user's
 * default rule does not; a job run by hand still goes to the default rule. Real parts: the store (SQLite and
 * PostgreSQL), the scheduler, the dispatcher and an HTTP receiver per rule.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createOfferVerifier, NotificationMessage, type JobOffer } from '../../src/protocol/index.js';
import { backends } from '../store/backends.js';
import { startWebhookReceiver, type WebhookReceiver } from '../support/receivers.js';
import { until } from '../support/wait.js';
import { REPORT_WORKFLOW, stateEvent, startHarness, type Harness } from './harness.js';

const T0 = Date.parse('2026-05-01T10:00:00Z');

let h: Harness | undefined;
const receivers: WebhookReceiver[] = [];
afterEach(async () => {
  await h?.dispose();
  h = undefined;
  for (const receiver of receivers.splice(0)) await receiver.close();
});

/** The next offer on the bus, acknowledged (as an agent taking it would), and its consumer cancelled. */
async function nextOffer(harness: Harness, start: () => Promise<unknown>): Promise<JobOffer> {
  const verifier = createOfferVerifier([harness.server.publicKeyPem]);
  let resolveBody: (body: unknown) => void = () => {};
  const body = new Promise<unknown>((resolve) => (resolveBody = resolve));
  const subscription = await harness.bus.consumeOffers(
    async (delivery) => {
      await delivery.ack();
      resolveBody(delivery.body);
    },
    { prefetch: 1 },
  );
  await start();
  const offer = verifier.verify(await body);
  await subscription.cancel();
  return offer;
}

/** Ends an offered job as an agent reports a failure, and waits for the server to record it. */
async function fail(harness: Harness, token: string, offer: JobOffer): Promise<void> {
  await harness.bus.publishEvent(stateEvent(offer, 1, 'running'));
  await harness.bus.publishEvent(
    stateEvent(offer, 2, 'failed', { error: { code: 'STEWARD_STEP_FAILED', message: 'step total failed' } }),
  );
  await until(
    `job ${offer.jobId} failed`,
    async () => (await harness.call('showJob', { token, params: { id: offer.jobId } })).state === 'failed',
  );
}

describe.each(backends)('notification rules scoped to a schedule on $name', (backend) => {
  it("fires the schedule's rule for the job it fired, not the user's default rule", async (context) => {
    let now = T0 - 30_000;
    h = await startHarness({
      backend,
      title: context.task.name,
      clock: () => now,
      scheduler: { enabled: false },
      config: { notifications: { pollInterval: '50ms', initialBackoff: '300ms', maxBackoff: '5s' } },
    });
    const harness = h;
    await harness.server.listen();
    const alice = await harness.userToken('alice');
    await harness.call('pushWorkflow', { token: alice, body: { source: REPORT_WORKFLOW } });
    const schedule = await harness.call('createSchedule', {
      token: alice,
      body: { name: 'nightly', workflow: 'report', params: { region: 'emea' }, cron: '* * * * *' },
    });
    const byDefault = await startWebhookReceiver();
    const bySchedule = await startWebhookReceiver();
    receivers.push(byDefault, bySchedule);
    const defaultRule = await harness.call('createNotificationRule', {
      token: alice,
      body: { when: 'always', channel: { type: 'webhook', url: byDefault.url } },
    });
    const scheduleRule = await harness.call('createNotificationRule', {
      token: alice,
      body: { when: 'failure', schedule: 'nightly', channel: { type: 'webhook', url: bySchedule.url } },
    });

    // The 10:00 tick fires the schedule; its job fails.
    now = T0 + 1_000;
    const offer = await nextOffer(harness, async () =>
      expect(await harness.server.fireSchedules(now)).toMatchObject({ fired: 1 }),
    );
    const job = await harness.call('showJob', { token: alice, params: { id: offer.jobId } });
    expect(job.schedule).toBe(schedule.id);
    await fail(harness, alice, offer);

    const request = await until('the schedule rule’s webhook', () => bySchedule.requests[0], 20_000);
    const message = NotificationMessage.parse(JSON.parse(request.body));
    expect(message.rule).toEqual({ id: scheduleRule.id, when: 'failure', schedule: 'nightly' });
    expect(message.job).toMatchObject({ id: offer.jobId, state: 'failed', schedule: 'nightly' });
    await until('the delivery settled', async () => {
      const { deliveries } = await harness.call('listNotificationDeliveries', { token: alice });
      return deliveries.length === 1 && deliveries[0]!.state === 'delivered';
    });

    // A job run by hand goes to the default rule: the default receiver works, and so stayed silent above.
    const byHand = await nextOffer(harness, () =>
      harness.call('submitJob', { token: alice, body: { workflow: 'report', params: { region: 'emea' } } }),
    );
    await fail(harness, alice, byHand);
    const defaultRequest = await until('the default rule’s webhook', () => byDefault.requests[0], 20_000);
    const defaultMessage = NotificationMessage.parse(JSON.parse(defaultRequest.body));
    expect(defaultMessage.rule).toEqual({ id: defaultRule.id, when: 'always', schedule: null });
    expect(defaultMessage.job).toMatchObject({ id: byHand.jobId, schedule: null });
    expect(
      byDefault.requests.map((item) => NotificationMessage.parse(JSON.parse(item.body)).job?.id),
    ).toEqual([byHand.jobId]);
    expect(bySchedule.requests).toHaveLength(1);
  });
});

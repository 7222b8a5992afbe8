/**
 * `GET /metrics`: a real server and store (SQLite and PostgreSQL) on the embedded bus, the test standing in
 * for the agent; every scrape is read with a Prometheus text-format parser, so output it cannot parse fails.
 * Jobs go through the server's real submit, offer and event paths, and the figures must move with them.
 */
import { CompiledQuery } from 'kysely';
import parsePrometheus, { type PrometheusFamily } from 'parse-prometheus-text-format';
import { afterEach, describe, expect, it } from 'vitest';
import type { Subscription } from '../../src/bus/index.js';
import { createOfferVerifier, type JobOffer } from '../../src/protocol/index.js';
import { backends } from '../store/backends.js';
import { eventually, startHarness, stateEvent, type Harness } from './harness.js';

const TOKEN = 'metrics-token-for-tests-0123456789';
const WORKFLOW = `name: tiny
steps:
  - id: one
    sql: SELECT 1 AS n
`;

/** One sample's value, or undefined when the family or that label set is absent. */
function sample(
  families: PrometheusFamily[],
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const family = families.find((candidate) => candidate.name === name);
  const found = family?.metrics.find((metric) =>
    Object.entries(labels).every(([key, value]) => metric.labels?.[key] === value),
  );
  if (found?.value !== undefined) return Number(found.value);
  if (found?.buckets !== undefined) return Number(found.buckets['+Inf']);
  return undefined;
}

describe.each(backends)('the metrics endpoint on $name', (backend) => {
  let h: Harness;
  let subscription: Subscription | undefined;

  afterEach(async () => {
    await subscription?.cancel();
    subscription = undefined;
    await h.dispose();
  });

  /** `null`: no Authorization header. */
  async function scrape(token: string | null = TOKEN) {
    return h.raw({ method: 'GET', url: '/metrics', ...(token !== null ? { token } : {}) });
  }

  async function families(): Promise<PrometheusFamily[]> {
    const response = await scrape();
    expect(response.status, response.text).toBe(200);
    expect(String(response.headers['content-type'])).toMatch(/^text\/plain; version=0\.0\.4/);
    return parsePrometheus(response.text);
  }

  it('refuses scrapes without the bearer token and counts jobs, agents, logins and store errors as they happen', async (context) => {
    h = await startHarness({ backend, title: context.task.name, config: { metrics: { token: TOKEN } } });
    expect((await scrape(null)).status).toBe(401);
    const wrong = await scrape('not-the-metrics-token-at-all');
    expect(wrong.status).toBe(401);
    expect(wrong.headers['www-authenticate']).toMatch(/^Bearer/);
    // A user's login token is not the metrics token either.
    expect((await scrape(await h.adminToken())).status).toBe(401);

    let before = await families();
    expect(sample(before, 'steward_jobs', { state: 'offered', cluster: 'local' })).toBe(0);
    expect(sample(before, 'steward_job_queue_depth', { cluster: 'local' })).toBe(0);
    expect(sample(before, 'steward_agents', { state: 'active' })).toBe(0);
    expect(sample(before, 'steward_login_failures_total', { reason: 'rejected' })).toBe(0);

    // An agent with two warm executors (one busy) and 3 of 4 slots free.
    await h.bus.publishHeartbeat({
      v: 1,
      type: 'heartbeat',
      agentId: 'agent-1',
      time: Date.now(),
      labels: [],
      capacity: { slots: 4, free: 3 },
      executors: [
        { user: 'alice', uid: 1001, pid: 11, jobs: 1, idleSinceMs: null, rssBytes: null },
        { user: 'bob', uid: 1002, pid: 12, jobs: 0, idleSinceMs: Date.now(), rssBytes: null },
      ],
      isolation: 'per-user',
      draining: false,
    });
    await eventually(async () => (await h.server.store.listAgents()).length === 1);

    // Two jobs through the real submit path; the test takes their offers as the agent would.
    const alice = await h.userToken('alice');
    await h.call('pushWorkflow', { token: alice, body: { source: WORKFLOW } });
    const verifier = createOfferVerifier([h.server.publicKeyPem]);
    const offers: JobOffer[] = [];
    subscription = await h.bus.consumeOffers(
      async (delivery) => {
        offers.push(verifier.verify(delivery.body));
        await delivery.ack();
      },
      { prefetch: 10 },
    );
    const jobs = [];
    for (let i = 0; i < 2; i++)
      jobs.push(await h.call('submitJob', { token: alice, body: { workflow: 'tiny' } }));
    await eventually(() => offers.length === 2);

    let now = await families();
    expect(sample(now, 'steward_jobs', { state: 'offered', cluster: 'local' })).toBe(2);
    expect(sample(now, 'steward_job_queue_depth', { cluster: 'local' })).toBe(2);
    expect(sample(now, 'steward_job_queue_oldest_seconds', { cluster: 'local' })).toBeGreaterThanOrEqual(0);
    expect(sample(now, 'steward_agents', { state: 'active', cluster: 'local' })).toBe(1);
    expect(sample(now, 'steward_agent_executors', { agent: 'agent-1', state: 'busy' })).toBe(1);
    expect(sample(now, 'steward_agent_executors', { agent: 'agent-1', state: 'idle' })).toBe(1);
    expect(sample(now, 'steward_agent_slots', { agent: 'agent-1', state: 'used' })).toBe(1);
    expect(sample(now, 'steward_agent_slots', { agent: 'agent-1', state: 'free' })).toBe(3);

    // Both start; one succeeds, the other fails.
    const [first, second] = offers as [JobOffer, JobOffer];
    await h.bus.publishEvent(stateEvent(first, 1, 'running'));
    await h.bus.publishEvent(stateEvent(second, 1, 'running'));
    await eventually(async () => {
      const running = await families();
      return sample(running, 'steward_jobs', { state: 'running', cluster: 'local' }) === 2;
    });
    now = await families();
    expect(sample(now, 'steward_job_queue_depth', { cluster: 'local' })).toBe(0);
    // The parser merges a histogram's label sets into one bucket map: one cluster here, so +Inf is the count.
    expect(sample(now, 'steward_job_start_delay_seconds')).toBe(2);
    await h.bus.publishEvent(stateEvent(first, 2, 'succeeded'));
    await h.bus.publishEvent(
      stateEvent(second, 2, 'failed', { error: { code: 'STEWARD_STEP_FAILED', message: 'boom' } }),
    );
    await eventually(async () => (await h.server.store.getJob(second.jobId))?.state === 'failed');
    now = await families();
    expect(sample(now, 'steward_jobs', { state: 'running', cluster: 'local' })).toBe(0);
    expect(sample(now, 'steward_jobs_ended_total', { state: 'succeeded', cluster: 'local' })).toBe(1);
    expect(sample(now, 'steward_jobs_ended_total', { state: 'failed', cluster: 'local' })).toBe(1);
    expect(sample(now, 'steward_job_run_duration_seconds')).toBeGreaterThanOrEqual(1);

    // A failed login and a failed store query count; neither names anyone.
    expect(
      (await h.raw({ method: 'POST', url: '/api/auth/login', body: { user: 'alice', password: 'wrong!' } }))
        .status,
    ).toBe(401);
    await expect(
      h.server.store.db.executeQuery(CompiledQuery.raw('SELECT * FROM no_such_table')),
    ).rejects.toThrow();
    now = await families();
    expect(sample(now, 'steward_login_failures_total', { reason: 'rejected' })).toBe(1);
    expect(sample(now, 'steward_store_errors_total', { kind: 'query' })).toBeGreaterThanOrEqual(1);

    // Bounded labels: no user name or job id anywhere, as a label name or a value.
    const forbidden = new Set(['alice', 'bob', 'admin', ...jobs.map((job) => job.id)]);
    const allowedNames = new Set([
      'state',
      'cluster',
      'agent',
      'reason',
      'kind',
      'what',
      'le',
      'type',
      'space',
      'version',
      'major',
      'minor',
      'patch',
    ]);
    for (const family of now.filter((candidate) => candidate.name.startsWith('steward_'))) {
      for (const metric of family.metrics)
        for (const [name, value] of Object.entries(metric.labels ?? {})) {
          expect(allowedNames, `${family.name} label ${name}`).toContain(name);
          expect(forbidden.has(value), `${family.name}{${name}="${value}"}`).toBe(false);
        }
    }
    before = now;
    expect(before.some((family) => family.name === 'steward_process_resident_memory_bytes')).toBe(true);
  });

  it('serves metrics on their own listener when configured, and answers 404 on the API port', async (context) => {
    h = await startHarness({
      backend,
      title: context.task.name,
      config: { metrics: { listen: { host: '127.0.0.1', port: 0 } } },
    });
    expect((await scrape()).status).toBe(404);
    await h.server.listen();
    const url = h.server.metricsUrl;
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    const response = await fetch(url!);
    expect(response.status).toBe(200);
    const parsed = parsePrometheus(await response.text());
    expect(sample(parsed, 'steward_jobs', { state: 'queued', cluster: 'local' })).toBe(0);
    expect((await fetch(url!.replace('/metrics', '/api/health'))).status).toBe(404);
  });

  it('answers 404 when metrics are off (the default)', async (context) => {
    h = await startHarness({ backend, title: context.task.name });
    const response = await scrape();
    expect(response.status).toBe(404);
  });
});

/**
 * Metrics and retention end to end: a real `steward up` with a config file, real jobs run as a real OS user,
 * the real CLI for pins and `cleanup --server`, and `/metrics` read with a Prometheus text-format parser.
 * Retention keeps files two seconds here, so expiry is waited for (as a positive signal), not faked.
 */
import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import parsePrometheus, { type PrometheusFamily } from 'parse-prometheus-text-format';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiUser } from '../support/api.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { CliUser, StewardInstance, isRoot, tempDir } from '../support/steward.js';
import { until } from '../support/wait.js';

const TOKEN = 'e2e-metrics-token-0123456789';

function value(
  families: PrometheusFamily[],
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const found = families
    .find((family) => family.name === name)
    ?.metrics.find((metric) => Object.entries(labels).every(([key, v]) => metric.labels?.[key] === v));
  if (found?.value !== undefined) return Number(found.value);
  return found?.buckets !== undefined ? Number(found.buckets['+Inf']) : undefined;
}

describe.runIf(isRoot)('metrics and retention end to end', () => {
  const osUsers = new OsUsers();
  let steward: StewardInstance;
  let scratch: string;
  let user: TestUser;
  let api: ApiUser;
  let cli: CliUser;
  let admin: CliUser;
  const password = 'metrics-retention-password-1';

  async function scrape(): Promise<PrometheusFamily[]> {
    const response = await fetch(`${steward.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(response.status).toBe(200);
    return parsePrometheus(await response.text());
  }

  beforeAll(async () => {
    scratch = await tempDir('metrics');
    const config = path.join(scratch, 'steward.yaml');
    await writeFile(
      config,
      [
        'server:',
        '  metrics:',
        `    token: ${TOKEN}`,
        '  retention:',
        '    results: 2s',
        '    records: 1h',
        '',
      ].join('\n'),
    );
    user = await osUsers.user('mr');
    steward = await StewardInstance.start({ extraArgs: ['--config', config] });
    const adminApi = await ApiUser.login(steward.url, 'admin', steward.adminPassword);
    await adminApi.createUser(user.name, password);
    api = await ApiUser.login(steward.url, user.name, password);
    cli = await CliUser.create(user.name, steward.url);
    await cli.login(password);
    admin = await CliUser.create('admin', steward.url);
    await admin.login(steward.adminPassword);
    await api.push(
      'name: hello\nsteps:\n  - id: say\n    shell: echo hello\n  - id: t\n    sql: SELECT 1 AS n\noutputs: [t]\n',
    );
  }, 90_000);

  afterAll(async () => {
    await cli?.cleanup();
    await admin?.cleanup();
    await steward?.destroy();
    await osUsers.cleanup();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 30_000);

  it('counts real jobs in /metrics, refuses a scrape without the token, and names no user or job', async () => {
    expect((await fetch(`${steward.url}/metrics`)).status).toBe(401);
    const before = await scrape();
    const ended = value(before, 'steward_jobs_ended_total', { state: 'succeeded', cluster: 'local' }) ?? 0;
    const started = value(before, 'steward_job_start_delay_seconds') ?? 0;
    const first = await api.run('hello', {}, 60_000);
    const second = await api.run('hello', {}, 60_000);
    expect([first.state, second.state]).toEqual(['succeeded', 'succeeded']);
    const after = await scrape();
    expect(value(after, 'steward_jobs_ended_total', { state: 'succeeded', cluster: 'local' })).toBe(
      ended + 2,
    );
    expect(value(after, 'steward_job_start_delay_seconds')).toBe(started + 2);
    expect(value(after, 'steward_job_run_duration_seconds')).toBeGreaterThanOrEqual(2);
    expect(value(after, 'steward_agents', { state: 'active', cluster: 'local' })).toBe(1);
    expect(value(after, 'steward_agent_slots', { agent: steward.agentId, state: 'free' })).toBeGreaterThan(0);
    expect(value(after, 'steward_jobs', { state: 'running', cluster: 'local' })).toBe(0);
    const text = JSON.stringify(after);
    expect(text).not.toContain(user.name);
    expect(text).not.toContain(first.id);
  }, 120_000);

  it('keeps a pinned job, and cleanup --server lists with --dry-run exactly what it then removes', async () => {
    const kept = await api.run('hello', {}, 60_000);
    const gone = await api.run('hello', {}, 60_000);
    const pinned = await cli.run(['pin', kept.id]);
    expect(pinned.code, pinned.stderr).toBe(0);
    expect(pinned.stdout).toContain(`pinned ${kept.id}`);
    expect((await cli.run(['job', kept.id])).stdout).toMatch(/pinned:\s+yes/);
    // The user is no admin: the server's cleanup is refused.
    expect((await cli.run(['cleanup', '--server', '--dry-run'])).code).not.toBe(0);

    // Files are kept two seconds after the end: wait until the dry run names the unpinned job.
    const dry = await until(
      'the dry run to list the unpinned job',
      async () => {
        const result = await admin.run(['cleanup', '--server', '--dry-run', '--json']);
        expect(result.code, result.stderr).toBe(0);
        const report = JSON.parse(result.stdout) as { files: { id: string }[]; records: { id: string }[] };
        return report.files.some((job) => job.id === gone.id) ? report : undefined;
      },
      30_000,
      250,
    );
    expect(dry.files.map((job) => job.id)).not.toContain(kept.id);
    expect(dry.records).toEqual([]);
    const resultsDir = (id: string) => path.join(steward.dataDir, 'results', id);
    expect(existsSync(resultsDir(gone.id))).toBe(true);

    const run = await admin.run(['cleanup', '--server', '--json']);
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout) as { files: { id: string }[] };
    expect(report.files.map((job) => job.id)).toEqual(dry.files.map((job) => job.id));
    expect(existsSync(resultsDir(gone.id))).toBe(false);
    expect(existsSync(resultsDir(kept.id))).toBe(true);
    const shown = await cli.run(['job', gone.id]);
    expect(shown.stdout).toMatch(/files:\s+results, logs and inputs removed by retention/);
    const results = await cli.run(['results', gone.id, '--json']);
    expect(JSON.parse(results.stdout)).toMatchObject({ results: [] });
    // The human form of the same commands.
    const again = await admin.run(['cleanup', '--server', '--dry-run']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain('(dry run: nothing removed)');
    const metrics = await scrape();
    expect(value(metrics, 'steward_retention_removed_total', { what: 'files' })).toBeGreaterThanOrEqual(1);
  }, 120_000);
});

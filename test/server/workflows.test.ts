/* eslint-disable @typescript-eslint/no-unsafe-call, @typescript-eslint/no-unsafe-member-access -- HTTP response bodies are checked by assertions, not by static types. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { REPORT_WORKFLOW, startHarness, type Harness } from './harness.js';

const WITH_ASSET = `name: with_asset
assets: [sql/query.sql]
steps:
  - id: one
    sql: SELECT 1 AS x
`;

describe('workflow repository', () => {
  let h: Harness;
  let alice: string;
  beforeEach(async (context) => {
    h = await startHarness({ title: context.task.name });
    alice = await h.userToken('alice');
  });
  afterEach(async () => {
    await h.dispose();
  });

  it('rejects an invalid workflow at push with 422 naming the step', async () => {
    const source =
      'name: broken\nsteps:\n  - id: first\n    sql: SELECT 1 AS x\n  - id: second\n    sql: SELECT * FROM missing_table\n';
    const response = await h.request({
      method: 'POST',
      url: '/api/workflows',
      token: alice,
      body: { source },
    });
    expect(response.status).toBe(422);
    expect(response.json.error.code).toBe('STEWARD_WORKFLOW_INVALID');
    expect(response.json.error.message).toContain('step "second"');
    expect(response.json.error.details.issues[0]).toMatchObject({ path: 'steps.1.sql', line: 6 });
    expect((await h.request({ method: 'GET', url: '/api/workflows', token: alice })).json.workflows).toEqual(
      [],
    );
  });

  it('stores each push as a new immutable version addressable as name@version', async () => {
    const first = await h.request({
      method: 'POST',
      url: '/api/workflows',
      token: alice,
      body: { source: REPORT_WORKFLOW, fileName: 'report.yaml' },
    });
    expect(first.status).toBe(201);
    expect(first.json).toMatchObject({
      name: 'report',
      version: 1,
      createdBy: 'alice',
      description: 'Sums a few numbers',
    });
    expect(first.json.steps).toEqual([
      { id: 'numbers', kind: 'sql', needs: [] },
      { id: 'total', kind: 'sql', needs: ['numbers'] },
    ]);
    expect(first.json.params.map((p: { name: string }) => p.name)).toEqual(['region', 'limit']);
    const changed = REPORT_WORKFLOW.replace('Sums a few numbers', 'Sums numbers, v2');
    const second = await h.request({
      method: 'POST',
      url: '/api/workflows',
      token: alice,
      body: { source: changed },
    });
    expect(second.json.version).toBe(2);
    expect(second.json.digest).not.toBe(first.json.digest);

    const latest = await h.request({ method: 'GET', url: '/api/workflows/report', token: alice });
    expect(latest.json).toMatchObject({ version: 2, source: changed, format: 'yaml' });
    const v1 = await h.request({ method: 'GET', url: '/api/workflows/report/versions/1', token: alice });
    expect(v1.json).toMatchObject({ version: 1, source: REPORT_WORKFLOW });
    const versions = await h.request({ method: 'GET', url: '/api/workflows/report/versions', token: alice });
    expect(versions.json.versions.map((v: { version: number }) => v.version)).toEqual([1, 2]);
    const list = await h.request({ method: 'GET', url: '/api/workflows', token: alice });
    expect(list.json.workflows).toEqual([
      expect.objectContaining({ name: 'report', latestVersion: 2, updatedBy: 'alice' }),
    ]);
    expect(
      (await h.request({ method: 'GET', url: '/api/workflows/report/versions/3', token: alice })).status,
    ).toBe(404);
    expect((await h.request({ method: 'GET', url: '/api/workflows/nothing', token: alice })).status).toBe(
      404,
    );
    const audit = await h.server.store.listAudit({ action: 'workflow.push', limit: 10 });
    expect(audit.map((e) => e.target)).toEqual(['alice/report@2', 'alice/report@1']);
  });

  it('stores assets content-addressed and includes them in the digest', async () => {
    const content = 'SELECT 42 AS answer\n';
    const digest = createHash('sha256').update(content).digest('hex');
    const pushed = await h.request({
      method: 'POST',
      url: '/api/workflows',
      token: alice,
      body: { source: WITH_ASSET, assets: { 'sql/query.sql': Buffer.from(content).toString('base64') } },
    });
    expect(pushed.status).toBe(201);
    expect(pushed.json.assets).toEqual([{ path: 'sql/query.sql', size: content.length, digest }]);
    expect(readFileSync(path.join(h.dataDir, 'assets', digest), 'utf8')).toBe(content);
    const other = await h.request({
      method: 'POST',
      url: '/api/workflows',
      token: alice,
      body: { source: WITH_ASSET, assets: { 'sql/query.sql': Buffer.from('SELECT 1').toString('base64') } },
    });
    expect(other.json.digest).not.toBe(pushed.json.digest);
  });

  it('refuses unsafe, unlisted and missing asset paths', async () => {
    const push = (assets: Record<string, string>) =>
      h.request({
        method: 'POST',
        url: '/api/workflows',
        token: alice,
        body: { source: WITH_ASSET, assets },
      });
    const escape = await push({ '../etc/passwd': 'eA==', 'sql/query.sql': 'eA==' });
    expect(escape.status).toBe(400);
    expect(escape.json.error.message).toContain('must be relative');
    expect((await push({ '/abs.sql': 'eA==' })).status).toBe(400);
    const unlisted = await push({ 'sql/query.sql': 'eA==', 'other.sql': 'eA==' });
    expect(unlisted.status).toBe(400);
    expect(unlisted.json.error.message).toContain('not listed');
    const missing = await push({});
    expect(missing.status).toBe(422);
    expect(missing.json.error.message).toContain('sql/query.sql');
  });
});

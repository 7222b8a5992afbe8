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
    const response = await h.callError('pushWorkflow', { token: alice, body: { source } });
    expect(response.status).toBe(422);
    expect(response.error.code).toBe('STEWARD_WORKFLOW_INVALID');
    expect(response.error.message).toContain('step "second"');
    const issues: unknown = response.error.details?.issues;
    expect(Array.isArray(issues) ? (issues as unknown[])[0] : issues).toMatchObject({
      path: 'steps.1.sql',
      line: 6,
    });
    expect((await h.call('listWorkflows', { token: alice })).workflows).toEqual([]);
  });

  it('stores each push as a new immutable version addressable as name@version', async () => {
    const first = await h.call('pushWorkflow', {
      token: alice,
      body: { source: REPORT_WORKFLOW, fileName: 'report.yaml' },
    });
    expect(first).toMatchObject({
      name: 'report',
      version: 1,
      createdBy: 'alice',
      description: 'Sums a few numbers',
    });
    expect(first.steps).toEqual([
      { id: 'numbers', kind: 'sql', needs: [] },
      { id: 'total', kind: 'sql', needs: ['numbers'] },
    ]);
    expect(first.params.map((p) => p.name)).toEqual(['region', 'limit']);
    const changed = REPORT_WORKFLOW.replace('Sums a few numbers', 'Sums numbers, v2');
    const second = await h.call('pushWorkflow', { token: alice, body: { source: changed } });
    expect(second.version).toBe(2);
    expect(second.digest).not.toBe(first.digest);

    const latest = await h.call('showWorkflow', { token: alice, params: { name: 'report' } });
    expect(latest).toMatchObject({ version: 2, source: changed, format: 'yaml' });
    const v1 = await h.call('showWorkflowVersion', {
      token: alice,
      params: { name: 'report', version: '1' },
    });
    expect(v1).toMatchObject({ version: 1, source: REPORT_WORKFLOW });
    const versions = await h.call('listWorkflowVersions', { token: alice, params: { name: 'report' } });
    expect(versions.versions.map((v) => v.version)).toEqual([1, 2]);
    const list = await h.call('listWorkflows', { token: alice });
    expect(list.workflows).toEqual([
      expect.objectContaining({ name: 'report', latestVersion: 2, updatedBy: 'alice' }),
    ]);
    expect(
      (await h.callError('showWorkflowVersion', { token: alice, params: { name: 'report', version: '3' } }))
        .status,
    ).toBe(404);
    expect((await h.callError('showWorkflow', { token: alice, params: { name: 'nothing' } })).status).toBe(
      404,
    );
    const audit = await h.server.store.listAudit({ action: 'workflow.push', limit: 10 });
    expect(audit.map((e) => e.target)).toEqual(['alice/report@2', 'alice/report@1']);
  });

  it('stores assets content-addressed and includes them in the digest', async () => {
    const content = 'SELECT 42 AS answer\n';
    const digest = createHash('sha256').update(content).digest('hex');
    const pushed = await h.call('pushWorkflow', {
      token: alice,
      body: { source: WITH_ASSET, assets: { 'sql/query.sql': Buffer.from(content).toString('base64') } },
    });
    expect(pushed.assets).toEqual([{ path: 'sql/query.sql', size: content.length, digest }]);
    expect(readFileSync(path.join(h.dataDir, 'assets', digest), 'utf8')).toBe(content);
    const other = await h.call('pushWorkflow', {
      token: alice,
      body: { source: WITH_ASSET, assets: { 'sql/query.sql': Buffer.from('SELECT 1').toString('base64') } },
    });
    expect(other.digest).not.toBe(pushed.digest);
  });

  it('refuses unsafe, unlisted and missing asset paths', async () => {
    const push = (assets: Record<string, string>) =>
      h.callError('pushWorkflow', { token: alice, body: { source: WITH_ASSET, assets } });
    const escape = await push({ '../etc/passwd': 'eA==', 'sql/query.sql': 'eA==' });
    expect(escape.status).toBe(400);
    expect(escape.error.message).toContain('must be relative');
    expect((await push({ '/abs.sql': 'eA==' })).status).toBe(400);
    const unlisted = await push({ 'sql/query.sql': 'eA==', 'other.sql': 'eA==' });
    expect(unlisted.status).toBe(400);
    expect(unlisted.error.message).toContain('not listed');
    const missing = await push({});
    expect(missing.status).toBe(422);
    expect(missing.error.message).toContain('sql/query.sql');
  });
});

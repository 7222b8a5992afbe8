import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ServerDouble, cliBin, runCli, sendJson, tempDirFor } from './harness.js';

let server: ServerDouble;
let dir: string;
let env: Record<string, string>;

beforeEach(async (context) => {
  dir = await tempDirFor(context.task.name);
  server = await ServerDouble.start();
  env = { STEWARD_SERVER: server.url, STEWARD_TOKEN: 'test-token' };
});
afterEach(async () => {
  await server.close();
  await fs.rm(dir, { recursive: true, force: true });
});

const workflowVersion = {
  space: 'alice',
  name: 'sales-report',
  version: 3,
  digest: 'a'.repeat(64),
  description: 'Monthly sales',
  createdBy: 'alice',
  createdAt: '2026-11-22T10:00:00.000Z',
  params: [{ name: 'since', type: 'date', required: false, default: '2026-01-01' }],
  steps: [
    { id: 'load', kind: 'read', needs: [] },
    { id: 'report', kind: 'sql', needs: ['load'] },
  ],
  assets: [{ path: 'sql/report.sql', size: 23, digest: 'b'.repeat(64) }],
};

const source = [
  'name: sales-report',
  'assets:',
  '  - sql/report.sql',
  '  - data/regions.csv',
  'steps: []',
  '',
].join('\n');

async function writeWorkflow(): Promise<string> {
  await fs.mkdir(path.join(dir, 'flows', 'sql'), { recursive: true });
  await fs.mkdir(path.join(dir, 'flows', 'data'), { recursive: true });
  await fs.writeFile(path.join(dir, 'flows', 'sql', 'report.sql'), 'select * from sales;\n');
  await fs.writeFile(path.join(dir, 'flows', 'data', 'regions.csv'), Buffer.from([0x6e, 0x0a, 0xff, 0x00]));
  const file = path.join(dir, 'flows', 'sales.yaml');
  await fs.writeFile(file, source);
  return file;
}

describe('steward workflow push', () => {
  it('sends the source and every listed asset base64-encoded, relative to the workflow file', async () => {
    server.on('POST', '/api/workflows', (_request, response) => sendJson(response, 201, workflowVersion));
    const file = await writeWorkflow();
    const run = await runCli(cliBin, ['workflow', 'push', file], { configHome: dir, env, cwd: dir });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toBe('pushed alice/sales-report@3\n');
    const body = JSON.parse(server.calls('POST', '/api/workflows')[0]!.body) as Record<string, unknown>;
    expect(body).toEqual({
      source,
      fileName: 'sales.yaml',
      assets: {
        'sql/report.sql': Buffer.from('select * from sales;\n').toString('base64'),
        'data/regions.csv': Buffer.from([0x6e, 0x0a, 0xff, 0x00]).toString('base64'),
      },
    });
  });

  it('prints every validation issue of a 422 and exits 1', async () => {
    server.on('POST', '/api/workflows', (_request, response) =>
      sendJson(response, 422, {
        error: {
          code: 'STEWARD_WORKFLOW_INVALID',
          message: 'workflow sales-report has 2 problems',
          details: {
            issues: [
              { path: 'steps.2.sql', line: 14, message: 'unknown table "salez"' },
              { path: 'params.since.default', message: 'expected a date like 2026-01-31, got "yesterday"' },
              { field: 'body.assets.x.csv', rule: 'listed_asset', message: 'not listed in the workflow' },
            ],
          },
        },
      }),
    );
    const file = await writeWorkflow();
    const run = await runCli(cliBin, ['workflow', 'push', file], { configHome: dir, env });
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe(
      [
        'steward: STEWARD_WORKFLOW_INVALID: workflow sales-report has 2 problems',
        '  steps.2.sql (line 14): unknown table "salez"',
        '  params.since.default: expected a date like 2026-01-31, got "yesterday"',
        '  body.assets.x.csv: not listed in the workflow',
        '',
      ].join('\n'),
    );
  });

  it.each([['../secret.txt'], ['/etc/passwd'], ['sql/../../x']])(
    'refuses the asset path %s without sending anything',
    async (hostile) => {
      const file = path.join(dir, 'flow.yaml');
      await fs.writeFile(file, `name: x\nassets:\n  - ${hostile}\nsteps: []\n`);
      const run = await runCli(cliBin, ['workflow', 'push', file], { configHome: dir, env });
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/^steward: STEWARD_WORKFLOW_INVALID: asset .*\n$/);
      expect(server.requests).toEqual([]);
    },
  );

  it('still sends a source that does not parse, so the server can report where', async () => {
    server.on('POST', '/api/workflows', (_request, response) =>
      sendJson(response, 422, {
        error: {
          code: 'STEWARD_WORKFLOW_INVALID',
          message: 'bad YAML',
          details: { issues: [{ path: '', line: 1, message: 'unexpected ":"' }] },
        },
      }),
    );
    const file = path.join(dir, 'broken.yaml');
    await fs.writeFile(file, 'name: [unclosed\n');
    const run = await runCli(cliBin, ['workflow', 'push', file], { configHome: dir, env });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('  (line 1): unexpected ":"\n');
    expect(JSON.parse(server.calls('POST', '/api/workflows')[0]!.body)).toEqual({
      source: 'name: [unclosed\n',
      fileName: 'broken.yaml',
      assets: {},
    });
  });
});

describe('steward workflow show', () => {
  it('shows parameters with types and defaults, and steps; --source prints the source', async () => {
    server.on('GET', '/api/workflows/sales-report/versions/3', (_request, response) =>
      sendJson(response, 200, { ...workflowVersion, source, format: 'yaml' }),
    );
    const run = await runCli(cliBin, ['workflow', 'show', 'sales-report@3'], { configHome: dir, env });
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('alice/sales-report@3  Monthly sales');
    expect(run.stdout).toMatch(/since\s+date\s+no\s+"2026-01-01"/);
    expect(run.stdout).toMatch(/report\s+sql\s+load/);
    const sourceRun = await runCli(cliBin, ['workflow', 'show', 'sales-report@3', '--source'], {
      configHome: dir,
      env,
    });
    expect(sourceRun.stdout).toBe(source);
  });
});

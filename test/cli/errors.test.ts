import { promises as fs } from 'node:fs';
import net from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ServerDouble, cliBin, runCli, sendJson, tempDirFor } from './harness.js';

let dir: string;

beforeEach(async (context) => {
  dir = await tempDirFor(context.task.name);
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

/** A port that was free a moment ago and has nothing listening on it now. */
async function closedPort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as net.AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

describe('errors', () => {
  it('reports an unreachable server as one line with its code and no stack trace', async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    const run = await runCli(cliBin, ['jobs'], {
      configHome: dir,
      env: { STEWARD_SERVER: url, STEWARD_TOKEN: 't' },
    });
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe(
      `steward: STEWARD_SERVER_UNREACHABLE: cannot reach ${url} (connection refused)\n`,
    );
  });

  it('shows the stack trace of an unreachable server only with --debug', async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    const run = await runCli(cliBin, ['--debug', 'jobs'], {
      configHome: dir,
      env: { STEWARD_SERVER: url, STEWARD_TOKEN: 't' },
    });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(
      `steward: STEWARD_SERVER_UNREACHABLE: cannot reach ${url} (connection refused)\n`,
    );
    expect(run.stderr).toMatch(/\n\s+at /);
  });

  it('prints the server error code and message on one line', async () => {
    const server = await ServerDouble.start();
    try {
      server.on('GET', '/api/jobs/01JNOPE', (_request, response) =>
        sendJson(response, 404, { error: { code: 'STEWARD_NOT_FOUND', message: 'job 01JNOPE not found' } }),
      );
      const run = await runCli(cliBin, ['job', '01JNOPE'], {
        configHome: dir,
        env: { STEWARD_SERVER: server.url, STEWARD_TOKEN: 't' },
      });
      expect(run.code).toBe(1);
      expect(run.stderr).toBe('steward: STEWARD_NOT_FOUND: job 01JNOPE not found\n');
    } finally {
      await server.close();
    }
  });

  it('tells a user who never logged in to run steward login', async () => {
    const run = await runCli(cliBin, ['workflow', 'list'], { configHome: dir });
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(
      'steward: STEWARD_UNAUTHENTICATED: not logged in: run `steward login --server URL --user NAME` (or set STEWARD_SERVER and STEWARD_TOKEN)\n',
    );
  });

  it.each([
    [['jobs', '--bogus']],
    [['run']],
    [['run', 'sales-report', '-p', 'novalue']],
    [['run', 'Not A Workflow']],
    [['jobs', '--state', 'sleeping']],
    [['jobs', '--limit', 'many']],
    [['frobnicate']],
    [[]],
  ])('exits 2 for the usage error %j without contacting a server', async (args) => {
    const run = await runCli(cliBin, args, {
      configHome: dir,
      env: { STEWARD_SERVER: 'http://127.0.0.1:1', STEWARD_TOKEN: 't' },
    });
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).not.toMatch(/\n\s+at /);
    if (args.length > 0) expect(run.stderr).toMatch(/^steward: /);
  });

  it('exits 0 for --help and --version', async () => {
    const help = await runCli(cliBin, ['--help'], { configHome: dir });
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Usage: steward');
    const version = await runCli(cliBin, ['--version'], { configHome: dir });
    expect(version.code).toBe(0);
    expect(version.stdout).toMatch(/^\d+\.\d+\.\d+/);
  });
});

import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ServerDouble, bearer, cliBin, runCli, sendJson, tempDirFor } from './harness.js';

let server: ServerDouble;
let configHome: string;

beforeEach(async (context) => {
  configHome = await tempDirFor(context.task.name);
  server = await ServerDouble.start();
  server.on('POST', '/api/auth/login', (request, response) => {
    const body = JSON.parse(request.body) as { user: string; password: string };
    if (body.password !== 'correct horse')
      return sendJson(response, 401, {
        error: { code: 'STEWARD_UNAUTHENTICATED', message: 'wrong user name or password' },
      });
    sendJson(response, 200, {
      token: `token-for-${body.user}`,
      user: body.user,
      role: 'user',
      expiresAt: '2026-11-29T10:00:00.000Z',
    });
  });
  server.on('GET', '/api/jobs', (request, response) =>
    sendJson(response, 200, { jobs: [], next: null, seenToken: bearer(request) }),
  );
});
afterEach(async () => {
  await server.close();
  await fs.rm(configHome, { recursive: true, force: true });
});

const credentialsFile = (): string => path.join(configHome, 'steward', 'credentials.json');

describe('steward login', () => {
  it('stores the token with mode 0600 in a 0700 directory and sends the password without its trailing newline', async () => {
    const run = await runCli(
      cliBin,
      ['login', '--server', server.url, '--user', 'alice', '--password-stdin'],
      { configHome, input: 'correct horse\n' },
    );
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`logged in to ${server.url} as alice`);
    expect(JSON.parse(server.calls('POST', '/api/auth/login')[0]!.body)).toEqual({
      user: 'alice',
      password: 'correct horse',
    });

    expect((await fs.stat(path.dirname(credentialsFile()))).mode & 0o777).toBe(0o700);
    expect((await fs.stat(credentialsFile())).mode & 0o777).toBe(0o600);
    const stored = JSON.parse(await fs.readFile(credentialsFile(), 'utf8')) as unknown;
    expect(stored).toEqual({
      current: server.url,
      servers: { [server.url]: { server: server.url, user: 'alice', token: 'token-for-alice' } },
    });
    expect(await fs.readdir(path.dirname(credentialsFile()))).toEqual(['credentials.json']);
  });

  it('tightens an existing credentials directory and file that are too open', async () => {
    await fs.mkdir(path.join(configHome, 'steward'), { mode: 0o755 });
    await fs.chmod(path.join(configHome, 'steward'), 0o755);
    await fs.writeFile(credentialsFile(), JSON.stringify({ current: null, servers: {} }), { mode: 0o644 });
    await fs.chmod(credentialsFile(), 0o644);
    const run = await runCli(
      cliBin,
      ['login', '--server', server.url, '--user', 'alice', '--password-stdin'],
      { configHome, input: 'correct horse' },
    );
    expect(run.code).toBe(0);
    expect((await fs.stat(path.dirname(credentialsFile()))).mode & 0o777).toBe(0o700);
    expect((await fs.stat(credentialsFile())).mode & 0o777).toBe(0o600);
  });

  it('uses the stored token for later commands against the current server', async () => {
    await runCli(cliBin, ['login', '--server', server.url, '--user', 'alice', '--password-stdin'], {
      configHome,
      input: 'correct horse\n',
    });
    const run = await runCli(cliBin, ['jobs', '--json'], { configHome });
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout)).toEqual({ jobs: [], next: null });
    expect(bearer(server.calls('GET', '/api/jobs')[0]!)).toBe('token-for-alice');
  });

  it('reports a wrong password as one line with the server code and writes no credentials', async () => {
    const run = await runCli(
      cliBin,
      ['login', '--server', server.url, '--user', 'alice', '--password-stdin'],
      { configHome, input: 'nope\n' },
    );
    expect(run.code).toBe(1);
    expect(run.stderr).toBe('steward: STEWARD_UNAUTHENTICATED: wrong user name or password\n');
    await expect(fs.stat(credentialsFile())).rejects.toThrow();
  });

  it('refuses to prompt for a password without a terminal, as a usage error', async () => {
    const run = await runCli(cliBin, ['login', '--server', server.url, '--user', 'alice'], { configHome });
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^steward: .*--password-stdin\n$/);
    expect(server.requests).toEqual([]);
  });

  it('forgets the stored token on logout', async () => {
    await runCli(cliBin, ['login', '--server', server.url, '--user', 'alice', '--password-stdin'], {
      configHome,
      input: 'correct horse\n',
    });
    const logout = await runCli(cliBin, ['logout'], { configHome });
    expect(logout.code).toBe(0);
    expect(JSON.parse(await fs.readFile(credentialsFile(), 'utf8'))).toEqual({ current: null, servers: {} });
    const after = await runCli(cliBin, ['jobs'], { configHome });
    expect(after.code).toBe(1);
    expect(after.stderr).toMatch(/^steward: STEWARD_UNAUTHENTICATED: not logged in.*steward login/);
  });
});

describe('STEWARD_SERVER and STEWARD_TOKEN', () => {
  it('work without any credentials file', async () => {
    const run = await runCli(cliBin, ['jobs', '--json'], {
      configHome,
      env: { STEWARD_SERVER: server.url, STEWARD_TOKEN: 'env-token' },
    });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(bearer(server.calls('GET', '/api/jobs')[0]!)).toBe('env-token');
    await expect(fs.stat(credentialsFile())).rejects.toThrow();
  });

  it('take precedence over the stored login', async () => {
    const other = await ServerDouble.start();
    try {
      other.on('GET', '/api/jobs', (_request, response) => sendJson(response, 200, { jobs: [], next: null }));
      await runCli(cliBin, ['login', '--server', server.url, '--user', 'alice', '--password-stdin'], {
        configHome,
        input: 'correct horse\n',
      });
      const run = await runCli(cliBin, ['jobs'], {
        configHome,
        env: { STEWARD_SERVER: other.url, STEWARD_TOKEN: 'env-token' },
      });
      expect(run.code).toBe(0);
      expect(server.calls('GET', '/api/jobs')).toEqual([]);
      expect(bearer(other.calls('GET', '/api/jobs')[0]!)).toBe('env-token');

      const tokenOnly = await runCli(cliBin, ['jobs'], {
        configHome,
        env: { STEWARD_TOKEN: 'env-token-2' },
      });
      expect(tokenOnly.code).toBe(0);
      expect(bearer(server.calls('GET', '/api/jobs')[0]!)).toBe('env-token-2');
    } finally {
      await other.close();
    }
  });

  it('asks the user to log in again when the server rejects the token', async () => {
    server.on('GET', '/api/me', (_request, response) =>
      sendJson(response, 401, { error: { code: 'STEWARD_UNAUTHENTICATED', message: 'token expired' } }),
    );
    server.on('GET', '/api/agents', (_request, response) =>
      sendJson(response, 401, { error: { code: 'STEWARD_UNAUTHENTICATED', message: 'token expired' } }),
    );
    const run = await runCli(cliBin, ['agents'], {
      configHome,
      env: { STEWARD_SERVER: server.url, STEWARD_TOKEN: 'old' },
    });
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(
      /^steward: STEWARD_UNAUTHENTICATED: token expired \(run `steward login .*\)\n$/,
    );
  });
});

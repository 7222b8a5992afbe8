import { promises as fs } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  ServerDouble,
  cliBin,
  makeDetail,
  makeJob,
  runCli,
  sendJson,
  sseEvent,
  tempDirFor,
} from './harness.js';

let server: ServerDouble;
let dir: string;
let env: Record<string, string>;
const jobId = '01JTESTJOB0000000000000001';

beforeEach(async (context) => {
  dir = await tempDirFor(context.task.name);
  server = await ServerDouble.start();
  env = { STEWARD_SERVER: server.url, STEWARD_TOKEN: 'admin-token' };
});
afterEach(async () => {
  await server.close();
  await fs.rm(dir, { recursive: true, force: true });
});

describe('steward user and token', () => {
  it('creates a user with the password from stdin, without its trailing newline', async () => {
    server.on('POST', '/api/users', (request, response) => {
      const body = JSON.parse(request.body) as { name: string; role: string };
      sendJson(response, 201, {
        name: body.name,
        role: body.role,
        createdAt: '2026-11-22T10:00:00.000Z',
        disabled: false,
        source: 'local',
        deletedAt: null,
      });
    });
    const run = await runCli(cliBin, ['user', 'add', 'bob', '--role', 'admin', '--password-stdin'], {
      configHome: dir,
      env,
      input: 'a long password\n',
    });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toBe('created user bob (admin)\n');
    expect(JSON.parse(server.calls('POST', '/api/users')[0]!.body)).toEqual({
      name: 'bob',
      password: 'a long password',
      role: 'admin',
    });
  });

  it('prints a new token once on stdout and its details on stderr', async () => {
    server.on('POST', '/api/tokens', (_request, response) =>
      sendJson(response, 201, {
        id: 'tok1',
        name: 'ci',
        user: 'admin',
        createdAt: '2026-11-22T10:00:00.000Z',
        expiresAt: '2026-12-22T10:00:00.000Z',
        lastUsedAt: null,
        token: 'stw_secret',
      }),
    );
    const run = await runCli(cliBin, ['token', 'create', 'ci', '--days', '30'], { configHome: dir, env });
    expect(run.code).toBe(0);
    expect(run.stdout).toBe('stw_secret\n');
    expect(run.stderr).toContain('shown only this once');
    expect(JSON.parse(server.calls('POST', '/api/tokens')[0]!.body)).toEqual({
      name: 'ci',
      expiresInDays: 30,
    });
  });

  it('lists users, tokens and agents as aligned tables and as JSON', async () => {
    server.on('GET', '/api/users', (_request, response) =>
      sendJson(response, 200, {
        users: [
          {
            name: 'alice',
            role: 'admin',
            createdAt: '2026-11-22T10:00:00.000Z',
            disabled: false,
            source: 'local',
            deletedAt: null,
          },
          {
            name: 'bob',
            role: 'user',
            createdAt: '2026-11-22T10:00:00.000Z',
            disabled: true,
            source: 'ldap',
            deletedAt: null,
          },
        ],
      }),
    );
    server.on('GET', '/api/agents', (_request, response) =>
      sendJson(response, 200, {
        agents: [
          {
            id: 'node-7',
            labels: ['gpu'],
            cluster: 'local',
            isolation: 'per-user',
            lastSeen: '2026-11-22T10:00:00.000Z',
            capacity: { slots: 8, free: 6 },
            executors: [
              { user: 'alice', uid: 1001, pid: 99, jobs: 2, idleSinceMs: null, rssBytes: 1048576 },
              // idleSinceMs is when it became idle (epoch ms), not for how long.
              {
                user: 'bob',
                uid: 1002,
                pid: 100,
                jobs: 0,
                idleSinceMs: Date.now() - 125_000,
                rssBytes: null,
              },
            ],
            draining: false,
          },
        ],
      }),
    );
    const users = await runCli(cliBin, ['user', 'list'], { configHome: dir, env });
    const lines = users.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+ROLE\s+SOURCE\s+CREATED\s+STATE$/);
    expect(lines[1]).toMatch(/^alice\s+admin\s+local\s+.+\s+enabled$/);
    expect(lines[2]).toMatch(/^bob\s+user\s+ldap\s+.+\s+disabled$/);
    // Aligned: the last column starts at the same position on every line.
    expect(new Set(lines.map((line) => line.search(/\S+$/))).size).toBe(1);
    const agents = await runCli(cliBin, ['agents', '--json'], { configHome: dir, env });
    expect(JSON.parse(agents.stdout)).toMatchObject({ agents: [{ id: 'node-7', capacity: { free: 6 } }] });
    const agentTable = await runCli(cliBin, ['agents'], { configHome: dir, env });
    // An agent that is not draining is shown active.
    expect(agentTable.stdout).toMatch(
      /node-7\s+active\s+gpu\s+per-user\s+6\/8\s+alice\(pid 99, 2 jobs, 1\.0 MiB\) bob\(pid 100, 0 jobs, idle 2m0[5-9]s\)/,
    );
  });
});

describe('steward user passwd, role and whoami (client side)', () => {
  function meIs(user: string, role: 'admin' | 'user' = 'user'): void {
    server.on('GET', '/api/me', (_request, response) => sendJson(response, 200, { user, role }));
  }

  it('sends the current and the new password, read one a line from stdin, for your own password', async () => {
    meIs('alice');
    server.on('PUT', '/api/users/alice/password', (_request, response) => {
      response.writeHead(204).end();
    });
    const run = await runCli(cliBin, ['user', 'passwd', '--password-stdin'], {
      configHome: dir,
      env,
      input: 'old password\nnew password\n',
    });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toBe('password changed; your other login sessions were ended\n');
    expect(JSON.parse(server.calls('PUT', '/api/users/alice/password')[0]!.body)).toEqual({
      currentPassword: 'old password',
      password: 'new password',
    });
  });

  it('sends only the new password for an admin reset of another user', async () => {
    meIs('admin', 'admin');
    server.on('PUT', '/api/users/bob/password', (_request, response) => {
      response.writeHead(204).end();
    });
    const run = await runCli(cliBin, ['user', 'passwd', 'bob', '--password-stdin'], {
      configHome: dir,
      env,
      input: 'reset password\n',
    });
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(server.calls('PUT', '/api/users/bob/password')[0]!.body)).toEqual({
      password: 'reset password',
    });
  });

  it('refuses, as usage errors sending nothing, one line for your own password, a short one, and an unknown role', async () => {
    meIs('alice');
    const oneLine = await runCli(cliBin, ['user', 'passwd', '--password-stdin'], {
      configHome: dir,
      env,
      input: 'only the new one\n',
    });
    expect(oneLine.code).toBe(2);
    expect(oneLine.stderr).toMatch(/expected 2 passwords, one a line/);
    const short = await runCli(cliBin, ['user', 'passwd', '--password-stdin'], {
      configHome: dir,
      env,
      input: 'old password\nshort\n',
    });
    expect(short.code).toBe(2);
    expect(short.stderr).toMatch(/at least 8 characters/);
    const role = await runCli(cliBin, ['user', 'role', 'bob', 'root'], { configHome: dir, env });
    expect(role.code).toBe(2);
    expect(role.stderr).toMatch(/expected "admin" or "user", got "root"/);
    expect(server.calls('PUT', '/api/users/alice/password')).toEqual([]);
  });

  it("refuses to change an LDAP user's own password before asking for any, sending nothing", async () => {
    server.on('GET', '/api/me', (_request, response) =>
      sendJson(response, 200, { user: 'dora', role: 'user', source: 'ldap' }),
    );
    const run = await runCli(cliBin, ['user', 'passwd'], { configHome: dir, env });
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^steward: STEWARD_USER_IN_DIRECTORY: dora is an LDAP user/);
    expect(server.calls('PUT', '/api/users/dora/password')).toEqual([]);
  });

  it('prints the server refusal of the last admin as one line with its code, exit 1', async () => {
    server.on('POST', '/api/users/admin/disable', (_request, response) =>
      sendJson(response, 409, {
        error: { code: 'STEWARD_LAST_ADMIN', message: 'cannot disable admin: it is the last enabled admin' },
      }),
    );
    const run = await runCli(cliBin, ['user', 'disable', 'admin'], { configHome: dir, env });
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(
      'steward: STEWARD_LAST_ADMIN: cannot disable admin: it is the last enabled admin\n',
    );
  });

  it('shows who you are, also when the server leaves out the source and token (their records gone)', async () => {
    meIs('alice');
    const run = await runCli(cliBin, ['whoami'], { configHome: dir, env });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe(`alice (user) at ${server.url}\n`);
  });
});

describe('steward cancel', () => {
  it('requests the cancel and, with --wait, exits 0 once the job has ended canceled', async () => {
    server.on('POST', `/api/jobs/${jobId}/cancel`, (_request, response) =>
      sendJson(response, 200, makeJob({ state: 'running' })),
    );
    server.on('GET', `/api/jobs/${jobId}/events`, (_request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.end(
        sseEvent('snapshot', makeDetail({ state: 'running' })) +
          sseEvent('end', makeDetail({ state: 'canceled', finishedAt: '2026-11-22T10:00:09.000Z' })),
      );
    });
    const plain = await runCli(cliBin, ['cancel', jobId], { configHome: dir, env });
    expect(plain.code).toBe(0);
    expect(plain.stdout).toBe(`cancel requested for job ${jobId} (now running)\n`);
    const waited = await runCli(cliBin, ['cancel', jobId, '--wait', '--json'], { configHome: dir, env });
    expect(waited.code).toBe(0);
    expect(JSON.parse(waited.stdout)).toMatchObject({ id: jobId, state: 'canceled' });
  });

  it('reports a job that already ended with the server code', async () => {
    server.on('POST', `/api/jobs/${jobId}/cancel`, (_request, response) =>
      sendJson(response, 409, {
        error: { code: 'STEWARD_JOB_NOT_CANCELABLE', message: `job ${jobId} already succeeded` },
      }),
    );
    const run = await runCli(cliBin, ['cancel', jobId], { configHome: dir, env });
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(`steward: STEWARD_JOB_NOT_CANCELABLE: job ${jobId} already succeeded\n`);
  });
});

describe('steward jobs', () => {
  it('passes the filters as query parameters and prints a table', async () => {
    server.on('GET', '/api/jobs', (_request, response) =>
      sendJson(response, 200, {
        jobs: [
          makeJob({
            state: 'succeeded',
            startedAt: '2026-11-22T10:00:00.000Z',
            finishedAt: '2026-11-22T10:04:05.000Z',
          }),
        ],
        next: null,
      }),
    );
    const run = await runCli(
      cliBin,
      ['jobs', '--state', 'succeeded', '--user', 'alice', '--workflow', 'sales-report', '--limit', '5'],
      { configHome: dir, env },
    );
    expect(run.code).toBe(0);
    expect(Object.fromEntries(server.calls('GET', '/api/jobs')[0]!.query)).toEqual({
      state: 'succeeded',
      user: 'alice',
      workflow: 'sales-report',
      limit: '5',
    });
    expect(run.stdout).toMatch(/^ID\s+WORKFLOW\s+USER\s+STATE\s+CREATED\s+DURATION\n/);
    expect(run.stdout).toMatch(
      new RegExp(
        `${jobId}\\s+alice/sales-report@3\\s+alice\\s+succeeded\\s+\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\s+4m05s\\n$`,
      ),
    );
  });
});

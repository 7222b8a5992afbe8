import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ADMIN_PASSWORD, bodyOf, errorOf, issuesOf, startHarness, type Harness } from './harness.js';

describe('authentication and roles', () => {
  let h: Harness;
  beforeEach(async (context) => {
    h = await startHarness({ title: context.task.name });
  });
  afterEach(async () => {
    await h.dispose();
  });

  it('creates admin with the given password on first start and lets it log in', async () => {
    expect(h.server.generatedAdminPassword).toBeUndefined();
    const login = await h.raw({
      method: 'POST',
      url: '/api/auth/login',
      body: { user: 'admin', password: ADMIN_PASSWORD },
    });
    expect(login.status).toBe(200);
    const session = bodyOf('login', login);
    expect(session).toMatchObject({ user: 'admin', role: 'admin' });
    expect(session.token).toMatch(/^stw_[A-Za-z0-9_-]{43}$/);
    const me = await h.call('me', { token: session.token });
    expect(me).toMatchObject({
      user: 'admin',
      role: 'admin',
      source: 'local',
      token: { kind: 'login' },
    });
  });

  it('refuses a wrong password and an unknown user with the same 401 and audits both', async () => {
    const bad = await h.raw({
      method: 'POST',
      url: '/api/auth/login',
      body: { user: 'admin', password: 'nope' },
    });
    const unknown = await h.raw({
      method: 'POST',
      url: '/api/auth/login',
      body: { user: 'ghost', password: 'nope' },
    });
    for (const response of [bad, unknown]) {
      expect(response.status).toBe(401);
      expect(response.json).toEqual({
        error: { code: 'STEWARD_UNAUTHENTICATED', message: 'wrong user name or password' },
      });
    }
    const entries = await h.server.store.listAudit({ action: 'login.failed', limit: 10 });
    expect(entries.map((e) => [e.actor, e.detail?.reason])).toEqual([
      ['ghost', 'unknown user'],
      ['admin', 'bad password'],
    ]);
    expect(entries[0]?.source).toBe('127.0.0.1');
  });

  it('refuses requests without a token or with a made-up one', async () => {
    expect(errorOf(await h.raw({ method: 'GET', url: '/api/me' })).code).toBe('STEWARD_UNAUTHENTICATED');
    const forged = await h.raw({ method: 'GET', url: '/api/me', token: 'stw_' + 'A'.repeat(43) });
    expect(forged.status).toBe(401);
  });

  it('refuses a disabled user at login and with a token issued before it was disabled', async () => {
    const token = await h.userToken('alice');
    await h.server.store.setUserDisabled('alice', true);
    expect((await h.raw({ method: 'GET', url: '/api/me', token })).status).toBe(401);
    const login = await h.raw({
      method: 'POST',
      url: '/api/auth/login',
      body: { user: 'alice', password: 'password-of-alice' },
    });
    expect(login.status).toBe(401);
    expect(errorOf(login).message).toBe(
      'this user is disabled; an admin can enable it (`steward user enable NAME`)',
    );
  });

  it('expires login tokens after the session lifetime', async () => {
    await h.dispose();
    let now = Date.now();
    h = await startHarness({ title: 'expiry', config: { sessionTtl: '1h' }, clock: () => now });
    const token = await h.adminToken();
    now += 3_600_000 - 1;
    expect((await h.raw({ method: 'GET', url: '/api/me', token })).status).toBe(200);
    now += 1;
    const expired = await h.raw({ method: 'GET', url: '/api/me', token });
    expect(expired.status).toBe(401);
    expect(errorOf(expired).message).toBe('invalid or expired token');
  });

  it('creates, lists and revokes named API tokens without ever listing their secrets', async () => {
    const session = await h.userToken('alice');
    const created = await h.raw({
      method: 'POST',
      url: '/api/tokens',
      token: session,
      body: { name: 'ci', expiresInDays: 30 },
    });
    expect(created.status).toBe(201);
    const { token: apiToken, id: tokenId, expiresAt } = bodyOf('createToken', created);
    expect(apiToken).toMatch(/^stw_/);
    expect(Date.parse(expiresAt ?? '') - Date.now()).toBeGreaterThan(29 * 86_400_000);
    expect((await h.call('me', { token: apiToken })).user).toBe('alice');
    const list = await h.raw({ method: 'GET', url: '/api/tokens', token: session });
    expect(bodyOf('listTokens', list).tokens).toHaveLength(1);
    expect(list.text).not.toContain(apiToken);
    const bob = await h.userToken('bob');
    expect((await h.raw({ method: 'DELETE', url: `/api/tokens/${tokenId}`, token: bob })).status).toBe(404);
    expect((await h.raw({ method: 'DELETE', url: `/api/tokens/${tokenId}`, token: session })).status).toBe(
      204,
    );
    expect((await h.raw({ method: 'GET', url: '/api/me', token: apiToken })).status).toBe(401);
    const actions = (await h.server.store.listAudit({ actor: 'alice', limit: 20 })).map((e) => e.action);
    expect(actions).toEqual(expect.arrayContaining(['token.create', 'token.revoke', 'login']));
  });

  it('keeps admin routes for admins and audits a user who tries one', async () => {
    const alice = await h.userToken('alice');
    const denied = await h.raw({ method: 'GET', url: '/api/users', token: alice });
    expect(denied.status).toBe(403);
    expect(errorOf(denied).code).toBe('STEWARD_FORBIDDEN');
    expect((await h.raw({ method: 'GET', url: '/api/audit', token: alice })).status).toBe(403);
    const forbidden = await h.server.store.listAudit({ action: 'forbidden', limit: 10 });
    expect(forbidden.map((e) => e.target)).toEqual(['GET /api/audit', 'GET /api/users']);
    const admin = await h.adminToken();
    const users = await h.raw({ method: 'GET', url: '/api/users', token: admin });
    expect(bodyOf('listUsers', users).users.map((u) => u.name)).toEqual(['admin', 'alice']);
    const audit = await h.raw({ method: 'GET', url: '/api/audit?action=user.create', token: admin });
    expect(bodyOf('listAudit', audit).entries.map((e) => e.target)).toEqual(['alice', 'admin']);
  });

  it('refuses a second user with a taken name with 409', async () => {
    const admin = await h.adminToken();
    await h.userToken('alice');
    const again = await h.raw({
      method: 'POST',
      url: '/api/users',
      token: admin,
      body: { name: 'alice', password: 'another-password' },
    });
    expect(again.status).toBe(409);
    expect(errorOf(again).code).toBe('STEWARD_CONFLICT');
  });

  it('generates an admin password on first start when none is given and reports it once', async () => {
    await h.dispose();
    h = await startHarness({ title: 'generated', adminPassword: undefined });
    const password = h.server.generatedAdminPassword;
    expect(password).toMatch(/^[A-Za-z0-9_-]{24}$/);
    expect(await h.login('admin', password!)).toMatch(/^stw_/);
    await h.stop();
    await h.restart();
    expect(h.server.generatedAdminPassword).toBeUndefined();
    expect(await h.login('admin', password!)).toMatch(/^stw_/);
  });
});

describe('request validation', () => {
  let h: Harness;
  beforeEach(async (context) => {
    h = await startHarness({ title: context.task.name });
  });
  afterEach(async () => {
    await h.dispose();
  });

  it('answers a schema violation with 400 naming the field, the rule and the value', async () => {
    const admin = await h.adminToken();
    const response = await h.raw({
      method: 'POST',
      url: '/api/users',
      token: admin,
      body: { name: 'Bad Name', password: 'long-enough' },
    });
    expect(response.status).toBe(400);
    expect(errorOf(response).code).toBe('STEWARD_BAD_REQUEST');
    expect(errorOf(response).message).toMatch(/^body\.name: .*got "Bad Name"$/);
    expect(issuesOf(response)[0]).toMatchObject({
      field: 'body.name',
      rule: 'invalid_format',
      value: 'Bad Name',
    });
  });

  it('names unknown fields and never echoes a password', async () => {
    const admin = await h.adminToken();
    const response = await h.raw({
      method: 'POST',
      url: '/api/users',
      token: admin,
      body: { name: 'carol', password: 'short', extra: 1 },
    });
    expect(response.status).toBe(400);
    const fields = issuesOf(response).map((i) => i.field);
    expect(fields).toEqual(['body.password', 'body.extra']);
    expect(response.text).not.toContain('short');
    expect(issuesOf(response)[1]).toEqual({
      field: 'body.extra',
      rule: 'unrecognized_keys',
      message: 'unknown field',
    });
  });

  it('validates query strings with the same error shape', async () => {
    const admin = await h.adminToken();
    const response = await h.raw({ method: 'GET', url: '/api/jobs?limit=0', token: admin });
    expect(response.status).toBe(400);
    expect(errorOf(response).message).toMatch(/^query\.limit: .*got "0"$/);
  });

  it('answers malformed JSON and unknown routes in the error shape without a stack trace', async () => {
    const bad = await h.raw({
      method: 'POST',
      url: '/api/auth/login',
      payload: '{"user":',
      headers: { 'content-type': 'application/json' },
    });
    expect(bad.status).toBe(400);
    expect(errorOf(bad).code).toBe('STEWARD_BAD_REQUEST');
    expect(bad.text).not.toMatch(/at .*\.js:\d+/);
    const missing = await h.raw({ method: 'GET', url: '/api/nothing' });
    expect(missing.status).toBe(404);
    expect(errorOf(missing).code).toBe('STEWARD_NOT_FOUND');
  });

  it('answers health checks without credentials', async () => {
    const health = await h.raw({ method: 'GET', url: '/api/health' });
    expect(health.status).toBe(200);
    expect(bodyOf('health', health)).toMatchObject({ status: 'ok', version: '0.1.0' });
    expect(Date.parse(bodyOf('health', health).time)).not.toBeNaN();
  });
});

/**
 * Portal sessions on a real server and store: the cookie's flags, sign-out, revocation by disabling and by a
 * password change, expiry, and the CSRF defence of every state-changing request the cookie authenticates.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { AuditList, ErrorResponse, Job, JobList, SessionInfo } from '../../src/protocol/index.js';
import { CONTENT_SECURITY_POLICY } from '../../src/server/portal.js';
import { errorOf, REPORT_WORKFLOW, startHarness, type Harness } from './harness.js';

interface SignedIn {
  status: number;
  json: unknown;
  /** The session, when the sign-in succeeded. */
  info: SessionInfo | undefined;
  /** `steward_session=…`, for a Cookie header. */
  cookie: string;
  setCookie: string;
}

async function signIn(
  h: Harness,
  name: string,
  password: string,
  headers: Record<string, string> = {},
): Promise<SignedIn> {
  const response = await h.server.app.inject({
    method: 'POST',
    url: '/api/auth/session',
    payload: { name, password },
    headers,
  });
  const setCookie = [response.headers['set-cookie'] ?? []].flat().join('\n');
  const session = response.cookies.find((cookie) => cookie.name === 'steward_session');
  return {
    status: response.statusCode,
    json: response.json(),
    info: response.statusCode === 200 ? SessionInfo.parse(response.json()) : undefined,
    cookie: session ? `steward_session=${session.value}` : '',
    setCookie,
  };
}

/** A request as the portal's page would send it: the cookie, and the CSRF token when given. */
async function withCookie(
  h: Harness,
  method: 'GET' | 'POST' | 'PUT' | 'DELETE',
  url: string,
  cookie: string,
  options: { csrf?: string; headers?: Record<string, string>; body?: unknown } = {},
) {
  return h.raw({
    method,
    url,
    headers: {
      cookie,
      ...(options.csrf !== undefined ? { 'x-csrf-token': options.csrf } : {}),
      ...options.headers,
    },
    ...(options.body !== undefined ? { body: options.body } : {}),
  });
}

const PASSWORD = 'password-of-papi-alice';

describe('portal sessions', () => {
  let h: Harness;
  afterEach(async () => {
    await h.dispose();
  });

  async function start(config: Record<string, unknown> = {}, clock?: () => number): Promise<string> {
    h = await startHarness({ title: 'papi sessions', config, ...(clock ? { clock } : {}) });
    const admin = await h.adminToken();
    const created = await h.raw({
      method: 'POST',
      url: '/api/users',
      token: admin,
      body: { name: 'papi-alice', password: PASSWORD },
    });
    expect(created.status).toBe(201);
    return admin;
  }

  it('signs in with an HttpOnly, SameSite=Strict cookie that works for reads, and no Secure flag over plain http', async () => {
    await start({ session: { ttl: '2h' } });
    const before = Date.now();
    const session = await signIn(h, 'papi-alice', PASSWORD);
    expect(session.status).toBe(200);
    expect(session.json).toMatchObject({ user: { name: 'papi-alice', role: 'user' } });
    expect(typeof session.info!.csrfToken).toBe('string');
    const expiresAt = Date.parse(session.info!.expiresAt);
    expect(expiresAt).toBeGreaterThanOrEqual(before + 2 * 3_600_000 - 1000);
    expect(expiresAt).toBeLessThanOrEqual(Date.now() + 2 * 3_600_000 + 1000);
    expect(session.setCookie).toMatch(/^steward_session=stw_[A-Za-z0-9_-]+;/);
    expect(session.setCookie).toContain('HttpOnly');
    expect(session.setCookie).toContain('SameSite=Strict');
    expect(session.setCookie).toContain('Path=/');
    expect(session.setCookie).not.toContain('Secure');

    // The reload path gives the same session and token back; /api/me says it is a session.
    const again = await withCookie(h, 'GET', '/api/auth/session', session.cookie);
    expect(again.status).toBe(200);
    expect(again.json).toEqual(session.json);
    const me = await withCookie(h, 'GET', '/api/me', session.cookie);
    expect(me.json).toMatchObject({ user: 'papi-alice', token: { kind: 'session' } });
    expect((await h.raw({ method: 'GET', url: '/api/auth/session' })).status).toBe(401);

    // The session secret is no bearer token, and a bearer token is no session cookie.
    const secret = session.cookie.slice('steward_session='.length);
    expect((await h.raw({ method: 'GET', url: '/api/me', token: secret })).status).toBe(401);
    const bearer = await h.login('papi-alice', PASSWORD);
    expect((await withCookie(h, 'GET', '/api/me', `steward_session=${bearer}`)).status).toBe(401);
  });

  it('marks the cookie Secure when the request came over https through a trusted proxy', async () => {
    await start({ trustProxy: ['127.0.0.1'] });
    const secure = await signIn(h, 'papi-alice', PASSWORD, { 'x-forwarded-proto': 'https' });
    expect(secure.status).toBe(200);
    expect(secure.setCookie).toContain('Secure');
    const plain = await signIn(h, 'papi-alice', PASSWORD);
    expect(plain.setCookie).not.toContain('Secure');
  });

  it('marks the cookie Secure when the public URL is https', async () => {
    await start({ publicUrl: 'https://steward.example.test' });
    const session = await signIn(h, 'papi-alice', PASSWORD, {
      origin: 'https://steward.example.test',
    });
    expect(session.status).toBe(200);
    expect(session.setCookie).toContain('Secure');
  });

  it('refuses a forged cross-site POST with the cookie, and accepts the portal’s own with its token', async () => {
    await start();
    const alice = await h.login('papi-alice', PASSWORD);
    expect(
      (
        await h.raw({
          method: 'POST',
          url: '/api/workflows',
          token: alice,
          body: { source: REPORT_WORKFLOW },
        })
      ).status,
    ).toBe(201);
    const session = await signIn(h, 'papi-alice', PASSWORD);
    const submit = { workflow: 'report', params: { region: 'emea' } };
    const refused = async (options: Parameters<typeof withCookie>[4]) => {
      const response = await withCookie(h, 'POST', '/api/jobs', session.cookie, { body: submit, ...options });
      expect(response.status).toBe(403);
      expect(errorOf(response).code).toBe('STEWARD_CSRF_REJECTED');
    };
    // What another site's page can send: the cookie (if the browser attaches it), no token, its own Origin.
    await refused({ headers: { origin: 'https://evil.example' } });
    await refused({});
    await refused({ csrf: 'not-the-token' });
    await refused({ csrf: session.info!.csrfToken, headers: { origin: 'https://evil.example' } });
    await refused({ csrf: session.info!.csrfToken, headers: { 'sec-fetch-site': 'cross-site' } });
    await refused({ csrf: session.info!.csrfToken, headers: { origin: 'null' } });
    // Another session's token does not fit this session.
    const other = await signIn(h, 'papi-alice', PASSWORD);
    await refused({ csrf: other.info!.csrfToken });
    const listed = await withCookie(h, 'GET', '/api/jobs', session.cookie);
    expect(listed.status).toBe(200);
    expect(JobList.parse(listed.json).jobs).toHaveLength(0);

    // The portal's own request: same origin, with the token.
    const accepted = await withCookie(h, 'POST', '/api/jobs', session.cookie, {
      body: submit,
      csrf: session.info!.csrfToken,
      headers: { origin: 'http://localhost:80', 'sec-fetch-site': 'same-origin', host: 'localhost:80' },
    });
    expect(accepted.status).toBe(201);
    expect(Job.parse(accepted.json).user).toBe('papi-alice');
    // Bearer requests (the CLI) need no token and are unaffected by an Origin.
    const cli = await h.raw({
      method: 'POST',
      url: '/api/jobs',
      token: alice,
      body: submit,
      headers: { origin: 'https://evil.example' },
    });
    expect(cli.status).toBe(201);

    const audit = await h.raw({
      method: 'GET',
      url: '/api/audit?action=csrf.refused',
      token: await h.adminToken(),
    });
    const { entries } = AuditList.parse(audit.json);
    expect(entries.length).toBeGreaterThanOrEqual(7);
    expect(entries[0]).toMatchObject({ actor: 'papi-alice', target: 'POST /api/jobs' });
  });

  it('refuses a sign-in posted from another origin', async () => {
    await start();
    const forged = await signIn(h, 'papi-alice', PASSWORD, { origin: 'https://evil.example' });
    expect(forged.status).toBe(403);
    expect(ErrorResponse.parse(forged.json).error.code).toBe('STEWARD_CSRF_REJECTED');
    expect(forged.setCookie).toBe('');
  });

  it('signs out only with the CSRF token, revoking the session and clearing the cookie', async () => {
    await start();
    const session = await signIn(h, 'papi-alice', PASSWORD);
    const forged = await withCookie(h, 'DELETE', '/api/auth/session', session.cookie);
    expect(forged.status).toBe(403);
    expect((await withCookie(h, 'GET', '/api/auth/session', session.cookie)).status).toBe(200);

    const out = await h.server.app.inject({
      method: 'DELETE',
      url: '/api/auth/session',
      headers: { cookie: session.cookie, 'x-csrf-token': session.info!.csrfToken },
    });
    expect(out.statusCode).toBe(204);
    const cleared = out.cookies.find((cookie) => cookie.name === 'steward_session');
    expect(cleared?.value).toBe('');
    expect((await withCookie(h, 'GET', '/api/auth/session', session.cookie)).status).toBe(401);
    expect((await withCookie(h, 'GET', '/api/me', session.cookie)).status).toBe(401);
    // Signing out again (a stale tab) only clears the cookie.
    expect((await withCookie(h, 'DELETE', '/api/auth/session', session.cookie)).status).toBe(204);
  });

  it('ends the sessions of a user an admin disables, and the other sessions on a password change', async () => {
    const admin = await start();
    const first = await signIn(h, 'papi-alice', PASSWORD);
    const second = await signIn(h, 'papi-alice', PASSWORD);
    const changed = await withCookie(h, 'PUT', '/api/users/papi-alice/password', first.cookie, {
      csrf: first.info!.csrfToken,
      body: { currentPassword: PASSWORD, password: 'a-new-password-papi' },
    });
    expect(changed.status).toBe(204);
    expect((await withCookie(h, 'GET', '/api/me', second.cookie)).status).toBe(401);
    expect((await withCookie(h, 'GET', '/api/me', first.cookie)).status).toBe(200);

    const disabled = await h.raw({ method: 'POST', url: '/api/users/papi-alice/disable', token: admin });
    expect(disabled.status).toBe(200);
    const after = await withCookie(h, 'GET', '/api/auth/session', first.cookie);
    expect(after.status).toBe(401);
    expect(errorOf(after).message).toContain('disabled');
    expect((await signIn(h, 'papi-alice', 'a-new-password-papi')).status).toBe(401);
  });

  it('expires a session after the configured time', async () => {
    let now = Date.now();
    await start({ session: { ttl: '1h' } }, () => now);
    const session = await signIn(h, 'papi-alice', PASSWORD);
    now += 3_600_000 - 1;
    expect((await withCookie(h, 'GET', '/api/me', session.cookie)).status).toBe(200);
    now += 1;
    expect((await withCookie(h, 'GET', '/api/me', session.cookie)).status).toBe(401);
    const reload = await h.server.app.inject({
      method: 'GET',
      url: '/api/auth/session',
      headers: { cookie: session.cookie },
    });
    expect(reload.statusCode).toBe(401);
    // The stale cookie is cleared with the answer.
    expect(reload.cookies.find((cookie) => cookie.name === 'steward_session')?.value).toBe('');
  });

  it('authenticates the job event stream and downloads by cookie, with the CSP on the stream', async () => {
    await start();
    const alice = await h.login('papi-alice', PASSWORD);
    await h.raw({
      method: 'POST',
      url: '/api/workflows',
      token: alice,
      body: { source: REPORT_WORKFLOW },
    });
    const job = await h.raw({
      method: 'POST',
      url: '/api/jobs',
      token: alice,
      body: { workflow: 'report', params: { region: 'emea' } },
    });
    const session = await signIn(h, 'papi-alice', PASSWORD);
    const { url } = await h.server.listen();
    const abort = new AbortController();
    const response = await fetch(`${url}/api/jobs/${Job.parse(job.json).id}/events`, {
      headers: { cookie: session.cookie },
      signal: abort.signal,
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('text/event-stream');
    expect(response.headers.get('content-security-policy')).toBe(CONTENT_SECURITY_POLICY);
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    const reader = response.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value as Uint8Array | undefined);
    expect(first).toContain('event: snapshot');
    abort.abort();
    await reader.cancel().catch(() => undefined);

    const logs = await withCookie(h, 'GET', `/api/jobs/${Job.parse(job.json).id}/logs`, session.cookie);
    expect(logs.status).toBe(200);
  });
});

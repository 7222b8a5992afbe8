/**
 * The login throttle counts failures in the store: two servers on one PostgreSQL database (as in HA) throttle
 * together, so guesses spread over them gain nothing. And on either backend the window slides: failures
 * older than it stop counting and are deleted. Failures are counted per user and address: a burst on other
 * accounts from one address does not lock out a user with the right password.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ErrorResponse } from '../../src/protocol/index.js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LoginThrottle } from '../../src/server/throttle.js';
import { openStore, type Store } from '../../src/store/index.js';
import { backends, createPrivateDatabase, type Backend, type BackendHandle } from '../store/backends.js';
import { ADMIN_PASSWORD, startHarness, type Harness } from './harness.js';

describe('login throttle shared by two servers on one PostgreSQL database', () => {
  let database: { url: string; dispose(): Promise<void> };
  let servers: Harness[] = [];

  /** Both harnesses get this database; it is dropped once, after both servers closed. */
  function sharedBackend(): Backend {
    return {
      name: 'postgres',
      async create() {
        const dir = mkdtempSync(path.join(os.tmpdir(), 'steward-throttle-'));
        return {
          config: { kind: 'postgres', url: database.url },
          dir,
          async dispose() {
            rmSync(dir, { recursive: true, force: true });
          },
        };
      },
    };
  }

  async function startTwo(loginThrottle: Record<string, unknown>): Promise<[Harness, Harness]> {
    const config = { loginThrottle };
    const a = await startHarness({ backend: sharedBackend(), config });
    servers.push(a);
    const b = await startHarness({ backend: sharedBackend(), config });
    servers.push(b);
    return [a, b];
  }

  function login(h: Harness, user: string, password: string) {
    return h.raw({ method: 'POST', url: '/api/auth/login', body: { user, password } });
  }

  beforeEach(async (context) => {
    database = await createPrivateDatabase(context.task.name);
  });

  afterEach(async () => {
    for (const h of servers.splice(0)) await h.dispose();
    servers = [];
    await database.dispose();
  });

  it('throttles a user whose failed logins were spread over both servers', async () => {
    const [a, b] = await startTwo({ maxFailuresPerUser: 4, maxFailuresPerSource: 100 });
    for (let i = 0; i < 4; i++) expect((await login(i % 2 === 0 ? a : b, 'admin', 'wrong')).status).toBe(401);
    for (const h of [a, b]) {
      const throttled = await login(h, 'admin', ADMIN_PASSWORD);
      expect(throttled.status).toBe(429);
      expect(ErrorResponse.parse(throttled.json).error.code).toBe('STEWARD_LOGIN_THROTTLED');
      expect(ErrorResponse.parse(throttled.json).error.message).toMatch(/for this user/);
      expect(ErrorResponse.parse(throttled.json).error.details?.retryAfterSeconds).toBeGreaterThan(0);
    }
  });

  it('throttles an address whose failures over many names were spread over both servers', async () => {
    const [a, b] = await startTwo({ maxFailuresPerUser: 100, maxFailuresPerSource: 4 });
    for (let i = 0; i < 4; i++) expect((await login(i % 2 === 0 ? a : b, `guess${i}`, 'x')).status).toBe(401);
    for (const h of [a, b]) {
      const throttled = await login(h, 'admin', ADMIN_PASSWORD);
      expect(throttled.status).toBe(429);
      expect(ErrorResponse.parse(throttled.json).error.message).toMatch(/from this address/);
    }
  });

  it("a successful login on one server clears the user's count on both, not the address's", async () => {
    const [a, b] = await startTwo({ maxFailuresPerUser: 3, maxFailuresPerSource: 5 });
    for (let i = 0; i < 2; i++) expect((await login(a, 'admin', 'wrong')).status).toBe(401);
    expect((await login(b, 'admin', ADMIN_PASSWORD)).status).toBe(200);
    // The user's count restarted at 0: two more failures stay under its limit of 3.
    for (let i = 0; i < 2; i++) expect((await login(a, 'admin', 'wrong')).status).toBe(401);
    expect((await login(b, 'admin', ADMIN_PASSWORD)).status).toBe(200);
    // The address kept all four failures: the fifth reaches its limit, on either server.
    expect((await login(b, 'nobody', 'wrong')).status).toBe(401);
    const throttled = await login(a, 'admin', ADMIN_PASSWORD);
    expect(throttled.status).toBe(429);
    expect(ErrorResponse.parse(throttled.json).error.message).toMatch(/from this address/);
  });
});

describe.each(backends)('login throttle window on $name', (backend) => {
  let handle: BackendHandle;
  let store: Store;
  const config = {
    maxFailuresPerUserAndSource: 5,
    maxFailuresPerUser: 3,
    maxFailuresPerSource: 10,
    windowMs: 60_000,
  };
  const T0 = 1_767_225_600_000;

  beforeEach(async (context) => {
    handle = await backend.create(context.task.name);
    try {
      store = await openStore(handle.config);
    } catch (error) {
      await handle.dispose();
      throw error;
    }
  });

  afterEach(async () => {
    await store.close();
    await handle.dispose();
  });

  it('waits for the failure that keeps the count at the limit to leave the window, then forgets it', async () => {
    const throttle = new LoginThrottle(store, config);
    await throttle.recordFailure('Bob', '10.0.0.1', T0);
    await throttle.recordFailure('bob', '10.0.0.2', T0 + 10_000);
    await throttle.check('bob', '10.0.0.3', T0 + 20_000);
    await throttle.recordFailure('BOB', '10.0.0.3', T0 + 20_000);
    // Three failures (names compare case-insensitively): refused until the first leaves the window.
    const refused = await throttle.check('bob', '10.0.0.4', T0 + 30_000).catch((error: unknown) => error);
    expect(refused).toMatchObject({
      code: 'STEWARD_LOGIN_THROTTLED',
      details: { retryAfterSeconds: 30 },
    });
    await expect(throttle.check('alice', '10.0.0.4', T0 + 30_000)).resolves.toBeUndefined();
    await expect(throttle.check('bob', '10.0.0.4', T0 + 60_001)).resolves.toBeUndefined();
    // A failure later than the window deletes what has left it: only the two newest bob rows remain.
    await throttle.recordFailure('carol', '10.0.0.5', T0 + 70_000);
    const rows = await store.db
      .selectFrom('login_failures')
      .select(['key', 'time'])
      .orderBy('time')
      .orderBy('key')
      .execute();
    expect(rows.map((row) => [row.key, Number(row.time)])).toEqual([
      ['p:10.0.0.3 bob', T0 + 20_000],
      ['s:10.0.0.3', T0 + 20_000],
      ['u:bob', T0 + 20_000],
      ['p:10.0.0.5 carol', T0 + 70_000],
      ['s:10.0.0.5', T0 + 70_000],
      ['u:carol', T0 + 70_000],
    ]);
  });
});

describe('login throttle by user and address', () => {
  let h: Harness | undefined;

  afterEach(async () => {
    await h?.dispose();
    h = undefined;
  });

  function login(user: string, password: string, from?: string) {
    return h!.raw({
      method: 'POST',
      url: '/api/auth/login',
      body: { user, password },
      ...(from ? { headers: { 'x-forwarded-for': from } } : {}),
    });
  }

  it('lets the correct user in after a burst of wrong passwords for other accounts from the same address', async () => {
    h = await startHarness({ title: 'throttle-burst' });
    const statuses = new Set<number>();
    // Forty wrong passwords over eight other names (the last of each name's six is already refused).
    for (let name = 0; name < 8; name++) {
      for (let attempt = 0; attempt < 6; attempt++)
        statuses.add((await login(`other${name}`, 'wrong')).status);
    }
    expect([...statuses].sort()).toEqual([401, 429]);
    const correct = await login('admin', ADMIN_PASSWORD);
    expect(correct.status, correct.text).toBe(200);
  });

  it('locks a name out of the address its failures came from, not out of another address', async () => {
    h = await startHarness({ title: 'throttle-pair', config: { trustProxy: ['127.0.0.1'] } });
    for (let i = 0; i < 5; i++) expect((await login('admin', 'wrong', '203.0.113.7')).status).toBe(401);
    const refused = await login('admin', ADMIN_PASSWORD, '203.0.113.7');
    expect(refused.status).toBe(429);
    expect(ErrorResponse.parse(refused.json).error.code).toBe('STEWARD_LOGIN_THROTTLED');
    expect(ErrorResponse.parse(refused.json).error.message).toMatch(/for this user from this address/);
    expect((await login('admin', ADMIN_PASSWORD, '198.51.100.9')).status).toBe(200);
    // The audit log records the client's address, as the trusted proxy reported it.
    const token = await h.adminToken();
    const audit = await h.raw({ method: 'GET', url: '/api/audit?action=login.throttled', token });
    expect(JSON.stringify(audit.json)).toContain('203.0.113.7');
  });

  it('throttles a name from every address once failures spread over several addresses reach the per-user bound', async () => {
    h = await startHarness({
      title: 'throttle-user',
      config: { trustProxy: ['127.0.0.1'], loginThrottle: { maxFailuresPerUser: 6 } },
    });
    for (const from of ['192.0.2.1', '192.0.2.2', '192.0.2.3']) {
      for (let i = 0; i < 2; i++) expect((await login('admin', 'wrong', from)).status).toBe(401);
    }
    const refused = await login('admin', ADMIN_PASSWORD, '192.0.2.4');
    expect(refused.status).toBe(429);
    expect(ErrorResponse.parse(refused.json).error.message).toMatch(/too many failed logins for this user;/);
  });

  it('ignores X-Forwarded-For unless trustProxy names the proxy', async () => {
    h = await startHarness({ title: 'throttle-untrusted' });
    for (let i = 0; i < 5; i++) expect((await login('admin', 'wrong', `192.0.2.${i + 10}`)).status).toBe(401);
    // Every attempt came from the TCP peer, whatever the header claimed.
    expect((await login('admin', ADMIN_PASSWORD, '192.0.2.99')).status).toBe(429);
  });

  it('refuses a trustProxy entry that is not an address or a range', async () => {
    await expect(
      startHarness({ title: 'throttle-bad', config: { trustProxy: ['proxy.example'] } }),
    ).rejects.toThrow(/trustProxy/);
  });
});

/**
 * LDAP login against a private slapd (test/support/slapd.ts): search-then-bind over StartTLS and LDAPS with
 * a generated CA, direct bind with a group search, nested groups → roles and the allowed-users policy,
 * injection, a directory that is down or silent, users removed from the directory, and throttling.
 */
import { createServer, type Server, type Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Attribute, Change } from 'ldapts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileServerConfig } from '../../src/config/index.js';
import { LdapDirectory } from '../../src/server/ldap.js';
import {
  ADMINS_GROUP_DN,
  GROUPS_DN,
  PEOPLE_DN,
  SERVICE_DN,
  SERVICE_PASSWORD,
  Slapd,
  USERS_GROUP_DN,
} from '../support/slapd.js';
import { freePort } from '../support/steward.js';
import {
  bodyOf,
  errorOf,
  ADMIN_PASSWORD,
  eventually,
  REPORT_WORKFLOW,
  startHarness,
  type Harness,
} from './harness.js';

let slapd: Slapd;

beforeAll(async () => {
  slapd = await Slapd.start({ tag: 'sv', homeRoot: path.join(os.tmpdir(), 'steward-ldap-homes') });
});
afterAll(async () => {
  await slapd?.stop();
});

function searchBindConfig(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    url: slapd.url,
    startTls: true,
    caFile: slapd.caFile,
    bindDn: SERVICE_DN,
    bindPassword: SERVICE_PASSWORD,
    userBase: PEOPLE_DN,
    adminGroups: [ADMINS_GROUP_DN],
    allowedGroups: [USERS_GROUP_DN],
    timeout: '2s',
    ...extra,
  };
}

async function withHarness(
  config: Record<string, unknown>,
  fn: (h: Harness) => Promise<void>,
): Promise<void> {
  const h = await startHarness({ title: 'ldap', config });
  try {
    await fn(h);
  } finally {
    await h.dispose();
  }
}

function memberChange(operation: 'add' | 'delete', dn: string): Change {
  return new Change({ operation, modification: new Attribute({ type: 'member', values: [dn] }) });
}

function login(h: Harness, user: string, password: string) {
  return h.raw({ method: 'POST', url: '/api/auth/login', body: { user, password } });
}

describe('LDAP login (search-then-bind over StartTLS)', () => {
  it('logs LDAP users in with roles from nested group membership and creates their accounts', async () => {
    await withHarness({ ldap: searchBindConfig() }, async (h) => {
      const { alice, bob } = slapd.people;
      const first = await login(h, alice.uid, alice.password);
      expect(first.status).toBe(200);
      expect(first.json).toMatchObject({ user: alice.uid, role: 'admin' });
      const me = await h.raw({ method: 'GET', url: '/api/me', token: bodyOf('login', first).token });
      expect(me.json).toMatchObject({ user: alice.uid, role: 'admin', source: 'ldap' });

      const second = await login(h, bob.uid, bob.password);
      expect(second.json).toMatchObject({ user: bob.uid, role: 'user' });
      const forbidden = await h.raw({
        method: 'GET',
        url: '/api/users',
        token: bodyOf('login', second).token,
      });
      expect(forbidden.status).toBe(403);

      const stored = await h.server.store.getUser(alice.uid);
      expect(stored).toMatchObject({ source: 'ldap', passwordHash: null, role: 'admin' });
      const created = await h.server.store.listAudit({ action: 'user.create', limit: 10 });
      expect(created.map((entry) => entry.target)).toEqual(expect.arrayContaining([alice.uid, bob.uid]));
      const logins = await h.server.store.listAudit({ action: 'login', limit: 10 });
      expect(logins.find((entry) => entry.actor === alice.uid)?.detail).toMatchObject({ method: 'ldap' });

      // Local users keep working beside LDAP.
      expect((await login(h, 'admin', ADMIN_PASSWORD)).status).toBe(200);
    });
  });

  it('refuses a wrong password, an unknown user, a user outside the allowed groups and an injection alike', async () => {
    await withHarness({ ldap: searchBindConfig() }, async (h) => {
      const { alice, carol } = slapd.people;
      const attempts = [
        [alice.uid, 'wrong-password'],
        ['nobody-here', 'whatever'],
        [carol.uid, carol.password],
        ['*)(uid=*', alice.password],
        ['*', alice.password],
        [`${alice.uid.slice(0, 3)}*`, alice.password],
      ] as const;
      for (const [user, password] of attempts) {
        const response = await login(h, user, password);
        expect(response.status, user).toBe(401);
        expect(response.json, user).toEqual({
          error: { code: 'STEWARD_UNAUTHENTICATED', message: 'wrong user name or password' },
        });
      }
      const failures = await h.server.store.listAudit({ action: 'login.failed', limit: 20 });
      const reasons = failures.map((entry) => entry.detail?.reason);
      expect(reasons).toEqual(
        expect.arrayContaining(['bad password', 'unknown user', 'not in an allowed group']),
      );
      expect(reasons).not.toContain('ambiguous user');
      expect(await h.server.store.getUser(carol.uid)).toBeUndefined();
    });
  });

  it('finds nothing for filter metacharacters and refuses an empty password', async () => {
    const config = compileServerConfig({ ldap: searchBindConfig() }).ldap!;
    const directory = new LdapDirectory(config);
    for (const name of ['*)(uid=*', '*', '*)(|(uid=*', 'stl\\2a']) {
      expect(await directory.lookup(name), name).toEqual({ ok: false, reason: 'unknown user' });
    }
    expect(await directory.authenticate(slapd.people.alice.uid, '')).toEqual({
      ok: false,
      reason: 'bad password',
    });
    const found = await directory.lookup(slapd.people.alice.uid);
    expect(found.ok && found.user.groups).toEqual([
      ADMINS_GROUP_DN.toLowerCase(),
      USERS_GROUP_DN.toLowerCase(),
    ]);
  });

  it('takes access away from a user removed from the directory, including their tokens', async () => {
    await withHarness({ ldap: searchBindConfig({ cacheTtl: '300ms' }) }, async (h) => {
      const { dave } = slapd.people;
      const token = bodyOf('login', await login(h, dave.uid, dave.password)).token;
      expect((await h.raw({ method: 'GET', url: '/api/me', token })).status).toBe(200);
      await slapd.admin((client) =>
        // Taken out of the allowed group: as good as gone for Steward.
        client.modify(USERS_GROUP_DN, memberChange('delete', slapd.personDn(dave.uid))),
      );
      try {
        const refused = await eventually(async () => {
          const response = await h.raw({ method: 'GET', url: '/api/me', token });
          return response.status === 401 ? response : undefined;
        }, 5000);
        expect(errorOf(refused).code).toBe('STEWARD_UNAUTHENTICATED');
        expect((await login(h, dave.uid, dave.password)).status).toBe(401);
        const refusals = await h.server.store.listAudit({ action: 'token.refused', limit: 10 });
        expect(
          refusals.some((e) => e.actor === dave.uid && e.detail?.reason === 'not in an allowed group'),
        ).toBe(true);
      } finally {
        await slapd.admin((client) =>
          client.modify(USERS_GROUP_DN, memberChange('add', slapd.personDn(dave.uid))),
        );
      }
    });
  });

  it('follows a role change in the directory at the next re-check of a token', async () => {
    await withHarness({ ldap: searchBindConfig({ cacheTtl: '300ms' }) }, async (h) => {
      const { bob } = slapd.people;
      const token = bodyOf('login', await login(h, bob.uid, bob.password)).token;
      expect(bodyOf('me', await h.raw({ method: 'GET', url: '/api/me', token })).role).toBe('user');
      await slapd.admin((client) =>
        client.modify(ADMINS_GROUP_DN, memberChange('add', slapd.personDn(bob.uid))),
      );
      try {
        await eventually(async () => {
          const me = await h.raw({ method: 'GET', url: '/api/me', token });
          return bodyOf('me', me).role === 'admin';
        }, 5000);
        expect((await h.raw({ method: 'GET', url: '/api/users', token })).status).toBe(200);
        expect(await h.server.store.getUser(bob.uid)).toMatchObject({ role: 'admin' });
      } finally {
        await slapd.admin((client) =>
          client.modify(ADMINS_GROUP_DN, memberChange('delete', slapd.personDn(bob.uid))),
        );
      }
    });
  });

  it("keeps an LDAP user's password and role with the directory, and lets a disable or delete here override the directory's yes", async () => {
    await withHarness({ ldap: searchBindConfig() }, async (h) => {
      const { bob } = slapd.people;
      const admin = await h.adminToken();
      const first = await login(h, bob.uid, bob.password);
      expect(first.status).toBe(200);
      const token = bodyOf('login', first).token;
      const users = await h.raw({ method: 'GET', url: '/api/users', token: admin });
      expect(bodyOf('listUsers', users).users).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ name: 'admin', source: 'local' }),
          expect.objectContaining({ name: bob.uid, source: 'ldap' }),
        ]),
      );
      const own = await h.raw({
        method: 'PUT',
        url: `/api/users/${bob.uid}/password`,
        token,
        body: { currentPassword: bob.password, password: 'a-new-password' },
      });
      expect(own.status).toBe(409);
      expect(errorOf(own).code).toBe('STEWARD_USER_IN_DIRECTORY');
      const role = await h.raw({
        method: 'PUT',
        url: `/api/users/${bob.uid}/role`,
        token: admin,
        body: { role: 'admin' },
      });
      expect(errorOf(role).code).toBe('STEWARD_USER_IN_DIRECTORY');

      expect(
        (await h.raw({ method: 'POST', url: `/api/users/${bob.uid}/disable`, token: admin })).status,
      ).toBe(200);
      expect((await h.raw({ method: 'GET', url: '/api/me', token })).status).toBe(401);
      const disabled = await login(h, bob.uid, bob.password);
      expect(disabled.status).toBe(401);
      expect(errorOf(disabled).message).toMatch(/this user is disabled/);

      expect((await h.raw({ method: 'DELETE', url: `/api/users/${bob.uid}`, token: admin })).status).toBe(
        204,
      );
      // The directory still says yes; the deleted name stays retired here.
      const deleted = await login(h, bob.uid, bob.password);
      expect(deleted.status).toBe(401);
      expect(errorOf(deleted).message).toBe('this user was deleted');
      const failed = await h.server.store.listAudit({ action: 'login.failed', limit: 1 });
      expect(failed[0]).toMatchObject({ actor: bob.uid, detail: { reason: 'user deleted', method: 'ldap' } });
    });
  });

  it('audits every token use at most once a minute per token', async () => {
    await withHarness({ ldap: searchBindConfig() }, async (h) => {
      const { bob } = slapd.people;
      const token = bodyOf('login', await login(h, bob.uid, bob.password)).token;
      for (let i = 0; i < 3; i++) await h.raw({ method: 'GET', url: '/api/me', token });
      await h.raw({ method: 'GET', url: '/api/me', token: 'stw_not-a-real-token' });
      const uses = await h.server.store.listAudit({ action: 'token.use', limit: 10 });
      expect(uses.filter((e) => e.actor === bob.uid)).toHaveLength(1);
      const refused = await h.server.store.listAudit({ action: 'token.refused', limit: 10 });
      expect(refused.some((e) => e.detail?.reason === 'unknown token')).toBe(true);
    });
  });
});

describe('LDAP login variants', () => {
  it('binds directly with a DN template over LDAPS and finds nested groups by search', async () => {
    const ldap = {
      url: slapd.ldapsUrl,
      caFile: slapd.caFile,
      userDnTemplate: `uid={user},${PEOPLE_DN}`,
      groups: { mode: 'search', base: GROUPS_DN },
      adminGroups: [ADMINS_GROUP_DN],
      allowedGroups: [USERS_GROUP_DN],
    };
    await withHarness({ ldap }, async (h) => {
      const { alice, bob, carol } = slapd.people;
      expect((await login(h, alice.uid, alice.password)).json).toMatchObject({ role: 'admin' });
      expect((await login(h, bob.uid, bob.password)).json).toMatchObject({ role: 'user' });
      expect((await login(h, carol.uid, carol.password)).status).toBe(401);
      expect((await login(h, `${alice.uid},ou=x`, alice.password)).status).toBe(401);
    });
  });

  it('refuses with a clear error when the directory certificate is not trusted', async () => {
    const config = compileServerConfig({
      ldap: { ...searchBindConfig(), startTls: false, url: slapd.ldapsUrl, caFile: undefined },
    }).ldap!;
    await expect(new LdapDirectory(config).lookup(slapd.people.alice.uid)).rejects.toMatchObject({
      code: 'STEWARD_DIRECTORY_UNAVAILABLE',
    });
  });

  it('answers 503 within the timeout when the directory is down or silent, and local users still log in', async () => {
    const closedPort = await freePort();
    const sockets = new Set<Socket>();
    const silent: Server = createServer((socket) => sockets.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const silentPort = (silent.address() as { port: number }).port;
    try {
      for (const port of [closedPort, silentPort]) {
        await withHarness(
          { ldap: searchBindConfig({ url: `ldap://127.0.0.1:${port}`, timeout: '1s' }) },
          async (h) => {
            const started = Date.now();
            const response = await login(h, slapd.people.alice.uid, slapd.people.alice.password);
            const elapsed = Date.now() - started;
            expect(response.status).toBe(503);
            expect(errorOf(response).code).toBe('STEWARD_DIRECTORY_UNAVAILABLE');
            expect(response.text).not.toMatch(/ECONNREFUSED|127\.0\.0\.1|timeout/i);
            expect(elapsed).toBeLessThan(1800);
            expect((await login(h, 'admin', ADMIN_PASSWORD)).status).toBe(200);
          },
        );
      }
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it('rejects an LDAP config that cannot work, naming the field', () => {
    expect(() => compileServerConfig({ ldap: { url: slapd.url } })).toThrow(/ldap\.userBase/);
    expect(() =>
      compileServerConfig({ ldap: { ...searchBindConfig(), url: slapd.ldapsUrl, startTls: true } }),
    ).toThrow(/ldap\.startTls/);
    expect(() => compileServerConfig({ ldap: { ...searchBindConfig(), bindPassword: undefined } })).toThrow(
      /ldap\.bindDn/,
    );
    expect(() => compileServerConfig({ ldap: { ...searchBindConfig(), colour: 'blue' } })).toThrow(
      /colour|unrecognized/i,
    );
  });
});

describe('login throttling', () => {
  it('refuses further attempts for a user after repeated failures, even with the right password', async () => {
    await withHarness(
      { ldap: searchBindConfig(), loginThrottle: { maxFailuresPerUser: 3, maxFailuresPerSource: 100 } },
      async (h) => {
        const { bob } = slapd.people;
        for (let i = 0; i < 3; i++) expect((await login(h, bob.uid, 'wrong')).status).toBe(401);
        const throttled = await login(h, bob.uid, bob.password);
        expect(throttled.status).toBe(429);
        expect(errorOf(throttled).code).toBe('STEWARD_LOGIN_THROTTLED');
        expect(errorOf(throttled).details?.retryAfterSeconds).toBeGreaterThan(0);
        // Other users are not affected.
        expect((await login(h, 'admin', ADMIN_PASSWORD)).status).toBe(200);
        const audited = await h.server.store.listAudit({ action: 'login.throttled', limit: 5 });
        expect(audited[0]).toMatchObject({ actor: bob.uid });
      },
    );
  });

  it('refuses further attempts from one address after failures across many user names', async () => {
    await withHarness({ loginThrottle: { maxFailuresPerUser: 100, maxFailuresPerSource: 4 } }, async (h) => {
      for (let i = 0; i < 4; i++) expect((await login(h, `guess${i}`, 'x')).status).toBe(401);
      const throttled = await login(h, 'admin', ADMIN_PASSWORD);
      expect(throttled.status).toBe(429);
      expect(errorOf(throttled).message).toMatch(/from this address/);
    });
  });
});

describe('shared spaces through LDAP groups', () => {
  it('lets members of an LDAP group use a shared space, refuses others, and ends access at the re-check after removal', async () => {
    await withHarness({ ldap: searchBindConfig({ cacheTtl: '300ms' }) }, async (h) => {
      const { alice, bob, dave } = slapd.people;
      const financeDn = `cn=stlfinance${Date.now().toString(36)},${GROUPS_DN}`;
      await slapd.admin((client) =>
        client.add(financeDn, {
          objectClass: 'groupOfNames',
          cn: financeDn.slice(3, financeDn.indexOf(',')),
          member: [slapd.personDn(alice.uid), slapd.personDn(bob.uid)],
        }),
      );
      try {
        const aliceToken = bodyOf('login', await login(h, alice.uid, alice.password)).token;
        const bobToken = bodyOf('login', await login(h, bob.uid, bob.password)).token;
        const daveToken = bodyOf('login', await login(h, dave.uid, dave.password)).token;
        const admin = await h.adminToken();
        expect(
          (await h.raw({ method: 'POST', url: '/api/spaces', token: admin, body: { name: 'finance' } }))
            .status,
        ).toBe(201);
        // The DN as an admin might type it: other case, blanks after commas.
        const typed = financeDn.toUpperCase().replace(/,/g, ', ');
        const member = await h.raw({
          method: 'PUT',
          url: '/api/spaces/finance/members',
          token: admin,
          body: { kind: 'group', name: typed, role: 'editor' },
        });
        expect(member.status, member.text).toBe(200);

        // alice (a member through the group) pushes, bob (another member) runs it.
        const pushed = await h.raw({
          method: 'POST',
          url: '/api/spaces/finance/workflows',
          token: aliceToken,
          body: { source: REPORT_WORKFLOW },
        });
        expect(pushed.status, pushed.text).toBe(201);
        expect(pushed.json).toMatchObject({
          space: 'finance',
          name: 'report',
          version: 1,
          createdBy: alice.uid,
        });
        const submitted = await h.raw({
          method: 'POST',
          url: '/api/jobs',
          token: bobToken,
          body: { workflow: 'finance/report', params: { region: 'emea' } },
        });
        expect(submitted.status, submitted.text).toBe(201);
        expect(bodyOf('submitJob', submitted).workflow).toEqual({
          space: 'finance',
          name: 'report',
          version: 1,
        });
        expect(bodyOf('submitJob', submitted).user).toBe(bob.uid);

        // dave is in no group of the space: refused on list, show, run and push.
        const refusals = await spaceRequests(h, daveToken);
        for (const [what, response] of Object.entries(refusals)) {
          expect(response.status, what).toBe(403);
          expect(errorOf(response).code, what).toBe('STEWARD_SPACE_NOT_MEMBER');
          expect(errorOf(response).message, what).toContain("space's owners or an admin");
        }
        expect(Object.values(await spaceRequests(h, bobToken)).map((r) => r.status)).toEqual([
          200, 200, 201, 201,
        ]);

        // bob leaves the group in the directory: his access ends at the next re-check of his token.
        await slapd.admin((client) =>
          client.modify(financeDn, memberChange('delete', slapd.personDn(bob.uid))),
        );
        const ended = await eventually(async () => {
          const response = await h.raw({
            method: 'GET',
            url: '/api/spaces/finance/workflows',
            token: bobToken,
          });
          return response.status === 403 ? response : undefined;
        }, 5000);
        expect(errorOf(ended).code).toBe('STEWARD_SPACE_NOT_MEMBER');
        for (const [what, response] of Object.entries(await spaceRequests(h, bobToken)))
          expect(response.status, what).toBe(403);
        // The token itself still works for bob's own things.
        expect((await h.raw({ method: 'GET', url: '/api/me', token: bobToken })).status).toBe(200);
      } finally {
        await slapd.admin((client) => client.del(financeDn));
      }
    });
  });
});

/** List, show, run and push in the `finance` space, as the token's user. */
async function spaceRequests(h: Harness, token: string) {
  return {
    list: await h.raw({ method: 'GET', url: '/api/spaces/finance/workflows', token }),
    show: await h.raw({ method: 'GET', url: '/api/spaces/finance/workflows/report', token }),
    run: await h.raw({
      method: 'POST',
      url: '/api/jobs',
      token,
      body: { workflow: 'finance/report', params: { region: 'emea' } },
    }),
    push: await h.raw({
      method: 'POST',
      url: '/api/spaces/finance/workflows',
      token,
      body: { source: REPORT_WORKFLOW },
    }),
  };
}

/**
 * User lifecycle through the REST API on a real server and store (SQLite and PostgreSQL): disable, enable,
 * role, delete, passwd, token revoke, whoami, and the refusals of each, with their audit entries. The test
 * stands in for the agent (offers taken from the embedded bus, state events sent back).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createOfferVerifier, type Control, type JobOffer } from '../../src/protocol/index.js';
import { backends } from '../store/backends.js';
import {
  bodyOf,
  errorOf,
  eventually,
  REPORT_WORKFLOW,
  startHarness,
  stateEvent,
  type Harness,
} from './harness.js';

describe.each(backends)('user lifecycle on $name', (backend) => {
  let h: Harness;
  let admin: string;
  let alice: string;
  const offers: JobOffer[] = [];
  const controls: Control[] = [];

  beforeEach(async (context) => {
    h = await startHarness({ backend, title: context.task.name, config: { loadTimeout: '2m' } });
    admin = await h.adminToken();
    alice = await h.userToken('alice');
    offers.length = 0;
    controls.length = 0;
    const verifier = createOfferVerifier([h.server.publicKeyPem]);
    await h.bus.consumeOffers(
      async (delivery) => {
        offers.push(verifier.verify(delivery.body));
        await delivery.ack();
      },
      { prefetch: 10 },
    );
    await h.bus.consumeControl('agent-1', async (delivery) => {
      controls.push(delivery.body as Control);
      await delivery.ack();
    });
    const pushed = await h.raw({
      method: 'POST',
      url: '/api/workflows',
      token: alice,
      body: { source: REPORT_WORKFLOW },
    });
    expect(pushed.status, pushed.text).toBe(201);
  });

  afterEach(async () => {
    await h.dispose();
  });

  const call = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, token = admin, body?: unknown) =>
    h.raw({ method, url, token, ...(body === undefined ? {} : { body }) });
  const submit = (token = alice) =>
    call('POST', '/api/jobs', token, { workflow: 'report', params: { region: 'emea' } });
  const job = async (id: string) => bodyOf('showJob', await call('GET', `/api/jobs/${id}`));

  it('disabling a user refuses every one of its tokens at once, blocks login, and enabling lets it log in again without reviving the tokens', async () => {
    const second = await h.login('alice', 'password-of-alice');
    const api = bodyOf('createToken', await call('POST', '/api/tokens', alice, { name: 'ci' })).token;
    for (const token of [alice, second, api]) expect((await call('GET', '/api/me', token)).status).toBe(200);

    const disabled = await call('POST', '/api/users/alice/disable');
    expect(disabled.status, disabled.text).toBe(200);
    expect(disabled.json).toMatchObject({ name: 'alice', disabled: true, source: 'local', canceledJobs: [] });
    for (const token of [alice, second, api]) {
      const refused = await call('GET', '/api/me', token);
      expect(refused.status).toBe(401);
      expect(errorOf(refused).code).toBe('STEWARD_UNAUTHENTICATED');
    }
    const login = await h.raw({
      method: 'POST',
      url: '/api/auth/login',
      body: { user: 'alice', password: 'password-of-alice' },
    });
    expect(login.status).toBe(401);
    expect(errorOf(login).message).toMatch(/this user is disabled; an admin can enable it/);

    const enabled = await call('POST', '/api/users/alice/enable');
    expect(enabled.status).toBe(200);
    expect(enabled.json).toMatchObject({ name: 'alice', disabled: false });
    const again = await h.login('alice', 'password-of-alice');
    expect((await call('GET', '/api/me', again)).status).toBe(200);
    // Revoked is revoked: the tokens from before the disable stay dead.
    for (const token of [alice, second, api]) expect((await call('GET', '/api/me', token)).status).toBe(401);

    const audit = await h.server.store.listAudit({ actor: 'admin', limit: 10 });
    const entries = audit.filter((entry) => entry.action.startsWith('user.'));
    expect(entries.map((entry) => [entry.action, entry.target])).toEqual([
      ['user.enable', 'alice'],
      ['user.disable', 'alice'],
      ['user.create', 'alice'],
    ]);
    expect(entries[1]!.detail).toMatchObject({ revokedTokens: 3, canceledJobs: 0 });
  });

  it("disabling a user cancels its offered jobs at once and asks the agent to cancel its running ones; other users' jobs go on", async () => {
    const bob = await h.userToken('bob');
    // Workflows live in spaces: bob runs a copy of his own.
    const pushed = await h.raw({
      method: 'POST',
      url: '/api/workflows',
      token: bob,
      body: { source: REPORT_WORKFLOW },
    });
    expect(pushed.status, pushed.text).toBe(201);
    const waiting = bodyOf('submitJob', await submit()).id;
    const running = bodyOf('submitJob', await submit()).id;
    const bobs = bodyOf('submitJob', await submit(bob)).id;
    await eventually(() => offers.length === 3);
    const offer = offers.find((candidate) => candidate.jobId === running)!;
    await h.bus.publishEvent(stateEvent(offer, 1, 'running'));
    await eventually(async () => (await job(running)).state === 'running');

    const disabled = await call('POST', '/api/users/alice/disable');
    expect(disabled.status, disabled.text).toBe(200);
    expect([...bodyOf('disableUser', disabled).canceledJobs].sort()).toEqual([waiting, running].sort());
    expect(await job(waiting)).toMatchObject({
      state: 'canceled',
      error: { code: 'STEWARD_JOB_CANCELED', message: 'canceled: user alice was disabled by admin' },
    });
    await eventually(() => controls.length === 1);
    expect(controls[0]).toEqual({ v: 1, type: 'cancel', jobId: running, attempt: 1 });
    // The agent reports the end; the job is then canceled like any other.
    await h.bus.publishEvent(
      stateEvent(offer, 2, 'canceled', {
        error: { code: 'STEWARD_JOB_CANCELED', message: 'canceled: user alice was disabled by admin' },
      }),
    );
    await eventually(async () => (await job(running)).state === 'canceled');
    expect((await job(bobs)).state).toBe('offered');
    const cancels = await h.server.store.listAudit({ action: 'job.cancel', limit: 10 });
    expect(cancels.map((entry) => entry.target).sort()).toEqual([waiting, running].sort());
  });

  it('asks the agent to cancel a job it already loads while the server still sees it offered', async () => {
    const id = bodyOf('submitJob', await submit()).id;
    await eventually(() => offers.length === 1);
    const offer = offers[0]!;
    // The executor fetched the workflow (the claim); its loading/running events have not arrived yet.
    const fetched = await h.raw({
      method: 'GET',
      url: `/api/exec/jobs/${id}/workflow?agent=agent-1`,
      token: offer.jobToken,
    });
    expect(fetched.status, fetched.text).toBe(200);
    expect((await job(id)).state).toBe('offered');
    const disabled = await call('POST', '/api/users/alice/disable');
    expect(bodyOf('disableUser', disabled).canceledJobs).toEqual([id]);
    expect((await job(id)).state).toBe('canceled');
    await eventually(() => controls.length === 1);
    expect(controls[0]).toEqual({ v: 1, type: 'cancel', jobId: id, attempt: 1 });
  });

  it('cancels a job whose submission authenticated before its user was disabled but was written after', async () => {
    // The exact interleaving: the request has authenticated; the whole disable (commit, listing of live jobs,
    // cancels) runs before the job row is written.
    const store = h.server.store;
    const insert = store.insertJobOnce.bind(store);
    let disabled: Awaited<ReturnType<typeof call>> | undefined;
    store.insertJobOnce = async (job) => {
      disabled = await call('POST', '/api/users/alice/disable');
      return insert(job);
    };
    const late = await submit();
    expect(disabled?.status, disabled?.text).toBe(200);
    expect(disabled && bodyOf('disableUser', disabled).canceledJobs).toEqual([]);
    expect(late.status).toBe(401);
    expect(errorOf(late).message).toBe('this user is disabled');
    const jobs = bodyOf('listJobs', await call('GET', '/api/jobs?user=alice')).jobs;
    expect(jobs).toHaveLength(1);
    expect(jobs[0]).toMatchObject({
      state: 'canceled',
      error: { code: 'STEWARD_JOB_CANCELED', message: 'canceled: user alice is disabled' },
    });
    // No offer was ever sent for it: the next job's offer is the first to arrive (the queue is first in, first out).
    store.insertJobOnce = insert;
    expect((await call('POST', '/api/users/alice/enable')).status).toBe(200);
    const next = await submit(await h.login('alice', 'password-of-alice'));
    expect(next.status, next.text).toBe(201);
    await eventually(() => offers.length > 0);
    expect(offers.map((offer) => offer.jobId)).toEqual([bodyOf('submitJob', next).id]);
  });

  it('refuses to disable, delete or demote the last enabled admin with STEWARD_LAST_ADMIN, and allows it while another admin remains', async () => {
    for (const [method, url, body] of [
      ['POST', '/api/users/admin/disable', undefined],
      ['DELETE', '/api/users/admin', undefined],
      ['PUT', '/api/users/admin/role', { role: 'user' }],
    ] as const) {
      const refused = await call(method, url, admin, body);
      expect(refused.status, url).toBe(409);
      expect(errorOf(refused).code).toBe('STEWARD_LAST_ADMIN');
      expect(errorOf(refused).message).toMatch(/last enabled admin.*make another user an admin/);
    }
    expect((await call('GET', '/api/me')).status).toBe(200);

    // A disabled admin does not count as the one that remains.
    const carol = await h.userToken('carol', 'admin');
    expect((await call('POST', '/api/users/carol/disable')).status).toBe(200);
    expect(errorOf(await call('POST', '/api/users/admin/disable')).code).toBe('STEWARD_LAST_ADMIN');
    expect((await call('POST', '/api/users/carol/enable')).status).toBe(200);
    const fresh = await h.login('carol', 'password-of-carol');
    expect(carol).not.toBe(fresh);
    const demoted = await call('PUT', '/api/users/admin/role', fresh, { role: 'user' });
    expect(demoted.status, demoted.text).toBe(200);
    expect(bodyOf('setUserRole', demoted).role).toBe('user');
    // The demoted admin's next request is a user's.
    expect(errorOf(await call('GET', '/api/users')).code).toBe('STEWARD_FORBIDDEN');
    expect(errorOf(await call('POST', '/api/users/carol/disable', fresh)).code).toBe('STEWARD_LAST_ADMIN');
    const refused = await h.server.store.listAudit({ action: 'user.disable.refused', limit: 5 });
    expect(refused[0]).toMatchObject({ actor: 'carol', target: 'carol', detail: { reason: 'last admin' } });
  });

  it('lets only one of two admins disabling each other at the same moment succeed', async () => {
    const carol = await h.userToken('carol', 'admin');
    const [first, second] = await Promise.all([
      call('POST', '/api/users/carol/disable', admin),
      call('POST', '/api/users/admin/disable', carol),
    ]);
    const statuses = [first.status, second.status];
    // One wins; the other is refused as the last admin, or (its token revoked by the winner) as unauthenticated.
    expect(statuses.filter((status) => status === 200)).toHaveLength(1);
    const enabledAdmins = (await h.server.store.listUsers()).filter(
      (user) => user.role === 'admin' && !user.disabled,
    );
    expect(enabledAdmins).toHaveLength(1);
  });

  it('refuses to delete a user with jobs not ended; once disabled (its jobs canceled) deletes it, keeping its jobs readable and its name retired', async () => {
    const id = bodyOf('submitJob', await submit()).id;
    const refused = await call('DELETE', '/api/users/alice');
    expect(refused.status).toBe(409);
    expect(errorOf(refused)).toMatchObject({ code: 'STEWARD_USER_HAS_JOBS', details: { jobs: 1 } });
    expect(errorOf(refused).message).toMatch(/steward user disable alice/);

    expect(bodyOf('disableUser', await call('POST', '/api/users/alice/disable')).canceledJobs).toEqual([id]);
    const deleted = await call('DELETE', '/api/users/alice');
    expect(deleted.status, deleted.text).toBe(204);

    const listed = bodyOf('listUsers', await call('GET', '/api/users')).users.map((user) => user.name);
    expect(listed).toEqual(['admin']);
    const all = bodyOf('listUsers', await call('GET', '/api/users?deleted=true')).users;
    expect(all.find((user) => user.name === 'alice')).toMatchObject({ disabled: true });
    expect(all.find((user) => user.name === 'alice')?.deletedAt).toMatch(/^\d{4}-/);
    // Past jobs and their audit trail stay readable by admins.
    expect(await job(id)).toMatchObject({ user: 'alice', state: 'canceled' });
    expect(bodyOf('listAudit', await call('GET', '/api/audit?actor=alice')).entries.length).toBeGreaterThan(
      0,
    );
    // No password, no tokens, no login, no re-creation.
    const stored = await h.server.store.getUser('alice');
    expect(stored?.passwordHash).toBeNull();
    expect(await h.server.store.listTokens('alice', 'login')).toEqual([]);
    const login = await h.raw({
      method: 'POST',
      url: '/api/auth/login',
      body: { user: 'alice', password: 'password-of-alice' },
    });
    expect(login.status).toBe(401);
    const again = await call('POST', '/api/users', admin, {
      name: 'alice',
      password: 'new-password-1',
      role: 'user',
    });
    expect(again.status).toBe(409);
    expect(errorOf(again).code).toBe('STEWARD_USER_NAME_RETIRED');
    // Gone for every other lifecycle call too.
    for (const [method, url] of [
      ['DELETE', '/api/users/alice'],
      ['POST', '/api/users/alice/enable'],
      ['POST', '/api/users/alice/disable'],
    ] as const) {
      expect(errorOf(await call(method, url)).code, url).toBe('STEWARD_NOT_FOUND');
    }
    const audit = await h.server.store.listAudit({ action: 'user.delete', limit: 5 });
    expect(audit[0]).toMatchObject({ actor: 'admin', target: 'alice' });
    const refusals = await h.server.store.listAudit({ action: 'user.delete.refused', limit: 5 });
    expect(refusals.map((entry) => entry.detail?.reason)).toEqual(['not found', 'live jobs']);
  });

  it("changes one's own password only with the current one, ending one's other sessions, and lets an admin reset anyone's", async () => {
    const other = await h.login('alice', 'password-of-alice');
    const missing = await call('PUT', '/api/users/alice/password', alice, { password: 'a-new-password' });
    expect(missing.status).toBe(400);
    expect(errorOf(missing).message).toMatch(/needs your current password/);
    const wrong = await call('PUT', '/api/users/alice/password', alice, {
      currentPassword: 'not-it',
      password: 'a-new-password',
    });
    expect(wrong.status).toBe(403);
    expect(errorOf(wrong).code).toBe('STEWARD_PASSWORD_WRONG');
    const short = await call('PUT', '/api/users/alice/password', alice, {
      currentPassword: 'password-of-alice',
      password: 'short',
    });
    expect(errorOf(short).code).toBe('STEWARD_BAD_REQUEST');

    const changed = await call('PUT', '/api/users/alice/password', alice, {
      currentPassword: 'password-of-alice',
      password: 'a-new-password',
    });
    expect(changed.status, changed.text).toBe(204);
    expect((await call('GET', '/api/me', alice)).status).toBe(200);
    expect((await call('GET', '/api/me', other)).status).toBe(401);
    await expect(h.login('alice', 'password-of-alice')).rejects.toThrow(/login as alice failed/);
    const fresh = await h.login('alice', 'a-new-password');

    // Not someone else's, unless an admin.
    await h.userToken('bob');
    const forbidden = await call('PUT', '/api/users/bob/password', alice, { password: 'bobs-new-password' });
    expect(forbidden.status).toBe(403);
    expect(errorOf(forbidden)).toMatchObject({ code: 'STEWARD_FORBIDDEN' });
    expect(errorOf(forbidden).message).toMatch(/only an admin/);
    const reset = await call('PUT', '/api/users/alice/password', admin, { password: 'reset-by-admin' });
    expect(reset.status).toBe(204);
    // An admin reset ends every session of the user.
    for (const token of [alice, fresh]) expect((await call('GET', '/api/me', token)).status).toBe(401);
    await h.login('alice', 'reset-by-admin');
    expect((await call('PUT', '/api/users/ghost/password', admin, { password: 'whatever-1' })).status).toBe(
      404,
    );

    const audit = await h.server.store.listAudit({ action: 'user.password', limit: 5 });
    expect(audit.map((entry) => [entry.actor, entry.target, entry.detail?.reset])).toEqual([
      ['admin', 'alice', true],
      ['alice', 'alice', false],
    ]);
    const refusals = await h.server.store.listAudit({ action: 'user.password.refused', limit: 10 });
    expect(refusals.map((entry) => entry.detail?.reason)).toEqual([
      'not found',
      'not admin',
      'wrong current password',
      'no current password',
    ]);
  });

  it('counts wrong current passwords against the login throttle, so a stolen token cannot guess the password', async () => {
    await h.dispose();
    h = await startHarness({
      backend,
      title: 'throttle',
      config: { loginThrottle: { maxFailuresPerUser: 2, maxFailuresPerSource: 20, window: '15m' } },
    });
    admin = await h.adminToken();
    alice = await h.userToken('alice');
    for (let i = 0; i < 2; i++) {
      const wrong = await call('PUT', '/api/users/alice/password', alice, {
        currentPassword: `guess-${i}`,
        password: 'a-new-password',
      });
      expect(errorOf(wrong).code).toBe('STEWARD_PASSWORD_WRONG');
    }
    const throttled = await call('PUT', '/api/users/alice/password', alice, {
      currentPassword: 'password-of-alice',
      password: 'a-new-password',
    });
    expect(throttled.status).toBe(429);
    expect(errorOf(throttled).code).toBe('STEWARD_LOGIN_THROTTLED');
  });

  it("refuses to set an LDAP user's password or role: they are the directory's", async () => {
    await h.server.store.upsertDirectoryUser({ name: 'dora', role: 'user', time: Date.now() });
    const password = await call('PUT', '/api/users/dora/password', admin, { password: 'a-new-password' });
    expect(password.status).toBe(409);
    expect(errorOf(password).code).toBe('STEWARD_USER_IN_DIRECTORY');
    expect(errorOf(password).message).toMatch(/LDAP user: its password is the directory's/);
    const role = await call('PUT', '/api/users/dora/role', admin, { role: 'admin' });
    expect(errorOf(role).code).toBe('STEWARD_USER_IN_DIRECTORY');
    const users = bodyOf('listUsers', await call('GET', '/api/users')).users;
    expect(users.map((user) => [user.name, user.source])).toEqual([
      ['admin', 'local'],
      ['alice', 'local'],
      ['dora', 'ldap'],
    ]);
  });

  it('refuses every user-management route to a non-admin with a message naming the admin role', async () => {
    await h.userToken('bob');
    for (const [method, url, body] of [
      ['POST', '/api/users/bob/disable', undefined],
      ['POST', '/api/users/bob/enable', undefined],
      ['DELETE', '/api/users/bob', undefined],
      ['PUT', '/api/users/alice/role', { role: 'admin' }],
      ['GET', '/api/users', undefined],
    ] as const) {
      const refused = await call(method, url, alice, body);
      expect(refused.status, url).toBe(403);
      expect(errorOf(refused).code).toBe('STEWARD_FORBIDDEN');
      expect(errorOf(refused).message).toMatch(/needs the admin role; ask an admin/);
    }
    expect((await h.server.store.getUser('bob'))?.disabled).toBe(false);
    expect((await call('POST', '/api/users/ghost/disable')).status).toBe(404);
    // Names the directory chose (not the local-user pattern) are addressable too.
    await h.server.store.upsertDirectoryUser({ name: 'John.Smith', role: 'user', time: Date.now() });
    const ldapName = await call('POST', '/api/users/John.Smith/disable');
    expect(ldapName.status, ldapName.text).toBe(200);
  });

  it("revokes one's own token at once, hides others' tokens from non-admins, and lets admins revoke anyone's", async () => {
    const ci = bodyOf('createToken', await call('POST', '/api/tokens', alice, { name: 'ci' }));
    const revoked = await call('DELETE', `/api/tokens/${ci.id}`, alice);
    expect(revoked.status).toBe(204);
    expect((await call('GET', '/api/me', ci.token)).status).toBe(401);
    expect((await call('DELETE', `/api/tokens/${ci.id}`, alice)).status).toBe(404);

    const bob = await h.userToken('bob');
    const bobs = bodyOf('createToken', await call('POST', '/api/tokens', bob, { name: 'laptop' }));
    const stolen = await call('DELETE', `/api/tokens/${bobs.id}`, alice);
    expect(stolen.status).toBe(404);
    expect((await call('GET', '/api/me', bobs.token)).status).toBe(200);
    const listing = await call('GET', '/api/tokens?user=bob', alice);
    expect(listing.status).toBe(403);
    expect(errorOf(listing).message).toMatch(/only admins can list another user's tokens/);

    const seen = bodyOf('listTokens', await call('GET', '/api/tokens?user=bob')).tokens;
    expect(seen).toEqual([expect.objectContaining({ id: bobs.id, name: 'laptop', user: 'bob' })]);
    expect((await call('DELETE', `/api/tokens/${bobs.id}`)).status).toBe(204);
    expect((await call('GET', '/api/me', bobs.token)).status).toBe(401);

    const audit = await h.server.store.listAudit({ action: 'token.revoke', limit: 5 });
    expect(audit.map((entry) => [entry.actor, entry.detail?.user])).toEqual([
      ['admin', 'bob'],
      ['alice', 'alice'],
    ]);
    const forbidden = await h.server.store.listAudit({ actor: 'alice', action: 'forbidden', limit: 5 });
    expect(forbidden.map((entry) => entry.target)).toEqual(['tokens of bob', `token ${bobs.id}`]);
  });

  it('tells the caller who it is: user, role, source and the token in use', async () => {
    const me = await call('GET', '/api/me', alice);
    expect(me.json).toMatchObject({
      user: 'alice',
      role: 'user',
      source: 'local',
      token: { kind: 'login', name: 'login' },
    });
    expect(bodyOf('me', me).token?.expiresAt).toMatch(/^\d{4}-/);
    const ci = bodyOf('createToken', await call('POST', '/api/tokens', alice, { name: 'ci' }));
    expect(bodyOf('me', await call('GET', '/api/me', ci.token)).token).toEqual({
      id: ci.id,
      kind: 'api',
      name: 'ci',
      expiresAt: null,
    });
  });
});

/**
 * The identity policy through a real `steward up` (as root): adversarial identities each end their job
 * `failed` with a stable code and an actionable message, and the agent keeps serving the next user.
 */
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiUser } from '../support/api.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { StewardInstance, isRoot, repoRoot, tempDir } from '../support/steward.js';

describe.runIf(isRoot)('identity policy in a running agent', () => {
  const osUsers = new OsUsers();
  let steward: StewardInstance;
  let admin: ApiUser;
  let scratch: string;
  let good: TestUser;
  const password = 'policy-password-1';
  // server user → [mapped OS name (or undefined: same name), expected code, message fragment]
  const cases = new Map<string, [string | undefined, string, string]>();

  beforeAll(async () => {
    scratch = await tempDir('policy');
    const allowed = await osUsers.group('pok');
    good = await osUsers.user('pgood', { groups: [allowed], createHome: false });
    const banned = await osUsers.user('pban', { groups: [allowed], createHome: false });
    const system = await osUsers.user('psys', { groups: [allowed], system: true, createHome: false });
    const outside = await osUsers.user('pout', { createHome: false });
    cases.set('zero', ['0day', 'STEWARD_USER_NAME_INVALID', 'starts with a digit']);
    cases.set('hash', ['#-1', 'STEWARD_USER_NAME_INVALID', 'shell characters']);
    cases.set('dots', ['../etc', 'STEWARD_USER_NAME_INVALID', '".."']);
    cases.set('semi', ['a;touch x', 'STEWARD_USER_NAME_INVALID', 'shell characters']);
    cases.set('rooty', ['root', 'STEWARD_USER_BANNED', "'root'"]);
    cases.set('alice', [banned.name, 'STEWARD_USER_BANNED', 'identity.bannedUsers']);
    cases.set('lowuid', [system.name, 'STEWARD_USER_UID_TOO_LOW', `uid ${system.uid} < minUid 1000`]);
    cases.set('ghost', ['nosuchuser_zz9', 'STEWARD_USER_UNKNOWN', 'does not exist']);
    cases.set(outside.name, [undefined, 'STEWARD_USER_GROUP_NOT_ALLOWED', 'none of identity.allowedGroups']);
    const userMap: Record<string, string> = {};
    for (const [server, [os]] of cases) if (os) userMap[server] = os;
    const config = path.join(scratch, 'steward.yaml');
    await writeFile(
      config,
      stringify({
        agent: {
          id: 'exec-policy',
          userMap,
          identity: { bannedUsers: ['root', 'daemon', banned.name], allowedGroups: [allowed] },
        },
      }),
    );
    steward = await StewardInstance.start({ extraArgs: ['--config', config] });
    admin = await ApiUser.login(steward.url, 'admin', steward.adminPassword);
    for (const name of [...cases.keys(), good.name]) await admin.createUser(name, password);
    // Every user runs `whoami` from their own personal space.
    const whoami = await readFile(path.join(repoRoot, 'examples', 'whoami.yaml'), 'utf8');
    for (const name of [...cases.keys(), good.name])
      await (await ApiUser.login(steward.url, name, password)).push(whoami);
  }, 60_000);

  afterAll(async () => {
    await steward?.destroy();
    await osUsers.cleanup();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 30_000);

  it('fails each adversarial identity with its own code and message, never starting an executor, and keeps serving', async () => {
    const sessions = await Promise.all(
      [...cases.keys()].map((name) => ApiUser.login(steward.url, name, password)),
    );
    const jobs = await Promise.all(sessions.map((user) => user.run('whoami', {}, 30_000)));
    for (const [index, [server, [, code, fragment]]] of [...cases].entries()) {
      const job = jobs[index]!;
      expect(job.state, `${server}: ${JSON.stringify(job.error)}`).toBe('failed');
      expect(job.error?.code, server).toBe(code);
      expect(job.error?.message, server).toContain(fragment);
      expect(job.error?.message, server).toContain('exec-policy');
      expect(job.executor, server).toBeNull();
      expect(job.steps.filter((step) => step.state === 'succeeded' || step.state === 'running')).toEqual([]);
    }
    // Nothing was touched for the refused names: no workspace directories, no escaped paths.
    const workspaces = path.join(steward.dataDir, 'workspaces');
    expect(await readdir(workspaces)).toEqual([]);

    const user = await ApiUser.login(steward.url, good.name, password);
    const ok = await user.run('whoami', {}, 30_000);
    expect(ok.state, JSON.stringify(ok.error)).toBe('succeeded');
    expect(ok.executor?.uid).toBe(good.uid);
    expect(steward.child?.exitCode).toBeNull();
  }, 60_000);
});

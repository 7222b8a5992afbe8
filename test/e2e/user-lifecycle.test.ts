/**
 * User lifecycle end to end, as root, through the real CLI against a real `steward up` whose jobs run as
 * real OS users: whoami, token revoke, passwd, the agents view of two users, and disabling a user whose job
 * is running (its processes end, the other user's job goes on), then deleting it; the last admin is kept.
 */
import { chmod, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OsUsers } from '../support/os-users.js';
import { CliUser, StewardInstance, isRoot, tempDir } from '../support/steward.js';
import { until as waitUntil } from '../support/wait.js';

interface JobJson {
  id: string;
  user: string;
  state: string;
  error: { code: string; message: string } | null;
}
interface AgentJson {
  id: string;
  executors: { user: string; uid: number; pid: number }[];
}

let steward: StewardInstance;
let admin: CliUser;
let alice: CliUser;
let bob: CliUser;
let scratch: string;
const osUsers = new OsUsers();

function parseJson<T>(text: string): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new Error(`not JSON: ${text.slice(0, 500)}`);
  }
}

/** The shared `until`, with room for `steward up` on a busy machine. */
const until = <T>(what: string, check: () => Promise<T>, timeoutMs = 60_000) =>
  waitUntil(what, check, timeoutMs, 200);

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Pushes and submits a job that records its shell's and its sleeper's pids, and waits until both run. */
async function startSleeper(user: CliUser): Promise<{ id: string; pids: number[] }> {
  const pidFile = path.join(scratch, `pids-${user.name}`);
  const file = path.join(scratch, `nap-${user.name}.yaml`);
  await writeFile(
    file,
    `name: nap-${user.name}\nsteps:\n  - id: nap\n    shell: |\n      sleep 300 &\n      echo $! >> ${pidFile}\n      echo $$ >> ${pidFile}\n      wait\n`,
  );
  const pushed = await user.run(['workflow', 'push', file]);
  expect(pushed.code, pushed.stderr).toBe(0);
  const submitted = await user.run(['run', `nap-${user.name}`, '--json']);
  expect(submitted.code, submitted.stderr).toBe(0);
  const id = parseJson<JobJson>(submitted.stdout).id;
  const pids = await until(`${user.name}'s job to start`, async () => {
    const lines = (await readFile(pidFile, 'utf8').catch(() => '')).trim().split('\n').filter(Boolean);
    return lines.length === 2 ? lines.map(Number) : undefined;
  });
  // The step runs before the agent's `running` event reaches the server: wait for the server to know it.
  let last = '';
  await until(`the server to see ${user.name}'s job running`, async () => {
    last = (await user.run(['job', id, '--json'])).stdout;
    return parseJson<JobJson>(last).state === 'running' ? true : undefined;
  }).catch((error: Error) => {
    throw new Error(`${error.message}; last seen: ${last}\n${steward.output.slice(-3000)}`);
  });
  return { id, pids };
}

beforeAll(async () => {
  if (!isRoot) return;
  scratch = await tempDir('users');
  await chmod(scratch, 0o777);
  // An agent id of its own: agents default to the host name, and an agent starting with the same id (another
  // test's `steward up` on this machine) kills what runs in that id's executor cgroups as stale.
  const config = path.join(scratch, 'steward.yaml');
  await writeFile(config, JSON.stringify({ agent: { id: `exec-users-${osUsers.tag}` } }));
  steward = await StewardInstance.start({ extraArgs: ['--config', config] });
  admin = await CliUser.create('admin', steward.url);
  await admin.login(steward.adminPassword);
  const aliceOs = await osUsers.user('ua');
  const bobOs = await osUsers.user('ub');
  for (const name of [aliceOs.name, bobOs.name]) {
    const added = await admin.run(['user', 'add', name, '--password-stdin'], { input: `${name}-password` });
    expect(added.code, added.stderr).toBe(0);
  }
  alice = await CliUser.create(aliceOs.name, steward.url);
  bob = await CliUser.create(bobOs.name, steward.url);
  await alice.login(`${aliceOs.name}-password`);
  await bob.login(`${bobOs.name}-password`);
}, 120_000);

afterAll(async () => {
  await steward?.destroy();
  for (const user of [admin, alice, bob]) await user?.cleanup();
  await osUsers.cleanup();
  if (scratch) await rm(scratch, { recursive: true, force: true });
}, 60_000);

describe.skipIf(!isRoot)('user lifecycle through the CLI against steward up', () => {
  it('whoami names the user, its role, its source and the token in use', async () => {
    const plain = await alice.run(['whoami']);
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stdout).toMatch(
      new RegExp(`^${alice.name} \\(user, local\\) at ${steward.url}; login session `),
    );
    const json = parseJson<Record<string, unknown>>((await admin.run(['whoami', '--json'])).stdout);
    expect(json).toMatchObject({
      server: steward.url,
      user: 'admin',
      role: 'admin',
      source: 'local',
      token: { kind: 'login', name: 'login' },
    });
  });

  it('token revoke ends a token at once; another user cannot revoke it, an admin can', async () => {
    const created = parseJson<{ id: string; token: string }>(
      (await alice.run(['token', 'create', 'ci', '--json'])).stdout,
    );
    const withToken = { STEWARD_SERVER: steward.url, STEWARD_TOKEN: created.token };
    expect((await alice.run(['whoami'], { env: withToken })).stdout).toMatch(/API token ci/);
    const stolen = await bob.run(['token', 'revoke', created.id]);
    expect(stolen.code).toBe(1);
    expect(stolen.stderr).toMatch(/STEWARD_NOT_FOUND/);
    expect((await alice.run(['whoami'], { env: withToken })).code).toBe(0);
    const revoked = await alice.run(['token', 'revoke', created.id]);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(revoked.stdout).toBe(`revoked token ${created.id}\n`);
    const refused = await alice.run(['whoami'], { env: withToken });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^steward: STEWARD_UNAUTHENTICATED: invalid or expired token/);

    const second = parseJson<{ id: string; token: string }>(
      (await bob.run(['token', 'create', 'laptop', '--json'])).stdout,
    );
    const listed = await admin.run(['token', 'list', '--user', bob.name]);
    expect(listed.stdout).toContain(second.id);
    expect((await admin.run(['token', 'revoke', second.id])).code).toBe(0);
    const gone = await bob.run(['whoami'], {
      env: { STEWARD_SERVER: steward.url, STEWARD_TOKEN: second.token },
    });
    expect(gone.code).toBe(1);
  });

  it('passwd changes your own password only with the current one, and an admin resets it', async () => {
    const wrong = await bob.run(['user', 'passwd', '--password-stdin'], {
      input: 'not-it\nbob-new-password\n',
    });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/STEWARD_PASSWORD_WRONG: the current password is wrong/);
    const other = await bob.run(['user', 'passwd', alice.name, '--password-stdin'], {
      input: 'x-password-1\n',
    });
    expect(other.stderr).toMatch(/STEWARD_FORBIDDEN: only an admin can set another user's password/);
    const changed = await bob.run(['user', 'passwd', '--password-stdin'], {
      input: `${bob.name}-password\nbob-new-password\n`,
    });
    expect(changed.code, changed.stderr).toBe(0);
    expect(changed.stdout).toMatch(/password changed/);
    // The session that changed it goes on; the old password no longer logs in.
    expect((await bob.run(['whoami'])).code).toBe(0);
    await expect(bob.login(`${bob.name}-password`)).rejects.toThrow(/wrong user name or password/);
    const reset = await admin.run(['user', 'passwd', bob.name, '--password-stdin'], {
      input: 'reset-by-admin\n',
    });
    expect(reset.code, reset.stderr).toBe(0);
    expect((await bob.run(['whoami'])).code).toBe(1);
    await bob.login('reset-by-admin');
  });

  it("shows each user only its own executor in `agents`, disables a user with a running job (ending its processes) while the other's runs on, then deletes it", async () => {
    const mine = await startSleeper(alice);
    const theirs = await startSleeper(bob);

    // Item 5: both executors are live; each user sees only its own.
    const agentsOf = async (user: CliUser) =>
      parseJson<{ agents: AgentJson[] }>((await user.run(['agents', '--json'])).stdout).agents;
    await until('both executors in the admin view', async () => {
      const users = (await agentsOf(admin)).flatMap((agent) => agent.executors.map((e) => e.user));
      return users.includes(alice.name) && users.includes(bob.name) ? true : undefined;
    });
    for (const [user, other] of [
      [alice, bob],
      [bob, alice],
    ] as const) {
      const agents = await agentsOf(user);
      expect(agents.length).toBeGreaterThan(0);
      expect(
        agents.flatMap((agent) => agent.executors.map((e) => e.user)),
        JSON.stringify(agents),
      ).toEqual([user.name]);
      expect(JSON.stringify(agents)).not.toContain(other.name);
    }

    const disabled = await admin.run(['user', 'disable', alice.name]);
    expect(disabled.code, disabled.stderr).toBe(0);
    expect(disabled.stdout, (await admin.run(['job', mine.id, '--json'])).stdout).toBe(
      `disabled user ${alice.name}: tokens revoked, 1 job(s) canceled: ${mine.id}\n`,
    );
    // At once: the next request with the user's token is refused.
    const refused = await alice.run(['whoami']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/STEWARD_UNAUTHENTICATED: this user is disabled/);
    const job = await until('the job to end canceled', async () => {
      const shown = parseJson<JobJson>((await admin.run(['job', mine.id, '--json'])).stdout);
      return shown.state === 'canceled' ? shown : undefined;
    });
    expect(job.error?.code).toBe('STEWARD_JOB_CANCELED');
    // The CLI has no audit command: read it over the API with an admin token.
    const auditToken = parseJson<{ token: string }>(
      (await admin.run(['token', 'create', 'audit', '--json'])).stdout,
    );
    const audit = (await (
      await fetch(`${steward.url}/api/audit?action=job.cancel`, {
        headers: { authorization: `Bearer ${auditToken.token}` },
      })
    ).json()) as { entries: { target: string; detail: { reason?: string } }[] };
    expect(audit.entries.find((entry) => entry.target === mine.id)?.detail.reason).toBe(
      `canceled: user ${alice.name} was disabled by admin`,
    );
    await until('the job processes to end', async () => (mine.pids.some(alive) ? undefined : true), 30_000);
    // The other user's job was not touched.
    expect(parseJson<JobJson>((await bob.run(['job', theirs.id, '--json'])).stdout).state).toBe('running');
    expect(theirs.pids.every(alive)).toBe(true);
    expect((await bob.run(['cancel', theirs.id, '--wait'])).code).toBe(0);

    const deleted = await admin.run(['user', 'delete', alice.name]);
    expect(deleted.code, deleted.stderr).toBe(0);
    const listed = await admin.run(['user', 'list']);
    expect(listed.stdout).not.toContain(alice.name);
    expect(listed.stdout).toMatch(new RegExp(`${bob.name}\\s+user\\s+local\\s`));
    expect((await admin.run(['user', 'list', '--deleted'])).stdout).toMatch(
      new RegExp(`${alice.name}\\s+user\\s+local\\s+.+deleted`),
    );
    // The past job stays readable by admins; the name cannot come back.
    expect(parseJson<JobJson>((await admin.run(['job', mine.id, '--json'])).stdout).user).toBe(alice.name);
    const again = await admin.run(['user', 'add', alice.name, '--password-stdin'], {
      input: 'another-password',
    });
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/STEWARD_USER_NAME_RETIRED/);
  }, 180_000);

  it('refuses to disable or delete the last admin, saying who can fix it', async () => {
    for (const args of [
      ['user', 'disable', 'admin'],
      ['user', 'delete', 'admin'],
      ['user', 'role', 'admin', 'user'],
    ]) {
      const refused = await admin.run(args);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(
        /^steward: STEWARD_LAST_ADMIN: cannot \w+ admin: it is the last enabled admin/,
      );
      expect(refused.stderr).toMatch(/steward user role NAME admin/);
    }
    const byUser = await bob.run(['user', 'disable', 'admin']);
    expect(byUser.stderr).toMatch(/STEWARD_FORBIDDEN: this needs the admin role; ask an admin/);
    expect((await admin.run(['whoami'])).code).toBe(0);
  });
});

/**
 * The seed's scenario end to end: users that exist only in LDAP (a private slapd) log in with the real CLI
 * to a real `steward up --config` that authenticates against that slapd, and their jobs run under their LDAP
 * uid and groups, resolved through NSS (nslcd + libnss-ldapd), with the home directory created on first use.
 *
 * The machine's NSS configuration is never changed: `steward up` runs in a private mount namespace where
 * /etc/nsswitch.conf, /etc/nslcd.conf and /run/nslcd are bind-mounted from this test's temp dir and nslcd
 * runs against the test's slapd. The test checks that the LDAP users stay unknown outside the namespace and
 * that /etc/nsswitch.conf is byte-for-byte unchanged afterwards (restoring it if it ever were not).
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { chown, mkdir, readFile, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ADMINS_GROUP_DN,
  BASE_DN,
  DATA_GROUP,
  GROUPS_DN,
  PEOPLE_DN,
  SERVICE_DN,
  SERVICE_PASSWORD,
  Slapd,
  USERS_GROUP_DN,
} from '../support/slapd.js';
import { CliUser, StewardInstance, isRoot, repoRoot, run, tempDir } from '../support/steward.js';

const execFileAsync = promisify(execFile);
const NSSWITCH = '/etc/nsswitch.conf';
const NSLCD_RUN_DIR = '/run/nslcd';
const runner = path.join(repoRoot, 'test', 'support', 'nss-namespace.mjs');
const canRun = isRoot && existsSync('/usr/sbin/nslcd') && existsSync('/usr/sbin/slapd');

interface JobJson {
  id: string;
  state: string;
  error: { code: string; message: string } | null;
  executor: { uid: number; gid: number; groups: number[]; osUser: string } | null;
}

let slapd: Slapd | undefined;
let steward: StewardInstance | undefined;
let scratch: string;
let homeRoot: string;
let nsswitchBefore: Buffer;
let createdRunDir = false;
const cliUsers: CliUser[] = [];

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

async function cli(name: string, password: string): Promise<CliUser> {
  const user = await CliUser.create(name, steward!.url);
  cliUsers.push(user);
  await user.login(password);
  return user;
}

describe.runIf(canRun)('LDAP users end to end (slapd + nslcd in a private mount namespace)', () => {
  beforeAll(async () => {
    nsswitchBefore = await readFile(NSSWITCH);
    scratch = await tempDir('ldap-e2e');
    homeRoot = path.join(scratch, 'home');
    await mkdir(homeRoot, { mode: 0o755 });
    slapd = await Slapd.start({ tag: randomBytes(2).toString('hex'), homeRoot });

    const nss = path.join(scratch, 'nss');
    const socketDir = path.join(nss, 'run');
    await mkdir(socketDir, { recursive: true, mode: 0o755 });
    const nslcdUser = await execFileAsync('id', ['-u', 'nslcd']);
    const nslcdGroup = await execFileAsync('id', ['-g', 'nslcd']);
    await chown(socketDir, Number(nslcdUser.stdout), Number(nslcdGroup.stdout));
    await writeFile(
      path.join(nss, 'nsswitch.conf'),
      'passwd: files ldap\ngroup: files ldap\nshadow: files\nhosts: files dns\n',
    );
    await writeFile(
      path.join(nss, 'nslcd.conf'),
      [
        'uid nslcd',
        'gid nslcd',
        `uri ${slapd.url}`,
        `base ${BASE_DN}`,
        `base passwd ${PEOPLE_DN}`,
        'bind_timelimit 2',
        'timelimit 2',
        'reconnect_sleeptime 1',
        'reconnect_retrytime 2',
        'nss_initgroups_ignoreusers ALLLOCAL',
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    if (!existsSync(NSLCD_RUN_DIR)) {
      await mkdir(NSLCD_RUN_DIR, { mode: 0o755 });
      createdRunDir = true;
    }
    const spec = path.join(nss, 'spec.json');
    await writeFile(
      spec,
      JSON.stringify({
        binds: [
          [path.join(nss, 'nsswitch.conf'), NSSWITCH],
          [path.join(nss, 'nslcd.conf'), '/etc/nslcd.conf'],
          [socketDir, NSLCD_RUN_DIR],
        ],
        socket: path.join(NSLCD_RUN_DIR, 'socket'),
      }),
    );

    const passwordFile = path.join(scratch, 'ldap-bind-password');
    await writeFile(passwordFile, `${SERVICE_PASSWORD}\n`, { mode: 0o600 });
    const config = path.join(scratch, 'steward.yaml');
    await writeFile(
      config,
      JSON.stringify({
        server: {
          ldap: {
            url: slapd.url,
            startTls: true,
            caFile: slapd.caFile,
            bindDn: SERVICE_DN,
            bindPasswordFile: passwordFile,
            userBase: PEOPLE_DN,
            adminGroups: [ADMINS_GROUP_DN],
            allowedGroups: [USERS_GROUP_DN],
            timeout: '3s',
          },
        },
        agent: { workspaceRoot: path.join(scratch, 'workspaces') },
      }),
    );
    steward = await StewardInstance.start({
      extraArgs: ['--config', config],
      launcher: ['unshare', '--mount', '--propagation', 'private', '--', process.execPath, runner, spec],
    });
  }, 90_000);

  afterAll(async () => {
    try {
      await steward?.destroy();
      for (const user of cliUsers) await user.cleanup();
      await slapd?.stop();
      if (createdRunDir) await rmdir(NSLCD_RUN_DIR).catch(() => undefined);
      if (scratch) await rm(scratch, { recursive: true, force: true });
    } finally {
      const after = await readFile(NSSWITCH);
      if (nsswitchBefore && sha256(after) !== sha256(nsswitchBefore)) {
        await writeFile(NSSWITCH, nsswitchBefore);
        // eslint-disable-next-line no-unsafe-finally -- the machine's NSS config changing is a failure, after restoring it.
        throw new Error(`${NSSWITCH} changed during the test; restored`);
      }
    }
  }, 60_000);

  it("runs an LDAP-only user's job as their LDAP uid and groups, creating their home on first use", async () => {
    const { alice } = slapd!.people;
    // Outside the namespace the machine does not know the user.
    expect((await run('getent', ['passwd', alice.uid])).code).toBe(2);
    expect(existsSync(path.join(homeRoot, alice.uid))).toBe(false);

    const user = await cli(alice.uid, alice.password);
    const me = await user.run(['login', '--server', steward!.url, '--user', alice.uid, '--password-stdin'], {
      input: alice.password,
    });
    expect(me.stdout).toContain(`as ${alice.uid} (admin`);
    const pushed = await user.run(['workflow', 'push', 'examples/whoami.yaml']);
    expect(pushed.code, pushed.stderr).toBe(0);
    const result = await user.run(['run', 'whoami', '--wait', '--json']);
    const job = JSON.parse(result.stdout) as JobJson;
    expect(job.state, `${result.stderr}\n${result.stdout}\n${steward!.output}`).toBe('succeeded');
    expect(job.executor?.uid).toBe(alice.uidNumber);
    expect(job.executor?.osUser).toBe(alice.uid);
    expect(job.executor?.gid).toBe(alice.gidNumber);
    expect(job.executor?.groups).toEqual(expect.arrayContaining([alice.gidNumber, DATA_GROUP.gidNumber]));

    const out = path.join(scratch, 'out-alice');
    expect((await user.run(['results', job.id, '--out', out])).code).toBe(0);
    const id = await readFile(path.join(out, 'id.txt'), 'utf8');
    expect(id).toContain(`uid=${alice.uidNumber}(${alice.uid})`);
    expect(id).toContain(`gid=${alice.gidNumber}(${alice.uid})`);
    expect(id).toContain(`${DATA_GROUP.gidNumber}(${DATA_GROUP.cn})`);
    const env = await readFile(path.join(out, 'env.txt'), 'utf8');
    expect(env).toContain(`HOME=${path.join(homeRoot, alice.uid)}`);
    expect(env).not.toMatch(/stw_|SERVICE_PASSWORD|service-password/);

    const home = await stat(path.join(homeRoot, alice.uid));
    expect(home.uid).toBe(alice.uidNumber);
    expect(home.mode & 0o777).toBe(0o700);
  });

  it('gives LDAP users their role from groups through the CLI and refuses users outside the allowed group', async () => {
    const { bob, carol } = slapd!.people;
    const bobCli = await cli(bob.uid, bob.password);
    const users = await bobCli.run(['user', 'list']);
    expect(users.code).not.toBe(0);
    expect(users.stderr).toContain('STEWARD_FORBIDDEN');

    const carolCli = await CliUser.create(carol.uid, steward!.url);
    cliUsers.push(carolCli);
    const refused = await carolCli.run(
      ['login', '--server', steward!.url, '--user', carol.uid, '--password-stdin'],
      { input: carol.password },
    );
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('STEWARD_UNAUTHENTICATED: wrong user name or password');
  });

  it("runs a shared space's workflow, pushed by one member of an LDAP group, as another member's own account", async () => {
    const { alice, bob, dave } = slapd!.people;
    const groupDn = `cn=stlfin${randomBytes(2).toString('hex')},${GROUPS_DN}`;
    await slapd!.admin((client) =>
      client.add(groupDn, {
        objectClass: 'groupOfNames',
        cn: groupDn.slice(3, groupDn.indexOf(',')),
        member: [slapd!.personDn(alice.uid), slapd!.personDn(bob.uid)],
      }),
    );
    // alice is an admin (through her group): she creates the space and gives the LDAP group the editor role.
    const aliceCli = await cli(alice.uid, alice.password);
    for (const args of [
      ['space', 'create', 'finance', '--description', 'finance reports'],
      ['space', 'member', 'add', 'finance', '--group', groupDn, '--role', 'editor'],
      ['workflow', 'push', '--space', 'finance', 'examples/whoami.yaml'],
    ]) {
      const done = await aliceCli.run(args);
      expect(done.code, `${args.join(' ')}: ${done.stderr}`).toBe(0);
    }
    const shown = await aliceCli.run(['space', 'show', 'finance']);
    expect(shown.stdout).toContain(groupDn);

    const bobCli = await cli(bob.uid, bob.password);
    const result = await bobCli.run(['run', 'finance/whoami', '--wait', '--json']);
    const job = JSON.parse(result.stdout) as JobJson & {
      workflow: { space: string; name: string; version: number; pushedBy: string };
    };
    expect(job.state, `${result.stderr}\n${result.stdout}`).toBe('succeeded');
    expect(job.workflow).toEqual({ space: 'finance', name: 'whoami', version: 1, pushedBy: alice.uid });
    expect(job.executor?.uid).toBe(bob.uidNumber);
    expect(job.executor?.osUser).toBe(bob.uid);

    // dave is in no group of the space.
    const daveCli = await cli(dave.uid, dave.password);
    for (const args of [
      ['workflow', 'list', '--space', 'finance'],
      ['workflow', 'show', 'finance/whoami'],
      ['run', 'finance/whoami'],
      ['workflow', 'push', '--space', 'finance', 'examples/whoami.yaml'],
    ]) {
      const refused = await daveCli.run(args);
      expect(refused.code, args.join(' ')).toBe(1);
      expect(refused.stderr, args.join(' ')).toContain('STEWARD_SPACE_NOT_MEMBER');
    }
  });

  it('refuses a job clearly and quickly when the directory is down or silent on the executor side', async () => {
    const { dave } = slapd!.people;
    const daveCli = await cli(dave.uid, dave.password);
    const pushed = await daveCli.run(['workflow', 'push', 'examples/whoami.yaml']);
    expect(pushed.code, pushed.stderr).toBe(0);
    await slapd!.halt();
    // First nothing listens on the directory's port, then something accepts connections and never answers.
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => sockets.add(socket));
    try {
      for (const outage of ['down', 'silent']) {
        if (outage === 'silent') {
          await new Promise<void>((resolve) => silent.listen(slapd!.port, '127.0.0.1', resolve));
        }
        const started = Date.now();
        // The server trusts its cached directory answer (cacheTtl); the agent has to look dave up now.
        const result = await daveCli.run(['run', 'whoami', '--wait', '--json'], { timeoutMs: 60_000 });
        const job = JSON.parse(result.stdout) as JobJson;
        expect(job.state, outage).toBe('failed');
        expect(job.error?.code, outage).toBe('STEWARD_USER_UNKNOWN');
        expect(job.error?.message, outage).toContain(dave.uid);
        expect(Date.now() - started, outage).toBeLessThan(30_000);
      }
    } finally {
      for (const socket of sockets) socket.destroy();
      if (silent.listening) await new Promise((resolve) => silent.close(resolve));
      await slapd!.run();
    }
  });
});

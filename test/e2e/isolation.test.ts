/**
 * Isolation between users, as root with real OS accounts through a real `steward up`: what one user's job
 * can see of another's home, workspace, temp, job directories and logs — from a shell step and a python
 * step, and through the API — plus the process a step runs in (identity, environment, open fds).
 */
import { execFile } from 'node:child_process';
import { readdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiUser } from '../support/api.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { StewardInstance, isRoot, tempDir } from '../support/steward.js';

const execFileAsync = promisify(execFile);

const plant = {
  name: 'plant',
  steps: [
    {
      id: 'files',
      shell: [
        'for d in "$HOME" "$TMPDIR" "$STEWARD_JOB_DIR" "$STEWARD_JOB_DIR/../.."; do echo secret > "$d/secret.txt"; done',
        'echo "plant done" >&2',
        'umask 022',
        'echo open > "$TMPDIR/umask022.txt"',
        'mkdir "$TMPDIR/dir022"',
        'stat -c "%a %n" "$TMPDIR/umask022.txt" "$TMPDIR/dir022" > "$STEWARD_OUTPUT_DIR/modes.txt"',
        'id > "$STEWARD_OUTPUT_DIR/id.txt"',
        'env > "$STEWARD_OUTPUT_DIR/env.txt"',
        'ls /proc/self/fd > "$STEWARD_OUTPUT_DIR/fds.txt"',
        'ps -o sid=,tty= -p $$ > "$STEWARD_OUTPUT_DIR/session.txt"',
      ].join('\n'),
    },
    {
      id: 'py',
      python: [
        'import os',
        'os.umask(0o022)',
        'p = os.path.join(os.environ["TMPDIR"], "py022.txt")',
        'open(p, "w").write("x")',
        'out = os.environ["STEWARD_OUTPUT_DIR"]',
        'open(os.path.join(out, "pymodes.txt"), "w").write("%o" % (os.stat(p).st_mode & 0o777))',
        'fds = sorted(int(f) for f in os.listdir("/proc/self/fd"))',
        'info = [(fd, os.readlink("/proc/self/fd/%d" % fd)) for fd in fds if os.path.exists("/proc/self/fd/%d" % fd)]',
        'open(os.path.join(out, "pyfds.txt"), "w").write("\\n".join("%d %s" % i for i in info))',
      ].join('\n'),
    },
  ],
  outputs: ['files', 'py'],
};

const probeScript = [
  'probe() { if "$@" >/dev/null 2>&1; then echo "ALLOWED $*"; else echo "denied $*"; fi; }',
  'for d in $targets; do',
  '  probe ls "$d"; probe cat "$d/secret.txt"; probe touch "$d/intruder"; probe mkdir "$d/intruder.d"',
  'done > "$STEWARD_OUTPUT_DIR/shell.txt"',
].join('\n');

const probePython = [
  'import os',
  'lines = []',
  'def probe(what, fn):',
  '    try:',
  '        fn(); lines.append("ALLOWED " + what)',
  '    except OSError as e:',
  '        lines.append("denied %s (%s)" % (what, e.strerror))',
  'for d in os.environ["targets"].split():',
  '    probe("listdir " + d, lambda: os.listdir(d))',
  '    probe("read " + d, lambda: open(os.path.join(d, "secret.txt")).read())',
  '    probe("write " + d, lambda: open(os.path.join(d, "intruder.py"), "w").write("x"))',
  '    probe("scandir-walk " + d, lambda: [e.name for e in os.scandir(os.path.dirname(d))])',
  'open(os.path.join(os.environ["STEWARD_OUTPUT_DIR"], "python.txt"), "w").write("\\n".join(lines))',
].join('\n');

const probe = {
  name: 'probe',
  params: { targets: { type: 'string' } },
  steps: [
    { id: 'sh', shell: probeScript },
    { id: 'py', python: probePython },
  ],
  outputs: ['sh', 'py'],
};

describe.runIf(isRoot)("one user's job cannot reach another user's files", () => {
  const osUsers = new OsUsers();
  let steward: StewardInstance;
  let scratch: string;
  let auditors: string;
  let alice: TestUser;
  let bob: TestUser;
  let aliceApi: ApiUser;
  let bobApi: ApiUser;
  let bobJob: string;
  const password = 'isolation-password-1';

  async function result(user: ApiUser, jobId: string, name: string): Promise<string> {
    const { status, body } = await user.request('GET', `/api/jobs/${jobId}/results/${name}`);
    expect(status, `${name}: ${JSON.stringify(body)}`).toBe(200);
    return String(body);
  }

  beforeAll(async () => {
    scratch = await tempDir('iso');
    auditors = await osUsers.group('aud');
    alice = await osUsers.user('ia');
    // B has never logged in on this machine: the agent creates the home from /etc/skel, 0700.
    bob = await osUsers.user('ib', { createHome: false });
    const config = path.join(scratch, 'steward.yaml');
    await writeFile(config, stringify({ agent: { keepJobDirs: true, auditorsGroup: auditors } }));
    steward = await StewardInstance.start({ extraArgs: ['--config', config] });
    const admin = await ApiUser.login(steward.url, 'admin', steward.adminPassword);
    for (const user of [alice, bob]) await admin.createUser(user.name, password);
    aliceApi = await ApiUser.login(steward.url, alice.name, password);
    bobApi = await ApiUser.login(steward.url, bob.name, password);
    // Each user runs workflows of their own personal space.
    for (const user of [aliceApi, bobApi])
      for (const workflow of [plant, probe]) await user.push(stringify(workflow));
    const planted = await bobApi.run('plant', {}, 60_000);
    expect(planted.state, JSON.stringify(planted)).toBe('succeeded');
    bobJob = planted.id;
  }, 90_000);

  afterAll(async () => {
    await steward?.destroy();
    await osUsers.cleanup();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 30_000);

  it("denies listing, reading and writing B's home, workspace, temp, job dir and logs from A's shell and python steps", async () => {
    const userRoot = path.join(steward.dataDir, 'workspaces', bob.name);
    const jobDirs = await readdir(path.join(userRoot, 'work', 'jobs'));
    expect(jobDirs.length).toBeGreaterThan(0);
    const targets = [
      `/home/${bob.name}`,
      userRoot,
      path.join(userRoot, 'work'),
      // The job's own TMPDIR (kept: keepJobDirs).
      path.join(userRoot, 'tmp', `${bobJob}-1`),
      path.join(userRoot, 'work', 'jobs', jobDirs[0]!),
      path.join(steward.dataDir, 'logs', bob.name),
      path.join(steward.dataDir, 'jobs', bobJob),
      path.join(steward.dataDir, 'results', bobJob),
    ];
    expect((await stat(`/home/${bob.name}`)).mode & 0o7777).toBe(0o700);
    // The secrets are really there (seen as root), so a denial is not an absent file.
    for (const target of targets.slice(0, 5)) {
      if (target === userRoot) continue;
      await expect(stat(path.join(target, 'secret.txt')), target).resolves.toBeTruthy();
    }
    const probed = await aliceApi.run('probe', { targets: targets.join(' ') }, 60_000);
    expect(probed.state, JSON.stringify(probed)).toBe('succeeded');
    const shell = await result(aliceApi, probed.id, 'shell.txt');
    const python = await result(aliceApi, probed.id, 'python.txt');
    expect(shell.trim().split('\n')).toHaveLength(targets.length * 4);
    expect(python.trim().split('\n')).toHaveLength(targets.length * 4);
    expect(shell).not.toContain('ALLOWED');
    // Listing a parent may be allowed (e.g. /home); everything of B's is not.
    expect(
      python.split('\n').filter((line) => line.startsWith('ALLOWED') && !line.includes('scandir')),
    ).toEqual([]);
    for (const target of targets) {
      const left = await readdir(target).catch(() => [] as string[]);
      expect(
        left.filter((name) => name.startsWith('intruder')),
        target,
      ).toEqual([]);
    }
  }, 60_000);

  it("denies B's job, logs and results to A through the API", async () => {
    for (const route of [
      `/api/jobs/${bobJob}`,
      `/api/jobs/${bobJob}/logs`,
      `/api/jobs/${bobJob}/results`,
      `/api/jobs/${bobJob}/results/id.txt`,
    ]) {
      const { status } = await aliceApi.request('GET', route);
      expect(status, route).toBe(404);
    }
    const { status } = await bobApi.request('GET', `/api/jobs/${bobJob}/results/id.txt`);
    expect(status).toBe(200);
  });

  it('keeps files created with umask 022 private, and gives the auditors group read access by ACL', async () => {
    const modes = await result(bobApi, bobJob, 'modes.txt');
    for (const line of modes.trim().split('\n')) {
      const mode = Number.parseInt(line.split(' ')[0]!, 8);
      expect(mode & 0o007, line).toBe(0);
      expect(mode & 0o020, line).toBe(0);
    }
    expect(Number.parseInt(await result(bobApi, bobJob, 'pymodes.txt'), 8) & 0o027).toBe(0);
    const tmp = path.join(steward.dataDir, 'workspaces', bob.name, 'tmp');
    // TMPDIR is the job's own (kept here: keepJobDirs), inside the user's tmp dir.
    const { stdout } = await execFileAsync('getfacl', ['-p', path.join(tmp, `${bobJob}-1`, 'umask022.txt')]);
    expect(stdout).toContain(`group:${auditors}:r-x\t#effective:r--`);
    expect(stdout).toMatch(/^other::---$/m);
    const dirAcl = (await execFileAsync('getfacl', ['-p', tmp])).stdout;
    expect(dirAcl).toContain(`default:group:${auditors}:r-x`);
    expect(dirAcl).toMatch(/^default:other::---$/m);
  });

  it('runs steps as the user with their groups, a clean environment, only the expected fds and no terminal', async () => {
    const id = await result(bobApi, bobJob, 'id.txt');
    expect(id).toContain(`uid=${bob.uid}(${bob.name}) gid=${bob.gid}(${bob.name})`);
    const env = Object.fromEntries(
      (await result(bobApi, bobJob, 'env.txt'))
        .trim()
        .split('\n')
        .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
    );
    expect(env.HOME).toBe(`/home/${bob.name}`);
    expect(env.USER).toBe(bob.name);
    expect(env.LOGNAME).toBe(bob.name);
    expect(env.TMPDIR).toBe(path.join(steward.dataDir, 'workspaces', bob.name, 'tmp', `${bobJob}-1`));
    const names = Object.keys(env);
    const allowed = new Set([
      'HOME',
      'USER',
      'LOGNAME',
      'SHELL',
      'PATH',
      'LANG',
      'TMPDIR',
      'PWD',
      'SHLVL',
      '_',
      'OLDPWD',
    ]);
    const extra = names.filter((name) => !allowed.has(name) && !name.startsWith('STEWARD_'));
    expect(extra).toEqual([]);
    expect(names.filter((name) => name.startsWith('STEWARD_')).sort()).toEqual([
      'STEWARD_INPUT_DIR',
      'STEWARD_JOB_DIR',
      'STEWARD_OUTPUT_DIR',
      'STEWARD_PARAMS_FILE',
      'STEWARD_STEP_ID',
    ]);
    expect(JSON.stringify(env)).not.toMatch(/password|token|stw_|\/root/i);
    // ls itself: stdin, stdout, stderr and the directory it reads — nothing inherited from agent or executor.
    expect((await result(bobApi, bobJob, 'fds.txt')).trim().split('\n').map(Number)).toEqual([0, 1, 2, 3]);
    const pyfds = (await result(bobApi, bobJob, 'pyfds.txt')).trim().split('\n');
    expect(pyfds[0]).toBe('0 /dev/null');
    // stdout and stderr are FIFOs (unlinked once open) the executor reads into the bounded step logs.
    expect(pyfds.slice(1, 3), pyfds.join('\n')).toEqual([
      expect.stringMatching(/^1 \/.*\/py\.stdout\.log\.fifo \(deleted\)$/),
      expect.stringMatching(/^2 \/.*\/py\.stderr\.log\.fifo \(deleted\)$/),
    ]);
    expect(pyfds.length, pyfds.join('\n')).toBeLessThanOrEqual(4);
    const session = (await result(bobApi, bobJob, 'session.txt')).trim().split(/\s+/);
    expect(session[1]).toBe('?');
  });
});

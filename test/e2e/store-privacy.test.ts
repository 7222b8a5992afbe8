/**
 * The store is private: as a real OS user, a job under a real `steward up` cannot read the SQLite store, its
 * -wal and -shm, or the signing key — from a shell step, a python step, or a sql step through DuckDB's
 * read_blob/read_text. And a daemon refuses to start on a store readable by other users.
 */
import { chmod, chown, lstat, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiUser } from '../support/api.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { CliUser, StewardInstance, freePort, isRoot, run, stewardBin, tempDir } from '../support/steward.js';

const probeShell = [
  'probe() { if "$@" >/dev/null 2>&1; then echo "ALLOWED $*"; else echo "denied $*"; fi; }',
  'for f in $targets; do probe cat "$f"; probe head -c1 "$f"; done > "$STEWARD_OUTPUT_DIR/shell.txt"',
  'probe ls "$data" >> "$STEWARD_OUTPUT_DIR/shell.txt"',
  'probe cat "$own" >> "$STEWARD_OUTPUT_DIR/shell.txt"',
].join('\n');

const probePython = [
  'import os',
  'lines = []',
  'def probe(what, fn):',
  '    try:',
  '        fn(); lines.append("ALLOWED " + what)',
  '    except OSError as e:',
  '        lines.append("denied %s (%s)" % (what, e.strerror))',
  'for f in os.environ["targets"].split():',
  '    probe("read " + f, lambda: open(f, "rb").read(1))',
  'probe("listdir " + os.environ["data"], lambda: os.listdir(os.environ["data"]))',
  'probe("read " + os.environ["own"], lambda: open(os.environ["own"]).read())',
  'open(os.path.join(os.environ["STEWARD_OUTPUT_DIR"], "python.txt"), "w").write("\\n".join(lines))',
].join('\n');

function sqlWorkflow(name: string, sql: string): Record<string, unknown> {
  return { name, steps: [{ id: 'peek', sql }] };
}

function quote(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}

describe.runIf(isRoot)('the store is private to root', () => {
  const osUsers = new OsUsers();
  let steward: StewardInstance;
  let scratch: string;
  let user: TestUser;
  let api: ApiUser;
  let targets: string[];
  let own: string;
  const password = 'store-privacy-password-1';

  beforeAll(async () => {
    scratch = await tempDir('store');
    user = await osUsers.user('sp');
    own = path.join(`/home/${user.name}`, 'mine.txt');
    await writeFile(own, 'my own file\n');
    await chown(own, user.uid, user.gid);
    // A data dir created world-readable, as an older version left it: start must narrow it.
    const dataDir = path.join(scratch, 'data');
    await mkdir(dataDir, { mode: 0o755 });
    await chmod(dataDir, 0o755);
    steward = await StewardInstance.start({ dataDir });
    const data = steward.dataDir;
    targets = [
      path.join(data, 'steward.db'),
      path.join(data, 'steward.db-wal'),
      path.join(data, 'steward.db-shm'),
      path.join(data, 'keys', 'offer-signing.pem'),
    ];
    const admin = await ApiUser.login(steward.url, 'admin', steward.adminPassword);
    await admin.createUser(user.name, password);
    // The user pushes into their own space and runs from it (workflows live in spaces).
    const cli = await CliUser.create(user.name, steward.url);
    await cli.login(password);
    const workflows: Record<string, unknown>[] = [
      {
        name: 'peek',
        params: {
          targets: { type: 'string' },
          data: { type: 'string' },
          own: { type: 'string' },
        },
        steps: [
          { id: 'sh', shell: probeShell },
          { id: 'py', python: probePython },
        ],
        outputs: ['sh', 'py'],
      },
      sqlWorkflow('own-blob', `SELECT octet_length(content) AS n FROM read_blob(${quote(own)})`),
      sqlWorkflow('own-text', `SELECT content FROM read_text(${quote(own)})`),
      ...targets.flatMap((target, index) => [
        sqlWorkflow(`blob${index}`, `SELECT octet_length(content) AS n FROM read_blob(${quote(target)})`),
        sqlWorkflow(`text${index}`, `SELECT content FROM read_text(${quote(target)})`),
      ]),
      sqlWorkflow('glob', `SELECT filename FROM read_blob(${quote(path.join(data, '**'))})`),
    ];
    for (const workflow of workflows) {
      const file = path.join(scratch, `${String(workflow.name)}.yaml`);
      await writeFile(file, stringify(workflow));
      const pushed = await cli.run(['workflow', 'push', file]);
      expect(pushed.code, pushed.stderr).toBe(0);
    }
    await cli.cleanup();
    api = await ApiUser.login(steward.url, user.name, password);
  }, 90_000);

  afterAll(async () => {
    await steward?.destroy();
    await osUsers.cleanup();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 30_000);

  it('creates the store files 0600, the data dir 0711 and every child but the workspace root 0700', async () => {
    const data = steward.dataDir;
    expect((await lstat(data)).mode & 0o7777).toBe(0o711);
    for (const target of targets) expect((await lstat(target)).mode & 0o7777, target).toBe(0o600);
    for (const entry of await readdir(data, { withFileTypes: true })) {
      const mode = (await lstat(path.join(data, entry.name))).mode & 0o7777;
      if (entry.name === 'workspaces') expect(mode, entry.name).toBe(0o755);
      else if (entry.isDirectory()) expect(mode, entry.name).toBe(0o700);
      else if (entry.isFile()) expect(mode & 0o077, entry.name).toBe(0);
    }
  });

  it("denies a shell step and a python step every file of the store and the keys, but not the user's own file", async () => {
    const job = await api.run('peek', { targets: targets.join(' '), data: steward.dataDir, own }, 60_000);
    expect(job.state, JSON.stringify(job)).toBe('succeeded');
    const shell = String((await api.request('GET', `/api/jobs/${job.id}/results/shell.txt`)).body);
    const python = String((await api.request('GET', `/api/jobs/${job.id}/results/python.txt`)).body);
    expect(shell.trim().split('\n')).toHaveLength(targets.length * 2 + 2);
    expect(python.trim().split('\n')).toHaveLength(targets.length + 2);
    for (const output of [shell, python]) {
      const allowed = output.split('\n').filter((line) => line.startsWith('ALLOWED'));
      // The control: the probe can succeed, so each denial is real.
      expect(allowed, output).toEqual([expect.stringContaining(own)]);
    }
    expect(python).toContain('Permission denied');
  }, 90_000);

  it('denies a sql step read_blob and read_text of every file of the store and the keys', async () => {
    const control = await Promise.all(['own-blob', 'own-text'].map((name) => api.run(name, {}, 60_000)));
    for (const job of control) {
      expect(job.state, JSON.stringify(job)).toBe('succeeded');
      expect(job.steps[0]?.rows, JSON.stringify(job)).toBe(1);
    }
    const jobs = await Promise.all(
      targets
        .flatMap((_, index) => [`blob${index}`, `text${index}`])
        .map((name) => api.run(name, {}, 60_000)),
    );
    for (const job of jobs) {
      // A file in the data dir (0711) can be found but not opened; one in keys/ (0700) cannot even be
      // found, and DuckDB reads no rows. Either way nothing of it is read.
      if (job.workflow.name.endsWith('3')) {
        expect(job.state === 'failed' || job.steps[0]?.rows === 0, JSON.stringify(job)).toBe(true);
      } else {
        expect(job.state, JSON.stringify(job)).toBe('failed');
        expect(job.error?.message, JSON.stringify(job.error)).toMatch(/permission denied/i);
      }
    }
    // A glob over the data dir cannot even list it.
    const glob = await api.run('glob', {}, 60_000);
    if (glob.state === 'succeeded') {
      const rows = await api.request('GET', `/api/jobs/${glob.id}/results/peek/preview`);
      expect(JSON.stringify(rows.body)).not.toContain('steward.db');
    } else {
      expect(glob.error?.message ?? '').not.toContain('steward.db');
    }
  }, 120_000);
});

describe.runIf(isRoot)('a daemon refuses a readable store', () => {
  it('refuses to start `steward up` on a store readable by others, with one line naming the chmod', async () => {
    const scratch = await tempDir('readable');
    try {
      const dataDir = path.join(scratch, 'data');
      const first = await StewardInstance.start({ dataDir });
      await first.stop();
      const db = path.join(dataDir, 'steward.db');
      await chmod(db, 0o644);
      const port = await freePort();
      const result = await run(process.execPath, [
        stewardBin,
        'up',
        '--port',
        String(port),
        '--data-dir',
        dataDir,
      ]);
      expect(result.code, result.stdout).not.toBe(0);
      const lines = result.stderr.trim().split('\n');
      expect(lines, result.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(/^steward: STEWARD_STORE_READABLE: .*steward\.db \(0644\).*Run: chmod 600 /);
      expect(lines[0]).toContain(`chmod 600 ${db}`);
      // It started nothing: the port was never taken, and the file is as the admin left it.
      expect((await lstat(db)).mode & 0o777).toBe(0o644);
      await chmod(db, 0o600);
      const again = await StewardInstance.start({ dataDir });
      await again.stop();
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  }, 90_000);
});

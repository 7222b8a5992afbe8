/**
 * Result names end to end, through a real `steward up`, real jobs as a real OS user and the real CLI: any
 * UTF-8 name downloads (RFC 6266 `filename*`), a 255-byte name round-trips, a name no stage can carry is
 * refused before any step runs (or before any upload), and terminal escape sequences in server-provided
 * strings never reach the terminal.
 */
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiUser } from '../support/api.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { CliUser, StewardInstance, isRoot, tempDir } from '../support/steward.js';

const unicodeName = 'é🙂.txt';
/** 125 × "é" (250 bytes) + "x.txt": exactly 255 bytes of UTF-8. */
const longName = `${'é'.repeat(125)}x.txt`;
const hostileName = '\x1b[31mred\x1b]0;pwned\x07\x9b2J.txt';
// eslint-disable-next-line no-control-regex
const ESCAPE = /[\x1b\x07\x9b]/;

const files: [string, string][] = [
  [unicodeName, 'smile\n'],
  [longName, 'long\n'],
  [hostileName, 'hostile\n'],
];

describe.runIf(isRoot)('result names end to end', () => {
  const osUsers = new OsUsers();
  let steward: StewardInstance;
  let scratch: string;
  let user: TestUser;
  let api: ApiUser;
  let cli: CliUser;
  let jobId: string;
  const password = 'result-names-password-1';

  async function push(workflow: Record<string, unknown>): Promise<{ code: number; stderr: string }> {
    const file = path.join(scratch, `${String(workflow.name)}.yaml`);
    await writeFile(file, stringify(workflow));
    return cli.run(['workflow', 'push', file]);
  }

  beforeAll(async () => {
    expect(Buffer.byteLength(longName)).toBe(255);
    scratch = await tempDir('names');
    user = await osUsers.user('rn');
    steward = await StewardInstance.start();
    const admin = await ApiUser.login(steward.url, 'admin', steward.adminPassword);
    await admin.createUser(user.name, password);
    cli = await CliUser.create(user.name, steward.url);
    await cli.login(password);
    const python = [
      'import json, os',
      `files = json.loads(${JSON.stringify(JSON.stringify(files))})`,
      'for name, text in files:',
      '    open(os.path.join(os.environ["STEWARD_OUTPUT_DIR"], name), "w").write(text)',
    ].join('\n');
    const pushed = await push({
      name: 'names',
      description: 'writes \x1b[2Jnames\x1b]8;;http://evil.example\x1b\\',
      steps: [{ id: 'files', python }],
    });
    expect(pushed.code, pushed.stderr).toBe(0);
    api = await ApiUser.login(steward.url, user.name, password);
    const job = await api.run('names', {}, 60_000);
    expect(job.state, JSON.stringify(job)).toBe('succeeded');
    jobId = job.id;
  }, 90_000);

  afterAll(async () => {
    await cli?.cleanup();
    await steward?.destroy();
    await osUsers.cleanup();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 30_000);

  it('downloads a UTF-8 name and a 255-byte name over HTTP with an RFC 6266 filename* and an ASCII filename', async () => {
    for (const [name, text] of files) {
      const response = await fetch(`${steward.url}/api/jobs/${jobId}/results/${encodeURIComponent(name)}`, {
        headers: { authorization: `Bearer ${await token()}` },
      });
      expect(response.status, name).toBe(200);
      expect(await response.text()).toBe(text);
      const disposition = response.headers.get('content-disposition') ?? '';
      const star = /filename\*=UTF-8''([^;]+)/.exec(disposition)?.[1];
      expect(star && decodeURIComponent(star), disposition).toBe(name);
      expect(disposition).toMatch(/^attachment; filename="[\x20-\x7e]+";/);
    }
  });

  it('downloads every name with `steward results --out`, byte for byte, and prints none of their escapes', async () => {
    const out = path.join(scratch, 'out');
    const downloaded = await cli.run(['results', jobId, '--out', out]);
    expect(downloaded.code, downloaded.stderr).toBe(0);
    expect((await readdir(out)).sort()).toEqual(files.map(([name]) => name).sort());
    for (const [name, text] of files) expect(await readFile(path.join(out, name), 'utf8')).toBe(text);
    expect(downloaded.stdout).not.toMatch(ESCAPE);
    expect(downloaded.stdout).toContain(unicodeName);
    expect(downloaded.stdout).toContain(longName);
    expect(downloaded.stdout).toContain('red');
    const listed = await cli.run(['results', jobId]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).not.toMatch(ESCAPE);
    expect(listed.stdout).toContain('red.txt');
    // --json keeps the exact names, escaped so that the document itself is inert on a terminal.
    const json = await cli.run(['--json', 'results', jobId]);
    expect(json.stdout).not.toMatch(ESCAPE);
    const names = (JSON.parse(json.stdout) as { results: { name: string }[] }).results.map((r) => r.name);
    expect(names.sort()).toEqual(files.map(([name]) => name).sort());
  }, 60_000);

  it('strips escapes from workflow descriptions and job errors, and leaves the log body raw', async () => {
    const pushed = await push({
      name: 'shouts',
      steps: [{ id: 'shout', shell: 'printf "\\033]0;owned\\007\\033[2Jboom\\n" >&2\nexit 3' }],
    });
    expect(pushed.code, pushed.stderr).toBe(0);
    const workflows = await cli.run(['workflow', 'list']);
    expect(workflows.stdout).toContain('names');
    expect(workflows.stdout + workflows.stderr).not.toMatch(ESCAPE);
    const shown = await cli.run(['workflow', 'show', 'names']);
    expect(shown.stdout).toContain('writes names');
    expect(shown.stdout).not.toMatch(ESCAPE);
    const ran = await cli.run(['run', 'shouts', '--wait']);
    expect(ran.code).not.toBe(0);
    expect(ran.stdout + ran.stderr).toContain('boom');
    expect(ran.stdout + ran.stderr).not.toMatch(ESCAPE);
    const failed = (await api.request('GET', '/api/jobs?limit=1')).body as { jobs: { id: string }[] };
    const failedId = failed.jobs[0]!.id;
    const detail = await cli.run(['job', failedId]);
    expect(detail.stdout).toContain('boom');
    expect(detail.stdout + detail.stderr).not.toMatch(ESCAPE);
    // The control: the escapes really are in what the server sends (the job's own log, printed raw).
    const logs = await cli.run(['logs', failedId]);
    expect(logs.stdout).toMatch(ESCAPE);
  }, 60_000);

  it('refuses at push a write step whose file name is longer than 255 bytes', async () => {
    const tooLong = `${'é'.repeat(126)}.csv`;
    const pushed = await push({
      name: 'too-long',
      steps: [
        { id: 't', sql: 'SELECT 1 AS n' },
        { id: 'w', write: { table: 't', path: `out/${tooLong}` } },
      ],
    });
    expect(pushed.code).not.toBe(0);
    expect(pushed.stderr).toMatch(/STEWARD_WORKFLOW_INVALID/);
    expect(pushed.stderr).toMatch(/256 bytes long \(at most 255\)/);
  });

  it('fails a job whose script publishes a hidden file with STEWARD_RESULT_NAME_INVALID before uploading anything', async () => {
    const pushed = await push({
      name: 'hidden',
      steps: [{ id: 'h', shell: 'echo a > "$STEWARD_OUTPUT_DIR/a.txt"; echo x > "$STEWARD_OUTPUT_DIR/.x"' }],
    });
    expect(pushed.code, pushed.stderr).toBe(0);
    const job = await api.run('hidden', {}, 60_000);
    expect(job.state).toBe('failed');
    expect(job.error?.code, JSON.stringify(job.error)).toBe('STEWARD_RESULT_NAME_INVALID');
    expect(job.error?.message).toContain('".x"');
    const results = (await api.request('GET', `/api/jobs/${job.id}/results`)).body as { results: unknown[] };
    expect(results.results).toEqual([]);
  }, 60_000);

  async function token(): Promise<string> {
    const response = await fetch(`${steward.url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user: user.name, password }),
    });
    return ((await response.json()) as { token: string }).token;
  }
});

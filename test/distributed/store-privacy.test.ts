/**
 * The store is private in the distributed mode too: a job run by a `steward agent` through RabbitMQ, as a
 * real OS user on the server's machine, cannot read the `steward server`'s SQLite store, its -wal and -shm,
 * or the signing key (the server's data dir is 0700: it has no workspaces users must reach).
 */
import { lstat } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from '../support/distributed.js';
import { OsUsers } from '../support/os-users.js';
import { createVhost, deleteVhost } from '../support/rabbitmq.js';
import { isRoot } from '../support/steward.js';

let vhost = '';
let cluster: Cluster | undefined;
const osUsers = new OsUsers();

const probe = [
  'import os',
  'lines = []',
  'for f in os.environ["targets"].split():',
  '    try:',
  '        open(f, "rb").read(1); lines.append("ALLOWED " + f)',
  '    except OSError as e:',
  '        lines.append("denied %s (%s)" % (f, e.strerror))',
  'open(os.path.join(os.environ["STEWARD_OUTPUT_DIR"], "probe.txt"), "w").write("\\n".join(lines))',
].join('\n');

describe.runIf(isRoot)("a RabbitMQ agent's job and the server's store", () => {
  beforeAll(async () => {
    vhost = await createVhost('storepriv');
    cluster = await Cluster.start({ vhost });
    const userMap = { admin: (await osUsers.user('dp')).name };
    await cluster.startAgent('private', { slots: 1, userMap });
  }, 120_000);

  afterAll(async () => {
    await cluster?.destroy();
    await osUsers.cleanup();
    if (vhost) await deleteVhost(vhost);
  }, 60_000);

  it("denies a job every file of the server's store and its signing key", async () => {
    const c = cluster!;
    const data = c.dataDir;
    const targets = ['steward.db', 'steward.db-wal', 'steward.db-shm', 'keys/offer-signing.pem'].map((name) =>
      path.join(data, name),
    );
    // They exist (seen as root), so a denial is not an absent file.
    for (const target of targets) expect((await lstat(target)).mode & 0o077, target).toBe(0);
    expect((await lstat(data)).mode & 0o777).toBe(0o700);
    const workflow = {
      name: 'probe',
      params: { targets: { type: 'string', default: targets.join(' ') } },
      steps: [{ id: 'py', python: probe }],
    };
    const pushed = await c.request('POST', '/api/workflows', { source: stringify(workflow) });
    expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
    const job = await c.settleOne(await c.submit('probe'));
    expect(job.state, JSON.stringify(job)).toBe('succeeded');
    const response = await fetch(`${c.url}/api/jobs/${job.id}/results/probe.txt`, {
      headers: { authorization: `Bearer ${c.token}` },
    });
    const lines = (await response.text()).split('\n');
    expect(lines).toHaveLength(targets.length);
    for (const line of lines) expect(line).toMatch(/^denied .*Permission denied/);
  }, 90_000);
});

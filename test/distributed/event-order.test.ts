/**
 * `steward run --wait` through a real `steward server` and `steward agent` on RabbitMQ: each step's
 * progress line is printed once per state and in the order the steps ran (a redelivered or reordered
 * event must not move a finished step back to `running`, nor print it again).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from '../support/distributed.js';
import { OsUsers } from '../support/os-users.js';
import { createVhost, deleteVhost } from '../support/rabbitmq.js';
import { CliUser, isRoot } from '../support/steward.js';

const CHAIN = `name: chain
description: five steps, one after the other
steps:
  - id: s1
    sql: SELECT range AS x FROM range(1000)
  - id: s2
    sql: SELECT x * 2 AS y FROM s1
  - id: s3
    sql: SELECT y + 1 AS z FROM s2
  - id: s4
    sql: SELECT count(*) AS n FROM s3
  - id: s5
    sql: SELECT n FROM s4
outputs: [s5]
`;

let vhost = '';
let cluster: Cluster | undefined;
let admin: CliUser | undefined;
let scratch = '';
const osUsers = new OsUsers();

beforeAll(async () => {
  vhost = await createVhost('event-order');
  cluster = await Cluster.start({ vhost });
  const userMap = isRoot ? { admin: (await osUsers.user('eo')).name } : {};
  await cluster.startAgent('agent', { slots: 2, userMap });
  admin = await CliUser.create('admin', cluster.url);
  await admin.login('admin-password-for-tests');
  scratch = await mkdtemp(path.join(os.tmpdir(), 'steward-event-order-'));
  await writeFile(path.join(scratch, 'chain.yaml'), CHAIN);
  const pushed = await admin.run(['workflow', 'push', path.join(scratch, 'chain.yaml')]);
  expect(pushed.code, pushed.stderr).toBe(0);
}, 120_000);

afterAll(async () => {
  await cluster?.destroy();
  await admin?.cleanup();
  await osUsers.cleanup();
  if (scratch) await rm(scratch, { recursive: true, force: true });
  if (vhost) await deleteVhost(vhost);
}, 60_000);

describe('run --wait over the RabbitMQ bus', () => {
  it('prints each step state once, in the order the steps ran', async () => {
    for (let round = 0; round < 6; round++) {
      const result = await admin!.run(['run', 'chain', '--wait']);
      expect(result.code, result.stderr + result.stdout).toBe(0);
      const lines = result.stdout
        .split('\n')
        .filter((line) => line.startsWith('step '))
        .map((line) => line.split(' ').slice(0, 3).join(' '));
      const expected = ['s1', 's2', 's3', 's4', 's5'].flatMap((id) => [
        `step ${id} running`,
        `step ${id} succeeded`,
      ]);
      // Every change is published in the order it was applied, so each state shows once and in order. (A
      // step that had started, or ended, before the CLI's stream opened shows only as the snapshot has it.)
      expect(lines, result.stdout).toEqual(expected.filter((line) => lines.includes(line)));
      expect(lines.filter((line) => line.endsWith('succeeded'))).toHaveLength(5);
    }
  }, 180_000);
});

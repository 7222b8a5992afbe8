import { promises as fs } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { verifySignatureHeader } from '../../src/protocol/index.js';
import { startHarness, type Harness } from '../server/harness.js';
import { startWebhookReceiver, type WebhookReceiver } from '../support/receivers.js';
import { cliBin, runCli, tempDirFor } from './harness.js';

let h: Harness | undefined;
let receiver: WebhookReceiver | undefined;
let dir: string | undefined;
afterEach(async () => {
  await h?.dispose();
  await receiver?.close();
  if (dir) await fs.rm(dir, { recursive: true, force: true });
  h = receiver = dir = undefined;
});

describe('steward notify', () => {
  it('adds a webhook rule showing its secret once, lists, tests and removes it against a real server', async (context) => {
    h = await startHarness({ title: context.task.name });
    const { url } = await h.server.listen();
    receiver = await startWebhookReceiver();
    dir = await tempDirFor(context.task.name);
    const env = { STEWARD_SERVER: url, STEWARD_TOKEN: await h.userToken('alice') };
    const cli = (args: string[], input?: string) =>
      runCli(cliBin, args, { configHome: dir!, env, ...(input === undefined ? {} : { input }) });

    const added = await cli(['notify', 'add', '--on', 'always', '--webhook', receiver.url]);
    expect(added.stderr).toContain('shown only this once');
    expect(added.code).toBe(0);
    const [line, secret] = added.stdout.trim().split('\n');
    const id = /^added rule (\S+): webhook /.exec(line ?? '')?.[1];
    expect(id).toBeDefined();
    expect(secret).toMatch(/^[A-Za-z0-9_-]{40,}$/);

    const usage = await cli(['notify', 'add', '--webhook', receiver.url, '--email', 'a@example.org']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('exactly one of --webhook URL or --email ADDRESS');
    const refused = await cli(['notify', 'add', '--email', 'a@example.org']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('STEWARD_EMAIL_NOT_CONFIGURED');

    const listed = await cli(['--json', 'notify', 'list']);
    expect(JSON.parse(listed.stdout)).toMatchObject({
      rules: [{ id, when: 'always', schedule: null, channel: 'webhook', target: receiver.url }],
    });
    expect(listed.stdout).not.toContain(secret);

    const tested = await cli(['notify', 'test', id!]);
    expect(tested.stdout).toBe(`rule ${id}: test message delivered\n`);
    const request = receiver.requests[0]!;
    expect(verifySignatureHeader(secret!, String(request.headers['steward-signature']), request.body)).toBe(
      true,
    );
    receiver.respond = () => 500;
    const failing = await cli(['notify', 'test', id!]);
    expect(failing.code).toBe(1);
    expect(failing.stdout).toContain('NOT delivered: HTTP 500');

    const removed = await cli(['notify', 'remove', id!]);
    expect(removed.stdout).toBe(`removed rule ${id}\n`);
    expect(JSON.parse((await cli(['--json', 'notify', 'list'])).stdout)).toEqual({ rules: [] });
  });
});

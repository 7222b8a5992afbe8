import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { compileServerConfig } from '../../src/config/index.js';

describe('server.notifications config', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('defaults to webhooks only with bounded rules and retries', () => {
    const { notifications } = compileServerConfig({});
    expect(notifications).toMatchObject({
      smtp: undefined,
      maxRulesPerUser: 20,
      maxAttempts: 10,
      initialBackoffMs: 30_000,
      maxBackoffMs: 3_600_000,
    });
  });

  it('reads the SMTP password file and picks the submission port', () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'steward-smtp-config-'));
    const file = path.join(dir, 'smtp-password');
    writeFileSync(file, 'secret-pass\n');
    const { notifications } = compileServerConfig({
      notifications: {
        smtp: { host: 'mail.example.org', user: 'steward', passwordFile: file, from: 'steward@example.org' },
      },
    });
    expect(notifications.smtp).toMatchObject({
      host: 'mail.example.org',
      port: 587,
      starttls: 'required',
      auth: { user: 'steward', password: 'secret-pass' },
    });
  });

  it('refuses unknown keys, a user without a password file and a missing password file', () => {
    expect(() =>
      compileServerConfig({ notifications: { smtp: { host: 'h', from: 'a@b.c', tls: true } } }),
    ).toThrow(/tls/);
    expect(() =>
      compileServerConfig({ notifications: { smtp: { host: 'h', from: 'a@b.c', user: 'steward' } } }),
    ).toThrow(/passwordFile/);
    expect(() =>
      compileServerConfig({
        notifications: { smtp: { host: 'h', from: 'a@b.c', user: 'u', passwordFile: '/nonexistent/pw' } },
      }),
    ).toThrow(/cannot read/);
    expect(() => compileServerConfig({ notifications: { initialBackoff: '1h', maxBackoff: '1m' } })).toThrow(
      /maxBackoff/,
    );
  });
});

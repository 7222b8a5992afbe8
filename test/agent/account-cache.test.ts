import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { AccountCache, lookupAccount, type OsAccount } from '../../src/agent/index.js';
import { PasswdFiles } from '../../src/agent/accounts.js';

describe('agent account cache', () => {
  it('reuses a found account for its TTL, shares concurrent lookups and never keeps a miss', async () => {
    const asked: string[] = [];
    const cache = new AccountCache(1000, (name) => {
      asked.push(name);
      return lookupAccount(name);
    });
    const [first, second] = await Promise.all([cache.get('root', 0), cache.get('root', 0)]);
    expect(first).toMatchObject<Partial<OsAccount>>({ name: 'root', uid: 0 });
    expect(second).toEqual(first);
    expect(await cache.get('root', 999)).toEqual(first);
    expect(asked).toEqual(['root']);
    await cache.get('root', 1000);
    expect(asked).toEqual(['root', 'root']);

    expect(await cache.get('no-such-user-here', 0)).toBeUndefined();
    expect(await cache.get('no-such-user-here', 1)).toBeUndefined();
    expect(asked.filter((name) => name === 'no-such-user-here')).toHaveLength(2);
  });
});

describe('passwd files read in-process', () => {
  it('answers as NSS files does only while files is the first passwd source, and rereads changed files', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'steward-passwd-'));
    try {
      const passwd = path.join(dir, 'passwd');
      const nsswitch = path.join(dir, 'nsswitch.conf');
      await writeFile(
        passwd,
        'root:x:0:0:root:/root:/bin/bash\nalice:x:1500:1500::/home/alice:/bin/sh\nalice:x:1600:1600::/other:/bin/sh\n',
      );
      await writeFile(nsswitch, '# comment\npasswd:         files systemd\ngroup: files\n');
      const files = new PasswdFiles(passwd, nsswitch);
      // The first line for a name wins, as in NSS.
      expect(files.lookup('alice')).toEqual({
        name: 'alice',
        uid: 1500,
        gid: 1500,
        home: '/home/alice',
        shell: '/bin/sh',
      });
      expect(files.lookup('bob')).toBeUndefined();
      await writeFile(passwd, 'bob:x:1501:1501::/home/bob:/bin/bash\n');
      expect(files.lookup('bob')).toMatchObject({ uid: 1501 });
      expect(files.lookup('alice')).toBeUndefined();
      // Another source first (or an action on files' result): only NSS itself can answer.
      await writeFile(nsswitch, 'passwd: sss files\n');
      expect(files.lookup('bob')).toBeUndefined();
      await writeFile(nsswitch, 'passwd: files [NOTFOUND=return] ldap\n');
      expect(files.lookup('bob')).toBeUndefined();
      await writeFile(nsswitch, 'passwd: files\n');
      expect(files.lookup('bob')).toMatchObject({ uid: 1501 });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

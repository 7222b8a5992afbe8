import { describe, expect, it } from 'vitest';
import { AccountCache, lookupAccount, type OsAccount } from '../../src/agent/index.js';

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

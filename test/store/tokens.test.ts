import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PROTOCOL_VERSION } from '../../src/protocol/index.js';
import { openStore, type Store } from '../../src/store/index.js';
import { backends, type BackendHandle } from './backends.js';

/** Token expiry is judged by the store's clock: these tests move an injected clock, never wait on the real one. */
describe.each(backends)('token expiry and the store clock on $name', (backend) => {
  const start = Date.UTC(2026, 0, 1);
  let now = start;
  let handle: BackendHandle;
  let store: Store;

  beforeEach(async (context) => {
    now = start;
    handle = await backend.create(context.task.name);
    try {
      store = await openStore(handle.config, { clock: () => now });
    } catch (error) {
      await handle.dispose();
      throw error;
    }
    await store.createUser({ name: 'alice', role: 'user', passwordHash: null, createdAt: start });
  });

  afterEach(async () => {
    await store.close();
    await handle.dispose();
  });

  async function createToken(id: string, expiresAt: number | null): Promise<void> {
    await store.createToken({
      id,
      user: 'alice',
      name: 'login',
      kind: 'login',
      tokenHash: `hash-${id}`,
      createdAt: start,
      expiresAt,
    });
  }

  it('reports a token live until its expiry time and expired from that moment on', async () => {
    await createToken('t1', start + 30 * 60_000);
    expect((await store.findToken('hash-t1'))?.expired).toBe(false);
    now = start + 30 * 60_000 - 1;
    expect((await store.findToken('hash-t1'))?.expired).toBe(false);
    now = start + 30 * 60_000;
    const found = await store.findToken('hash-t1');
    expect(found?.expired).toBe(true);
    expect(found?.token).toMatchObject({ id: 't1', user: 'alice', revoked: false });
    expect(found?.user.name).toBe('alice');
  });

  it('never expires a token stored without an expiry time', async () => {
    await createToken('t2', null);
    now = start + 100 * 365 * 86_400_000;
    expect((await store.findToken('hash-t2'))?.expired).toBe(false);
  });

  it('dates writes whose caller gives no time by the injected clock', async () => {
    await store.upsertAgent({
      v: PROTOCOL_VERSION,
      type: 'heartbeat',
      agentId: 'agent-clock',
      labels: [],
      isolation: 'per-user',
      draining: false,
      capacity: { slots: 1, free: 1 },
      executors: [],
      time: start,
    });
    now = start + 5_000;
    expect(await store.listAgents(start + 1)).toEqual([]);
    expect((await store.listAgents(start))[0]?.lastSeen).toBe(start);
  });
});

/**
 * `server.store.passwordFile` for PostgreSQL: read once at start, refused when others can read it, and the
 * password it holds is what the PostgreSQL client sends (a stand-in server here asks for it in clear text,
 * since the machine's PostgreSQL trusts local connections), while the real PostgreSQL opens with it.
 */
import { createServer, type Server } from 'node:net';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileServerConfig } from '../../src/config/index.js';
import { StewardError } from '../../src/protocol/index.js';
import { openStore } from '../../src/store/index.js';
import { POSTGRES_URL } from './backends.js';

const PASSWORD = 'pw-from-the-file-7f3a';
let dir = '';

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'steward-pg-password-file-'));
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function passwordFile(mode: number, text = `${PASSWORD}\n`): Promise<string> {
  const file = path.join(dir, `password-${mode.toString(8)}`);
  await writeFile(file, text);
  await chmod(file, mode);
  return file;
}

function serverConfig(url: string, file: string, schema?: string) {
  return compileServerConfig({
    dataDir: dir,
    store: { kind: 'postgres', url, passwordFile: file, ...(schema ? { schema } : {}) },
  });
}

/**
 * Speaks just enough of PostgreSQL's protocol to ask for a clear-text password and keep what it gets, then
 * hangs up.
 */
async function passwordCatcher(): Promise<{ server: Server; port: number; received: Promise<string> }> {
  let deliver: (password: string) => void = () => undefined;
  const received = new Promise<string>((resolve) => (deliver = resolve));
  const server = createServer((socket) => {
    let buffer = Buffer.alloc(0);
    let started = false;
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      if (!started) {
        if (buffer.length < 4 || buffer.length < buffer.readInt32BE(0)) return;
        buffer = buffer.subarray(buffer.readInt32BE(0));
        started = true;
        // AuthenticationCleartextPassword: 'R', length 8, code 3.
        socket.write(Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 3]));
        return;
      }
      if (buffer.length < 5 || buffer.length < 1 + buffer.readInt32BE(1)) return;
      deliver(buffer.subarray(5, 1 + buffer.readInt32BE(1) - 1).toString('utf8'));
      socket.destroy();
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  return { server, port: typeof address === 'object' && address ? address.port : 0, received };
}

describe('store.passwordFile', () => {
  it('refuses a password file that group or others can read, without showing the password', async () => {
    const file = await passwordFile(0o644);
    let error: unknown;
    try {
      serverConfig(POSTGRES_URL, file);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(StewardError);
    expect((error as StewardError).code).toBe('STEWARD_CONFIG_INVALID');
    expect((error as StewardError).message).toContain('server.store.passwordFile');
    expect((error as StewardError).message).toContain('chmod 600');
    expect((error as StewardError).message).not.toContain(PASSWORD);
  });

  it('refuses a missing password file, naming it', () => {
    expect(() => serverConfig(POSTGRES_URL, path.join(dir, 'nope'))).toThrow(
      /store\.passwordFile: cannot read/,
    );
  });

  it('sends the password from the file (its trailing newline dropped) when PostgreSQL asks for it', async () => {
    const catcher = await passwordCatcher();
    try {
      const config = serverConfig(
        `postgres://steward@127.0.0.1:${catcher.port}/steward`,
        await passwordFile(0o600),
      );
      const opening = openStore(config.store).then(
        (store) => store.close(),
        (error: unknown) => error,
      );
      expect(await catcher.received).toBe(PASSWORD);
      const outcome = await opening;
      expect(String(outcome)).not.toContain(PASSWORD);
    } finally {
      catcher.server.close();
    }
  });

  it('opens the real PostgreSQL store with a password file', async () => {
    const schema = `pwfile_${process.pid}_${Date.now() % 100_000}`;
    const config = serverConfig(POSTGRES_URL, await passwordFile(0o400), schema);
    expect(config.store).toMatchObject({ kind: 'postgres', password: PASSWORD });
    const store = await openStore(config.store);
    try {
      expect(await store.listAgents()).toEqual([]);
    } finally {
      await store.close();
      const client = new pg.Client({ connectionString: POSTGRES_URL });
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await client.end();
    }
  });
});

/**
 * The shared offer-signing key file: created once even when servers race, private, and refused with the
 * reason when it is readable by others or not an Ed25519 key.
 */
import { fork } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadOrCreateSigningKey } from '../../src/server/keys.js';
import { repoRoot } from '../support/steward.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempKeyDir(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'steward-keys-'));
  dirs.push(dir);
  return dir;
}

describe('offer-signing key file', () => {
  it('is created once, 0600, when several server processes start at the same moment', async () => {
    const dir = tempKeyDir();
    const file = path.join(dir, 'shared', 'keys', 'offer-signing.pem');
    // Separate processes, as separate servers are: each loads or creates the key and prints its public half.
    const script = `import { loadOrCreateSigningKey } from ${JSON.stringify(path.join(repoRoot, 'dist', 'server', 'keys.js'))};
process.stdout.write(loadOrCreateSigningKey(process.argv[2]).publicKeyPem);`;
    const scriptFile = path.join(dir, 'load.mjs');
    writeFileSync(scriptFile, script);
    const outputs = await Promise.all(
      Array.from({ length: 6 }, () => {
        const child = fork(scriptFile, [file], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
        let out = '';
        child.stdout?.on('data', (chunk: Buffer) => (out += chunk.toString()));
        return new Promise<string>((resolve, reject) =>
          child.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`exit ${code}`)))),
        );
      }),
    );
    expect(new Set(outputs).size).toBe(1);
    expect(outputs[0]).toMatch(/BEGIN PUBLIC KEY/);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    // No temp files left behind.
    expect(readdirSync(path.dirname(file))).toEqual(['offer-signing.pem']);
    expect(loadOrCreateSigningKey(file).publicKeyPem).toBe(outputs[0]);
  });

  it('refuses a key file that group or others can read, naming the field and the fix', () => {
    const dir = tempKeyDir();
    const file = path.join(dir, 'offer-signing.pem');
    loadOrCreateSigningKey(file);
    chmodSync(file, 0o640);
    expect(() => loadOrCreateSigningKey(file)).toThrow(
      /server\.signingKeyFile: .*offer-signing\.pem is readable or writable by group or others \(mode 0640\).*chmod 600/,
    );
  });

  it('refuses a key file that is not an Ed25519 private key', () => {
    const dir = tempKeyDir();
    const garbage = path.join(dir, 'garbage.pem');
    writeFileSync(garbage, 'not a key\n', { mode: 0o600 });
    expect(() => loadOrCreateSigningKey(garbage)).toThrow(
      /server\.signingKeyFile: .*garbage\.pem is not an Ed25519 private key in PEM/,
    );
    const rsa = path.join(dir, 'rsa.pem');
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    writeFileSync(rsa, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    expect(() => loadOrCreateSigningKey(rsa)).toThrow(/expected an Ed25519 key, got rsa/);
  });
});

/**
 * The offer-signing key (Ed25519, PKCS#8 PEM). One key per installation: with several servers every one of
 * them must sign with the same key, because agents trust a fixed list of public keys. So the key lives in a
 * file all servers read (`server.signingKeyFile`, default `<dataDir>/keys/offer-signing.pem`):
 * - created by whichever server starts first, atomically: written to a private temp file opened with O_EXCL,
 *   fsynced, then linked into place. `link` fails if the name exists (unlike `rename`, which would replace
 *   a key another server already signs with), so racing servers all end up with the first one's key and
 *   nobody ever reads half a file;
 * - refused, with the reason, when group- or world-readable (anyone who reads it can make every agent run
 *   anything as anyone) or when it is not an Ed25519 private key.
 */
import { createPrivateKey, createPublicKey } from 'node:crypto';
import {
  closeSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  readFileSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';
import { generateSigningKeyPem, StewardError } from '../protocol/index.js';

export function loadOrCreateSigningKey(file: string): { privateKeyPem: string; publicKeyPem: string } {
  const dir = path.dirname(file);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (!exists(file)) createKeyFile(file);
  const stats = statSync(file);
  if (!stats.isFile()) throw configError(file, 'is not a regular file');
  if ((stats.mode & 0o077) !== 0) {
    throw configError(
      file,
      `is readable or writable by group or others (mode ${(stats.mode & 0o777).toString(8).padStart(4, '0')}); whoever reads it can make agents run jobs as anyone. Run: chmod 600 ${file}`,
    );
  }
  const privateKeyPem = readFileSync(file, 'utf8');
  let publicKeyPem: string;
  try {
    const key = createPrivateKey(privateKeyPem);
    if (key.asymmetricKeyType !== 'ed25519')
      throw new Error(`expected an Ed25519 key, got ${key.asymmetricKeyType ?? 'an unknown type'}`);
    publicKeyPem = createPublicKey(key).export({ type: 'spki', format: 'pem' }).toString();
  } catch (error) {
    throw configError(file, `is not an Ed25519 private key in PEM: ${(error as Error).message}`);
  }
  return { privateKeyPem, publicKeyPem };
}

function exists(file: string): boolean {
  try {
    statSync(file);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}

function createKeyFile(file: string): void {
  const generated = generateSigningKeyPem();
  const temp = `${file}.${process.pid}.${Date.now()}.tmp`;
  // O_EXCL (`wx`): never write through a file or symlink someone planted at the temp name.
  const fd = openSync(temp, 'wx', 0o600);
  try {
    writeSync(fd, generated.privateKeyPem);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(temp, file);
  } catch (error) {
    // Another server created it first: keep theirs (every server must sign with the same key).
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  } finally {
    unlinkSync(temp);
  }
  try {
    const dirFd = openSync(path.dirname(file), 'r');
    try {
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
  } catch {
    // Directory fsync is best effort (not supported on every file system).
  }
}

function configError(file: string, problem: string): StewardError {
  return new StewardError('STEWARD_CONFIG_INVALID', `server.signingKeyFile: ${file} ${problem}`);
}

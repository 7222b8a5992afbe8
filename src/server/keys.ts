/**
 * The offer-signing key: generated once into `<dataDir>/keys/offer-signing.pem` (0600, directory 0700) and
 * reused across restarts, so agents configured with the public key keep trusting this server.
 */
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createPublicKey } from 'node:crypto';
import path from 'node:path';
import { generateSigningKeyPem } from '../protocol/index.js';

export function loadOrCreateSigningKey(dataDir: string): { privateKeyPem: string; publicKeyPem: string } {
  const dir = path.join(dataDir, 'keys');
  const file = path.join(dir, 'offer-signing.pem');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  let privateKeyPem: string;
  try {
    privateKeyPem = readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    const generated = generateSigningKeyPem();
    try {
      // `wx`: if another server process created it meanwhile, keep theirs.
      writeFileSync(file, generated.privateKeyPem, { mode: 0o600, flag: 'wx' });
    } catch (writeError) {
      if ((writeError as NodeJS.ErrnoException).code !== 'EEXIST') throw writeError;
    }
    privateKeyPem = readFileSync(file, 'utf8');
  }
  chmodSync(file, 0o600);
  const publicKeyPem = createPublicKey(privateKeyPem).export({ type: 'spki', format: 'pem' }).toString();
  return { privateKeyPem, publicKeyPem };
}

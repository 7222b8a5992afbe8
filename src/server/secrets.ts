/**
 * Passwords and bearer secrets. Passwords are hashed with scrypt (N=2^15, r=8, p=1); bearer tokens are 32
 * random bytes, stored only as their sha256, so a copy of the database grants nothing.
 */
import { createHash, randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

const SCRYPT = { N: 2 ** 15, r: 8, p: 1, keyLength: 32 } as const;
// 128 * N * r bytes = 32 MiB: above Node's default maxmem, so raise it explicitly.
const MAXMEM = 64 * 1024 * 1024;

function scryptAsync(
  password: string,
  salt: Buffer,
  keyLength: number,
  options: ScryptOptions,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, keyLength, options, (error, key) => (error ? reject(error) : resolve(key)));
  });
}

/** `scrypt$N$r$p$salt$hash` (base64url), so parameters can be raised later without breaking old hashes. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scryptAsync(password, salt, SCRYPT.keyLength, {
    N: SCRYPT.N,
    r: SCRYPT.r,
    p: SCRYPT.p,
    maxmem: MAXMEM,
  });
  return ['scrypt', SCRYPT.N, SCRYPT.r, SCRYPT.p, salt.toString('base64url'), key.toString('base64url')].join(
    '$',
  );
}

/** A hash of nothing anyone knows: verifying against it costs the same as a real check (unknown users). */
let dummyHash: Promise<string> | undefined;
export function dummyPasswordHash(): Promise<string> {
  dummyHash ??= hashPassword(randomBytes(24).toString('base64url'));
  return dummyHash;
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [, n, r, p, saltText, keyText] = parts as [string, string, string, string, string, string];
  const expected = Buffer.from(keyText, 'base64url');
  const key = await scryptAsync(password, Buffer.from(saltText, 'base64url'), expected.length, {
    N: Number(n),
    r: Number(r),
    p: Number(p),
    maxmem: MAXMEM,
  });
  return key.length === expected.length && timingSafeEqual(key, expected);
}

/**
 * `stw_` user tokens, `stj_` job tokens, `std_` Dask worker tokens: a prefix makes leaked secrets easy to
 * recognise and scan for.
 */
export function newSecret(prefix: 'stw_' | 'stj_' | 'std_'): string {
  return prefix + randomBytes(32).toString('base64url');
}

export function sha256Hex(text: string | Buffer): string {
  return createHash('sha256').update(text).digest('hex');
}

export function newPassword(): string {
  return randomBytes(18).toString('base64url');
}

/**
 * A short random id (token ids, temp names). It starts with a letter or digit: ids are typed as
 * command-line arguments (`steward token revoke <id>`), where a leading `-` would read as an option.
 */
export function newId(bytes = 9): string {
  for (;;) {
    const id = randomBytes(bytes).toString('base64url');
    if (/^[A-Za-z0-9]/.test(id)) return id;
  }
}

/**
 * Job ids sort by creation time as text (`YYYYMMDDHHMMSSmmm-xxxxxxxx`) and are safe as path segments.
 */
export function newJobId(now = Date.now()): string {
  const stamp = new Date(now).toISOString().replace(/[-:T.Z]/g, '');
  return `${stamp}-${randomBytes(4).toString('hex')}`;
}

/** A new job token and the hash the store keeps of it (the token itself goes only into the signed offer). */
export function newJobToken(): { token: string; hash: string } {
  const token = newSecret('stj_');
  return { token, hash: sha256Hex(token) };
}

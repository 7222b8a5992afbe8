/**
 * Server user → OS account. Names are checked against a strict pattern before any lookup, and accounts are
 * resolved through NSS (`getent`), so SSSD/nslcd/LDAP accounts work as well as /etc/passwd ones.
 */
import { execFile } from 'node:child_process';
import os from 'node:os';
import { promisify } from 'node:util';
import { StewardError } from '../protocol/index.js';

const execFileAsync = promisify(execFile);

export interface OsAccount {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

export interface IdentityPolicy {
  userMap: Readonly<Record<string, string>>;
  /** Accounts below this uid are refused unless allowed explicitly. Default 1000. */
  minUid: number;
  bannedUsers: ReadonlySet<string>;
}

/** POSIX portable user names (lowercase, not starting with a digit or '-'), at most 32 characters. */
const NAME_PATTERN = /^[a-z_][a-z0-9_-]{0,31}$/;

export const defaultBannedUsers: ReadonlySet<string> = new Set([
  'root',
  'bin',
  'daemon',
  'sys',
  'sync',
  'nobody',
  'postgres',
  'rabbitmq',
  'www-data',
]);

export function mapToOsName(serverUser: string, policy: IdentityPolicy): string {
  const mapped = Object.hasOwn(policy.userMap, serverUser)
    ? policy.userMap[serverUser]!
    : serverUser.toLowerCase();
  if (!NAME_PATTERN.test(mapped)) {
    throw new StewardError(
      'STEWARD_USER_NAME_INVALID',
      `server user ${JSON.stringify(serverUser)} maps to ${JSON.stringify(mapped)}, which is not a valid OS user name`,
    );
  }
  return mapped;
}

/** Looks an account up through NSS. Returns undefined when it does not exist. */
export async function lookupAccount(name: string): Promise<OsAccount | undefined> {
  if (!NAME_PATTERN.test(name)) return undefined;
  let stdout: string;
  try {
    ({ stdout } = await execFileAsync('getent', ['passwd', '--', name], { timeout: 10_000 }));
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code === 2) return undefined; // getent: key not found
    throw new StewardError(
      'STEWARD_USER_UNKNOWN',
      `account lookup for ${name} failed: ${(error as Error).message}`,
      { cause: error },
    );
  }
  const fields = stdout.trim().split('\n')[0]?.split(':') ?? [];
  if (fields.length < 7 || fields[0] !== name) return undefined;
  return { name, uid: Number(fields[2]), gid: Number(fields[3]), home: fields[5]!, shell: fields[6]! };
}

export async function resolveAccount(
  serverUser: string,
  policy: IdentityPolicy,
  agentId: string,
): Promise<OsAccount> {
  const name = mapToOsName(serverUser, policy);
  if (policy.bannedUsers.has(name)) {
    throw new StewardError('STEWARD_USER_REFUSED', `OS account '${name}' is banned on agent ${agentId}`);
  }
  const account = await lookupAccount(name);
  if (!account)
    throw new StewardError('STEWARD_USER_UNKNOWN', `OS account '${name}' does not exist on agent ${agentId}`);
  if (account.uid === 0 || account.gid === 0) {
    throw new StewardError(
      'STEWARD_USER_REFUSED',
      `OS account '${name}' is root-equivalent (uid ${account.uid}, gid ${account.gid}) on agent ${agentId}`,
    );
  }
  if (account.uid < policy.minUid) {
    throw new StewardError(
      'STEWARD_USER_REFUSED',
      `OS account '${name}' has uid ${account.uid} < minUid ${policy.minUid} on agent ${agentId}`,
    );
  }
  return account;
}

/** The account the agent itself runs as (single-user mode, when not root). */
export function currentAccount(): OsAccount {
  const info = os.userInfo();
  return {
    name: info.username,
    uid: info.uid,
    gid: info.gid,
    home: info.homedir,
    shell: info.shell ?? '/bin/sh',
  };
}

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

/**
 * Looks an account up through NSS. Returns undefined when it does not exist. A lookup that does not finish
 * within `timeoutMs` (an NSS backend such as SSSD or nslcd waiting on an unreachable directory) is killed
 * and reported as STEWARD_USER_UNKNOWN naming the timeout, so a directory outage refuses jobs, never hangs.
 */
export async function lookupAccount(name: string, timeoutMs = 10_000): Promise<OsAccount | undefined> {
  if (!NAME_PATTERN.test(name)) return undefined;
  let stdout: string;
  try {
    ({ stdout } = await execFileAsync('getent', ['passwd', '--', name], {
      timeout: timeoutMs,
      killSignal: 'SIGKILL',
    }));
  } catch (error) {
    const failure = error as { code?: unknown; killed?: boolean };
    if (failure.code === 2) return undefined; // getent: key not found
    const why = failure.killed
      ? `timed out after ${timeoutMs} ms (is the directory behind NSS, e.g. SSSD or nslcd, reachable?)`
      : (error as Error).message;
    throw new StewardError('STEWARD_USER_UNKNOWN', `account lookup for ${name} failed: ${why}`, {
      cause: error,
    });
  }
  const fields = stdout.trim().split('\n')[0]?.split(':') ?? [];
  if (fields.length < 7 || fields[0] !== name) return undefined;
  return { name, uid: Number(fields[2]), gid: Number(fields[3]), home: fields[5]!, shell: fields[6]! };
}

/**
 * Found accounts are kept for `ttlMs`, so a burst of jobs for one user costs one directory lookup; misses are
 * never kept (an account just added to the directory is found at the next job). Concurrent lookups of one
 * name share one `getent`.
 */
export class AccountCache {
  private readonly found = new Map<string, { account: OsAccount; at: number }>();
  private readonly pending = new Map<string, Promise<OsAccount | undefined>>();

  constructor(
    private readonly ttlMs: number,
    private readonly lookup: (name: string) => Promise<OsAccount | undefined> = lookupAccount,
  ) {}

  async get(name: string, now = Date.now()): Promise<OsAccount | undefined> {
    const hit = this.found.get(name);
    if (hit && now - hit.at < this.ttlMs) return hit.account;
    let pending = this.pending.get(name);
    if (!pending) {
      pending = this.lookup(name).finally(() => this.pending.delete(name));
      this.pending.set(name, pending);
    }
    const account = await pending;
    if (account && this.ttlMs > 0) this.found.set(name, { account, at: now });
    else this.found.delete(name);
    return account;
  }
}

export async function resolveAccount(
  serverUser: string,
  policy: IdentityPolicy,
  agentId: string,
  lookup: (name: string) => Promise<OsAccount | undefined> = lookupAccount,
): Promise<OsAccount> {
  const name = mapToOsName(serverUser, policy);
  if (policy.bannedUsers.has(name)) {
    throw new StewardError('STEWARD_USER_REFUSED', `OS account '${name}' is banned on agent ${agentId}`);
  }
  const account = await lookup(name);
  if (!account)
    throw new StewardError(
      'STEWARD_USER_UNKNOWN',
      `OS account '${name}' does not exist on agent ${agentId} (or the directory NSS resolves it from is unreachable)`,
    );
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

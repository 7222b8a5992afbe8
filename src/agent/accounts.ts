/**
 * Server user → OS account. Names are checked against a strict pattern before any lookup, and accounts are
 * resolved through NSS (`getent`), so SSSD/nslcd/LDAP accounts work as well as /etc/passwd ones.
 */
import { execFile } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import { promisify } from 'node:util';
import type { CompiledIdentityPolicy } from '../config/index.js';
import { StewardError } from '../protocol/index.js';

const execFileAsync = promisify(execFile);

export interface OsAccount {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

export interface IdentityPolicy extends CompiledIdentityPolicy {
  /** Server user → OS user, for server-local users with no OS account of their own name. */
  userMap: Readonly<Record<string, string>>;
}

/** Longest OS user name accepted (useradd's limit on Linux). */
const MAX_NAME_LENGTH = 32;
/**
 * A floor no configured pattern can lower: names that could be taken for a uid, a path or a shell word are
 * refused before any lookup.
 */
const NAME_FLOOR = /^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$/;

/** Why a name is not acceptable as an OS user name, or undefined when it is. */
export function nameProblem(name: string, pattern: RegExp): string | undefined {
  if (name.length === 0) return 'it is empty';
  if (name.length > MAX_NAME_LENGTH) return `it is longer than ${MAX_NAME_LENGTH} characters`;
  if (/^[0-9]/.test(name)) return 'it starts with a digit (it could be read as a uid)';
  if (name.includes('..')) return 'it contains ".."';
  if (!NAME_FLOOR.test(name)) return 'it contains "/", spaces or shell characters';
  if (!pattern.test(name)) return `it does not match the identity.nameRegex pattern ${pattern.source}`;
  return undefined;
}

export function mapToOsName(serverUser: string, policy: IdentityPolicy, agentId?: string): string {
  const mapped = Object.hasOwn(policy.userMap, serverUser)
    ? policy.userMap[serverUser]!
    : serverUser.toLowerCase();
  const problem = nameProblem(mapped, policy.namePattern);
  if (problem) {
    throw new StewardError(
      'STEWARD_USER_NAME_INVALID',
      `server user ${JSON.stringify(serverUser)} maps to OS user name ${JSON.stringify(mapped)}, which is refused${agentId ? ` on agent ${agentId}` : ''}: ${problem}`,
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
  if (!NAME_FLOOR.test(name) || name.length > MAX_NAME_LENGTH) return undefined;
  const local = passwdFiles.lookup(name);
  if (local) return local;
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
  return parsePasswdLine(stdout.trim().split('\n')[0] ?? '', name);
}

/** An account from a passwd(5) line, when the line is well formed and names `name`. */
function parsePasswdLine(line: string, name: string): OsAccount | undefined {
  const fields = line.split(':');
  if (fields.length < 7 || fields[0] !== name) return undefined;
  const uid = Number(fields[2]);
  const gid = Number(fields[3]);
  if (!Number.isInteger(uid) || !Number.isInteger(gid) || fields[2] === '' || fields[3] === '')
    return undefined;
  return { name, uid, gid, home: fields[5]!, shell: fields[6]! };
}

/**
 * NSS's `files` source for passwd, read in-process: a lookup without starting `getent` (8–16 ms on a busy
 * machine, most of a new user's account lookup). Used only when /etc/nsswitch.conf makes `files` the first
 * passwd source with its default action, so that an account found there is exactly what NSS answers (NSS
 * returns the first source's hit); a name not found there goes to `getent`, which asks every source.
 * Both files are parsed again whenever they change (checked by inode, size and mtime on every lookup).
 */
export class PasswdFiles {
  private nsswitch: { key: string; filesFirst: boolean } | undefined;
  private passwd: { key: string; accounts: Map<string, OsAccount> } | undefined;

  constructor(
    private readonly passwdPath = '/etc/passwd',
    private readonly nsswitchPath = '/etc/nsswitch.conf',
  ) {}

  /** The account as the files source has it, or undefined: not there, or NSS does not read files first. */
  lookup(name: string): OsAccount | undefined {
    try {
      if (!this.filesFirst()) return undefined;
      const key = fileKey(this.passwdPath);
      if (this.passwd?.key !== key) {
        const accounts = new Map<string, OsAccount>();
        for (const line of readFileSync(this.passwdPath, 'utf8').split('\n')) {
          const entry = line.slice(0, line.indexOf(':'));
          // The first line for a name is the one NSS returns.
          if (accounts.has(entry)) continue;
          const account = parsePasswdLine(line, entry);
          if (account) accounts.set(entry, account);
        }
        this.passwd = { key, accounts };
      }
      const account = this.passwd.accounts.get(name);
      return account ? { ...account } : undefined;
    } catch {
      return undefined; // unreadable: NSS decides
    }
  }

  private filesFirst(): boolean {
    const key = fileKey(this.nsswitchPath);
    if (this.nsswitch?.key !== key) {
      const line = /^passwd:[ \t]*(.*)$/m.exec(readFileSync(this.nsswitchPath, 'utf8'))?.[1] ?? '';
      const sources = line.replace(/#.*/, '').trim().split(/\s+/);
      this.nsswitch = { key, filesFirst: sources[0] === 'files' && !sources[1]?.startsWith('[') };
    }
    return this.nsswitch.filesFirst;
  }
}

function fileKey(file: string): string {
  const info = statSync(file, { bigint: true });
  return `${info.ino}:${info.size}:${info.mtimeNs}`;
}

const passwdFiles = new PasswdFiles();

/** Names of the account's groups (primary and supplementary), through NSS, as initgroups would set them. */
export async function accountGroups(name: string): Promise<string[]> {
  const { stdout } = await execFileAsync('id', ['-Gn', '--', name], { timeout: 10_000 });
  return stdout.trim().split(/\s+/).filter(Boolean);
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

/**
 * Resolves and checks a server user's OS account. Every refusal is a StewardError with a stable code and a
 * message naming the account, the rule and the agent, so the job event tells an admin what to change.
 */
export async function resolveAccount(
  serverUser: string,
  policy: IdentityPolicy,
  agentId: string,
  lookup: (name: string) => Promise<OsAccount | undefined> = lookupAccount,
): Promise<OsAccount> {
  const name = mapToOsName(serverUser, policy, agentId);
  const via = name === serverUser ? '' : ` (server user '${serverUser}')`;
  if (policy.bannedUsers.has(name)) {
    throw new StewardError(
      'STEWARD_USER_BANNED',
      `OS account '${name}'${via} is in identity.bannedUsers on agent ${agentId}`,
    );
  }
  const account = await lookup(name);
  if (!account)
    throw new StewardError(
      'STEWARD_USER_UNKNOWN',
      `OS account '${name}'${via} does not exist on agent ${agentId} (NSS found nothing, or the directory it resolves accounts from is unreachable)`,
    );
  if (account.uid === 0 || account.gid === 0) {
    throw new StewardError(
      'STEWARD_USER_REFUSED',
      `OS account '${name}'${via} is root-equivalent (uid ${account.uid}, gid ${account.gid}) on agent ${agentId}`,
    );
  }
  if (account.uid < policy.minUid && !policy.allowedSystemUsers.has(name)) {
    throw new StewardError(
      'STEWARD_USER_UID_TOO_LOW',
      `OS account '${name}'${via} has uid ${account.uid} < minUid ${policy.minUid} on agent ${agentId}; list it in identity.allowedSystemUsers if intended`,
    );
  }
  if (policy.allowedGroups) {
    const groups = await accountGroups(name);
    if (!groups.some((group) => policy.allowedGroups!.has(group))) {
      throw new StewardError(
        'STEWARD_USER_GROUP_NOT_ALLOWED',
        `OS account '${name}'${via} is in none of identity.allowedGroups (${[...policy.allowedGroups].join(', ')}) on agent ${agentId}; its groups: ${groups.join(', ') || 'none'}`,
      );
    }
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

/**
 * Logging in with a name and password. A local user of that name (source `local`) is checked against its
 * password; otherwise, when `server.ldap` is set, the directory decides, and the first successful LDAP login
 * creates the user (source `ldap`, no local password). Every attempt goes through the login throttle and is
 * audited; a success issues a token.
 */
import { StewardError, type Role } from '../protocol/index.js';
import type { Clock, Store, UserRecord } from '../store/index.js';
import type { AuditLog } from './audit.js';
import type { DirectoryChecks } from './directory-checks.js';
import type { DirectoryOutcome, LdapDirectory } from './ldap.js';
import { dummyPasswordHash, newId, newSecret, sha256Hex, verifyPassword } from './secrets.js';
import type { LoginThrottle } from './throttle.js';

/** What a login issues: a CLI `login` token, or a portal `session` (sessions.ts), with its lifetime. */
export interface LoginIssue {
  kind: 'login' | 'session';
  ttlMs: number;
}

export interface LoginOutcome {
  token: string;
  tokenId: string;
  user: string;
  role: Role;
  expiresAt: number;
}

/** What checking the password (or asking the directory) found: the user, or why the login fails. */
interface Verdict {
  user: UserRecord | undefined;
  failure: string | undefined;
  method: 'local' | 'ldap';
}

export interface LoginDeps {
  store: Store;
  audit: AuditLog;
  throttle: LoginThrottle;
  directory: LdapDirectory | undefined;
  directoryChecks: DirectoryChecks;
  clock: Clock;
}

export class Logins {
  constructor(private readonly deps: LoginDeps) {}

  /** Checks the password (or the directory) and issues a token; see `Authenticator.login`. */
  async login(name: string, password: string, source: string, issue: LoginIssue): Promise<LoginOutcome> {
    await this.checkThrottle(name, source);
    const local = await this.deps.store.getUser(name);
    const verdict =
      local?.source === 'local' || !this.deps.directory
        ? await verifyLocal(local, password)
        : await this.verifyDirectory(this.deps.directory, name, password, local, source);
    const { user, method } = verdict;
    let failure = verdict.failure;
    if (!failure && user?.deletedAt != null) failure = 'user deleted';
    if (!failure && user?.disabled) failure = 'user disabled';
    if (failure || !user) return this.refuse(name, source, failure ?? 'unknown user', method);
    await this.deps.throttle.recordSuccess(name, source);
    return this.issue(user, method, source, issue);
  }

  private async checkThrottle(name: string, source: string): Promise<void> {
    try {
      await this.deps.throttle.check(name, source);
    } catch (error) {
      // A store that cannot answer is not a throttled login: report it as the failure it is.
      if (!(error instanceof StewardError && error.code === 'STEWARD_LOGIN_THROTTLED')) throw error;
      await this.deps.audit.record({ actor: name, action: 'login.throttled', target: name, source });
      throw error;
    }
  }

  private async verifyDirectory(
    directory: LdapDirectory,
    name: string,
    password: string,
    local: UserRecord | undefined,
    source: string,
  ): Promise<Verdict> {
    const { store, audit, clock } = this.deps;
    const method = 'ldap';
    let outcome: DirectoryOutcome;
    try {
      outcome = await directory.authenticate(name, password);
    } catch (error) {
      await audit.record({
        actor: name,
        action: 'login.failed',
        target: name,
        source,
        detail: { reason: 'directory unavailable', method },
      });
      throw error;
    }
    if (!outcome.ok) return { user: undefined, failure: outcome.reason, method };
    const user = await store.upsertDirectoryUser({
      name: outcome.user.name,
      role: outcome.user.role,
      time: clock(),
    });
    // The directory's name differs from the typed one and belongs to a local user: refuse.
    if (user.source !== 'ldap') return { user, failure: 'directory name is a local user', method };
    this.deps.directoryChecks.remember(user.name, {
      checkedAt: clock(),
      role: user.role,
      groups: outcome.user.groups,
    });
    if (local === undefined && outcome.user.name === name) {
      await audit.record({
        actor: 'system',
        action: 'user.create',
        target: user.name,
        source,
        detail: { role: user.role, source: 'ldap', dn: outcome.user.dn },
      });
    }
    return { user, failure: undefined, method };
  }

  private async refuse(
    name: string,
    source: string,
    failure: string,
    method: 'local' | 'ldap',
  ): Promise<never> {
    await this.deps.throttle.recordFailure(name, source);
    await this.deps.audit.record({
      actor: name,
      action: 'login.failed',
      target: name,
      source,
      detail: { reason: failure, method },
    });
    // One message for unknown names and wrong passwords alike; "disabled" only after a correct password.
    throw new StewardError(
      'STEWARD_UNAUTHENTICATED',
      failure === 'user disabled'
        ? 'this user is disabled; an admin can enable it (`steward user enable NAME`)'
        : failure === 'user deleted'
          ? 'this user was deleted'
          : 'wrong user name or password',
    );
  }

  private async issue(
    user: UserRecord,
    method: 'local' | 'ldap',
    source: string,
    issue: LoginIssue,
  ): Promise<LoginOutcome> {
    const now = this.deps.clock();
    const token = newSecret('stw_');
    const tokenId = newId();
    const expiresAt = now + issue.ttlMs;
    await this.deps.store.createToken({
      id: tokenId,
      user: user.name,
      name: issue.kind === 'session' ? 'portal' : 'login',
      kind: issue.kind,
      tokenHash: sha256Hex(token),
      createdAt: now,
      expiresAt,
    });
    await this.deps.audit.record({
      actor: user.name,
      action: 'login',
      target: user.name,
      source,
      detail: { method, role: user.role, ...(issue.kind === 'session' ? { session: tokenId } : {}) },
    });
    return { token, tokenId, user: user.name, role: user.role, expiresAt };
  }
}

/** A local user's password check. Unknown users cost one scrypt too, so timing does not reveal names. */
async function verifyLocal(local: UserRecord | undefined, password: string): Promise<Verdict> {
  const ok = await verifyPassword(password, local?.passwordHash ?? (await dummyPasswordHash()));
  return {
    user: local,
    failure: !local ? 'unknown user' : !ok ? 'bad password' : undefined,
    method: 'local',
  };
}

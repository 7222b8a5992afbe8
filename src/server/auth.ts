/**
 * Local and LDAP users and bearer tokens. Login tokens expire after `sessionTtlMs`; named API tokens after
 * the lifetime chosen at creation (or never). Disabled users are refused whatever token they hold.
 *
 * Login order: a local user of that name (source `local`) is checked against its password; otherwise, when
 * `server.ldap` is set, the directory decides, and the first successful LDAP login creates the user (source
 * `ldap`, no local password). A directory answer is trusted for `ldap.cacheTtl`; after that, the next use of
 * any of the user's tokens asks the directory again, so a user deleted there or taken out of the allowed
 * groups loses access within one TTL, and a changed admin group changes the role.
 */
import type { CompiledServerConfig } from '../config/index.js';
import { StewardError, type Role } from '../protocol/index.js';
import type { Store, TokenRecord, UserRecord } from '../store/index.js';
import type { AuditLog } from './audit.js';
import { LdapDirectory, type DirectoryOutcome } from './ldap.js';
import {
  dummyPasswordHash,
  hashPassword,
  newId,
  newPassword,
  newSecret,
  sha256Hex,
  verifyPassword,
} from './secrets.js';
import { LoginThrottle } from './throttle.js';

export interface Principal {
  user: string;
  role: Role;
  tokenId: string;
  /**
   * For LDAP users, the group DNs the directory reported at its last check (renewed every `cacheTtl`, like
   * the role): space memberships of LDAP groups match these. Absent for local users.
   */
  directoryGroups?: readonly string[];
}

/** last_used_at is written at most this often per token: reads should not each cost a write. */
const TOUCH_INTERVAL_MS = 60_000;

export function bearerOf(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

interface DirectoryCheck {
  checkedAt: number;
  role: Role;
  groups: readonly string[];
}

export class Authenticator {
  private readonly directory: LdapDirectory | undefined;
  private readonly throttle: LoginThrottle;
  /** Last good directory answer per LDAP user; absent = ask the directory at the next token use. */
  private readonly directoryChecks = new Map<string, DirectoryCheck>();
  /** In-flight re-checks, so a burst of requests with one token asks the directory once. */
  private readonly rechecks = new Map<string, Promise<DirectoryOutcome>>();

  constructor(
    private readonly store: Store,
    private readonly audit: AuditLog,
    private readonly config: CompiledServerConfig,
  ) {
    this.directory = config.ldap ? new LdapDirectory(config.ldap) : undefined;
    this.throttle = new LoginThrottle(store, config.loginThrottle);
  }

  /** On first start (no users at all) creates `admin`; returns the password when it was generated. */
  async bootstrapAdmin(password: string | undefined): Promise<string | undefined> {
    if ((await this.store.countUsers()) > 0) return undefined;
    const chosen = password && password.length > 0 ? password : newPassword();
    const created = await this.store.createUser({
      name: 'admin',
      role: 'admin',
      passwordHash: await hashPassword(chosen),
      createdAt: Date.now(),
    });
    if (!created) return undefined;
    await this.audit.record({
      actor: 'system',
      action: 'user.create',
      target: 'admin',
      detail: { role: 'admin', bootstrap: true },
    });
    return password && password.length > 0 ? undefined : chosen;
  }

  async login(
    name: string,
    password: string,
    source: string,
  ): Promise<{ token: string; user: string; role: Role; expiresAt: number }> {
    try {
      await this.throttle.check(name, source);
    } catch (error) {
      // A store that cannot answer is not a throttled login: report it as the failure it is.
      if (!(error instanceof StewardError && error.code === 'STEWARD_LOGIN_THROTTLED')) throw error;
      await this.audit.record({
        actor: name,
        action: 'login.throttled',
        target: name,
        source,
      });
      throw error;
    }
    const local = await this.store.getUser(name);
    let user: UserRecord | undefined;
    let failure: string | undefined;
    let method: 'local' | 'ldap' = 'local';
    if (local?.source === 'local' || !this.directory) {
      // Unknown users cost one scrypt too, so response time does not reveal which names exist.
      const ok = await verifyPassword(password, local?.passwordHash ?? (await dummyPasswordHash()));
      failure = !local ? 'unknown user' : !ok ? 'bad password' : undefined;
      user = local;
    } else {
      method = 'ldap';
      let outcome: DirectoryOutcome;
      try {
        outcome = await this.directory.authenticate(name, password);
      } catch (error) {
        await this.audit.record({
          actor: name,
          action: 'login.failed',
          target: name,
          source,
          detail: { reason: 'directory unavailable', method },
        });
        throw error;
      }
      if (outcome.ok) {
        user = await this.store.upsertDirectoryUser({
          name: outcome.user.name,
          role: outcome.user.role,
          time: Date.now(),
        });
        if (user.source !== 'ldap') {
          // The directory's name differs from the typed one and belongs to a local user: refuse.
          failure = 'directory name is a local user';
        } else {
          this.directoryChecks.set(user.name, {
            checkedAt: Date.now(),
            role: user.role,
            groups: outcome.user.groups,
          });
          if (local === undefined && outcome.user.name === name) {
            await this.audit.record({
              actor: 'system',
              action: 'user.create',
              target: user.name,
              source,
              detail: { role: user.role, source: 'ldap', dn: outcome.user.dn },
            });
          }
        }
      } else {
        failure = outcome.reason;
      }
    }
    if (!failure && user?.disabled) failure = 'user disabled';
    if (failure || !user) {
      await this.throttle.recordFailure(name, source);
      await this.audit.record({
        actor: name,
        action: 'login.failed',
        target: name,
        source,
        detail: { reason: failure ?? 'unknown user', method },
      });
      // One message for unknown names and wrong passwords alike; "disabled" only after a correct password.
      throw new StewardError(
        'STEWARD_UNAUTHENTICATED',
        failure === 'user disabled' ? 'this user is disabled' : 'wrong user name or password',
      );
    }
    await this.throttle.recordSuccess(name, source);
    const now = Date.now();
    const token = newSecret('stw_');
    const expiresAt = now + this.config.sessionTtlMs;
    await this.store.createToken({
      id: newId(),
      user: user.name,
      name: 'login',
      kind: 'login',
      tokenHash: sha256Hex(token),
      createdAt: now,
      expiresAt,
    });
    await this.audit.record({
      actor: user.name,
      action: 'login',
      target: user.name,
      source,
      detail: { method, role: user.role },
    });
    return { token, user: user.name, role: user.role, expiresAt };
  }

  /**
   * Resolves `Authorization: Bearer …` to a user, or throws STEWARD_UNAUTHENTICATED (or
   * STEWARD_DIRECTORY_UNAVAILABLE when an LDAP user's re-check is due and the directory cannot answer).
   * Refusals are audited (`token.refused`); uses are audited as `token.use` at most once a minute per token.
   */
  async authenticate(authorization: string | undefined, source?: string): Promise<Principal> {
    const secret = bearerOf(authorization);
    if (!secret)
      throw new StewardError('STEWARD_UNAUTHENTICATED', 'missing "Authorization: Bearer <token>" header');
    const refuse = async (reason: string, actor = 'anonymous', target: string | null = null) => {
      await this.audit.record({ actor, action: 'token.refused', target, source, detail: { reason } });
    };
    if (!secret.startsWith('stw_')) {
      await refuse('malformed token');
      throw new StewardError('STEWARD_UNAUTHENTICATED', 'invalid or expired token');
    }
    const found = await this.store.findToken(sha256Hex(secret));
    const now = Date.now();
    if (!found || found.token.revoked || (found.token.expiresAt !== null && found.token.expiresAt <= now)) {
      await refuse(
        !found ? 'unknown token' : found.token.revoked ? 'revoked' : 'expired',
        found?.user.name,
        found?.token.id ?? null,
      );
      throw new StewardError('STEWARD_UNAUTHENTICATED', 'invalid or expired token');
    }
    if (found.user.disabled) {
      await refuse('user disabled', found.user.name, found.token.id);
      throw new StewardError('STEWARD_UNAUTHENTICATED', 'this user is disabled');
    }
    let role = found.user.role;
    let directoryGroups: readonly string[] | undefined;
    if (found.user.source === 'ldap') {
      ({ role, groups: directoryGroups } = await this.recheckDirectoryUser(
        found.user,
        found.token.id,
        source,
        now,
      ));
    }
    if (found.token.lastUsedAt === null || now - found.token.lastUsedAt > TOUCH_INTERVAL_MS) {
      await this.store.touchToken(found.token.id, now);
      await this.audit.record({
        actor: found.user.name,
        action: 'token.use',
        target: found.token.id,
        source,
        detail: { kind: found.token.kind },
      });
    }
    return {
      user: found.user.name,
      role,
      tokenId: found.token.id,
      ...(directoryGroups !== undefined ? { directoryGroups } : {}),
    };
  }

  /**
   * The LDAP user's current role and groups, asking the directory when the cached answer is older than the
   * TTL.
   */
  private async recheckDirectoryUser(
    user: UserRecord,
    tokenId: string,
    source: string | undefined,
    now: number,
  ): Promise<{ role: Role; groups: readonly string[] }> {
    const cached = this.directoryChecks.get(user.name);
    const directory = this.directory;
    if (cached && directory && now - cached.checkedAt < directory.cacheTtlMs)
      return { role: cached.role, groups: cached.groups };
    const refuse = async (reason: string, error: StewardError) => {
      this.directoryChecks.delete(user.name);
      await this.audit.record({
        actor: user.name,
        action: 'token.refused',
        target: tokenId,
        source,
        detail: { reason },
      });
      throw error;
    };
    if (!directory) {
      return refuse(
        'ldap user but no ldap configured',
        new StewardError('STEWARD_UNAUTHENTICATED', 'this user is disabled or no longer in the directory'),
      );
    }
    let pending = this.rechecks.get(user.name);
    if (!pending) {
      pending = directory.lookup(user.name).finally(() => this.rechecks.delete(user.name));
      this.rechecks.set(user.name, pending);
    }
    let outcome: DirectoryOutcome;
    try {
      outcome = await pending;
    } catch (error) {
      const failure =
        error instanceof StewardError
          ? error
          : new StewardError('STEWARD_DIRECTORY_UNAVAILABLE', 'the user directory (LDAP) is not reachable');
      return refuse('directory unavailable', failure);
    }
    if (!outcome.ok || outcome.user.name !== user.name) {
      return refuse(
        outcome.ok ? 'directory name changed' : outcome.reason,
        new StewardError('STEWARD_UNAUTHENTICATED', 'this user is disabled or no longer in the directory'),
      );
    }
    if (outcome.user.role !== user.role) {
      await this.store.upsertDirectoryUser({ name: user.name, role: outcome.user.role, time: now });
      await this.audit.record({
        actor: 'system',
        action: 'user.role',
        target: user.name,
        source: 'ldap',
        detail: { from: user.role, to: outcome.user.role },
      });
    }
    this.directoryChecks.set(user.name, {
      checkedAt: now,
      role: outcome.user.role,
      groups: outcome.user.groups,
    });
    return { role: outcome.user.role, groups: outcome.user.groups };
  }

  async createApiToken(
    principal: Principal,
    name: string,
    expiresInDays: number | undefined,
    source: string,
  ): Promise<{ token: string; record: TokenRecord }> {
    const now = Date.now();
    const token = newSecret('stw_');
    const record: TokenRecord = {
      id: newId(),
      user: principal.user,
      name,
      kind: 'api',
      createdAt: now,
      expiresAt: expiresInDays === undefined ? null : now + expiresInDays * 86_400_000,
      lastUsedAt: null,
      revoked: false,
    };
    await this.store.createToken({ ...record, tokenHash: sha256Hex(token) });
    await this.audit.record({
      actor: principal.user,
      action: 'token.create',
      target: record.id,
      source,
      detail: { name, expiresInDays: expiresInDays ?? null },
    });
    return { token, record };
  }

  async revokeApiToken(principal: Principal, id: string, source: string): Promise<void> {
    const revoked = await this.store.revokeToken(principal.user, id);
    if (!revoked) throw new StewardError('STEWARD_NOT_FOUND', `no token ${id}`);
    await this.audit.record({ actor: principal.user, action: 'token.revoke', target: id, source });
  }

  async createUser(
    principal: Principal,
    input: { name: string; password: string; role: Role },
    source: string,
  ): Promise<void> {
    const created = await this.store.createUser({
      name: input.name,
      role: input.role,
      passwordHash: await hashPassword(input.password),
      createdAt: Date.now(),
    });
    if (!created) throw new StewardError('STEWARD_CONFLICT', `user ${input.name} already exists`);
    await this.audit.record({
      actor: principal.user,
      action: 'user.create',
      target: input.name,
      source,
      detail: { role: input.role },
    });
  }
}

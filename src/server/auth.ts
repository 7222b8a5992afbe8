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
import type { Clock, Store, TokenRecord, UserRecord } from '../store/index.js';
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

/** The token kinds an `Authorization: Bearer` header may carry (portal sessions travel as a cookie). */
const BEARER_KINDS: readonly TokenRecord['kind'][] = ['login', 'api'];

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
    /** Epoch ms for token lifetimes, directory re-checks and creation times (the store's clock in tests). */
    private readonly clock: Clock = Date.now,
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
      createdAt: this.clock(),
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

  /**
   * Checks the password (or the directory) and issues a token: a CLI `login` token by default, or a portal
   * `session` (sessions.ts) with its own lifetime. Both go through the same throttle and audit.
   */
  async login(
    name: string,
    password: string,
    source: string,
    issue: { kind: 'login' | 'session'; ttlMs: number } = { kind: 'login', ttlMs: this.config.sessionTtlMs },
  ): Promise<{ token: string; tokenId: string; user: string; role: Role; expiresAt: number }> {
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
          time: this.clock(),
        });
        if (user.source !== 'ldap') {
          // The directory's name differs from the typed one and belongs to a local user: refuse.
          failure = 'directory name is a local user';
        } else {
          this.directoryChecks.set(user.name, {
            checkedAt: this.clock(),
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
    if (!failure && user?.deletedAt != null) failure = 'user deleted';
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
        failure === 'user disabled'
          ? 'this user is disabled; an admin can enable it (`steward user enable NAME`)'
          : failure === 'user deleted'
            ? 'this user was deleted'
            : 'wrong user name or password',
      );
    }
    await this.throttle.recordSuccess(name, source);
    const now = this.clock();
    const token = newSecret('stw_');
    const tokenId = newId();
    const expiresAt = now + issue.ttlMs;
    await this.store.createToken({
      id: tokenId,
      user: user.name,
      name: issue.kind === 'session' ? 'portal' : 'login',
      kind: issue.kind,
      tokenHash: sha256Hex(token),
      createdAt: now,
      expiresAt,
    });
    await this.audit.record({
      actor: user.name,
      action: 'login',
      target: user.name,
      source,
      detail: { method, role: user.role, ...(issue.kind === 'session' ? { session: tokenId } : {}) },
    });
    return { token, tokenId, user: user.name, role: user.role, expiresAt };
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
    return this.authenticateSecret(secret, BEARER_KINDS, source);
  }

  /**
   * Resolves a token secret of one of `kinds` to a user, with the checks `authenticate` describes. A bearer
   * header takes `login` and `api` tokens, the portal cookie only `session` ones: a session secret never
   * works as a bearer, and an API token planted as a cookie is refused.
   */
  async authenticateSecret(
    secret: string,
    kinds: readonly TokenRecord['kind'][],
    source?: string,
  ): Promise<Principal> {
    const refuse = async (reason: string, actor = 'anonymous', target: string | null = null) => {
      await this.audit.record({ actor, action: 'token.refused', target, source, detail: { reason } });
    };
    if (!secret.startsWith('stw_')) {
      await refuse('malformed token');
      throw new StewardError('STEWARD_UNAUTHENTICATED', 'invalid or expired token');
    }
    const found = await this.store.findToken(sha256Hex(secret));
    const now = this.clock();
    // Checked first: disabling revoked the user's tokens too, and "disabled" is what its holder needs to hear.
    if (found?.user.disabled) {
      await refuse('user disabled', found.user.name, found.token.id);
      throw new StewardError(
        'STEWARD_UNAUTHENTICATED',
        'this user is disabled; an admin can enable it (`steward user enable NAME`)',
      );
    }
    if (!found || !kinds.includes(found.token.kind) || found.token.revoked || found.expired) {
      await refuse(
        !found
          ? 'unknown token'
          : !kinds.includes(found.token.kind)
            ? `${found.token.kind} token used as ${kinds.join('/')}`
            : found.token.revoked
              ? 'revoked'
              : 'expired',
        found?.user.name,
        found?.token.id ?? null,
      );
      throw new StewardError('STEWARD_UNAUTHENTICATED', 'invalid or expired token');
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
    const now = this.clock();
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

  /**
   * Revokes a token (API or login) by id: one's own, or, for admins, anyone's. Someone else's token is
   * reported to a non-admin as absent, like an unknown id.
   */
  async revokeApiToken(principal: Principal, id: string, source: string): Promise<void> {
    const token = await this.store.getToken(id);
    const mayRevoke = token !== undefined && (token.user === principal.user || principal.role === 'admin');
    const revoked = mayRevoke && (await this.store.revokeToken(token.user, id));
    if (!revoked) {
      if (token && !mayRevoke)
        await this.audit.record({
          actor: principal.user,
          action: 'forbidden',
          target: `token ${id}`,
          source,
          detail: { owner: token.user },
        });
      throw new StewardError(
        'STEWARD_NOT_FOUND',
        `no live token ${id} of yours (see \`steward token list\`)`,
      );
    }
    await this.audit.record({
      actor: principal.user,
      action: 'token.revoke',
      target: id,
      source,
      detail: { user: token.user, kind: token.kind, name: token.name },
    });
  }

  /**
   * Sets a local user's password. Users change their own and must give the current one (checked under the
   * login throttle, so a stolen token cannot be used to guess it); admins reset anyone else's without it.
   * An LDAP user's password is the directory's. Afterwards the user's other login sessions are revoked (an
   * admin reset ends all of them); named API tokens stay, they are separate credentials (revoke them with
   * `token revoke`).
   */
  async changePassword(
    principal: Principal,
    name: string,
    input: { currentPassword?: string | undefined; password: string },
    source: string,
  ): Promise<{ revokedSessions: number }> {
    const own = name === principal.user;
    const refuse = async (reason: string, error: StewardError): Promise<never> => {
      await this.audit.record({
        actor: principal.user,
        action: 'user.password.refused',
        target: name,
        source,
        detail: { reason },
      });
      throw error;
    };
    if (!own && principal.role !== 'admin')
      return refuse(
        'not admin',
        new StewardError(
          'STEWARD_FORBIDDEN',
          "only an admin can set another user's password; change your own with `steward user passwd`, or ask an admin to reset it",
        ),
      );
    const user = await this.store.getUser(name);
    if (!user || user.deletedAt !== null)
      return refuse('not found', new StewardError('STEWARD_NOT_FOUND', `no user ${name}`));
    if (user.source === 'ldap')
      return refuse(
        'ldap user',
        new StewardError(
          'STEWARD_USER_IN_DIRECTORY',
          `${name} is an LDAP user: its password is the directory's; change it with the directory's own tools (or ask its administrators)`,
        ),
      );
    if (own) {
      if (input.currentPassword === undefined)
        return refuse(
          'no current password',
          new StewardError('STEWARD_BAD_REQUEST', 'changing your own password needs your current password'),
        );
      await this.throttle.check(name, source);
      if (!(await verifyPassword(input.currentPassword, user.passwordHash ?? (await dummyPasswordHash())))) {
        await this.throttle.recordFailure(name, source);
        return refuse(
          'wrong current password',
          new StewardError(
            'STEWARD_PASSWORD_WRONG',
            'the current password is wrong; if you forgot it, an admin can reset it (`steward user passwd NAME`)',
          ),
        );
      }
      await this.throttle.recordSuccess(name, source);
    }
    await this.store.setUserPassword(name, await hashPassword(input.password));
    const revokedSessions = await this.store.revokeLoginTokens(name, own ? principal.tokenId : undefined);
    await this.audit.record({
      actor: principal.user,
      action: 'user.password',
      target: name,
      source,
      detail: { reset: !own, revokedSessions },
    });
    return { revokedSessions };
  }

  async createUser(
    principal: Principal,
    input: { name: string; password: string; role: Role },
    source: string,
  ): Promise<void> {
    // A user's name is their personal space's name: taking a shared space's name would leave the user
    // without a space of their own, and their bare workflow names resolving into the shared one.
    const space = await this.store.spaces.getSpace(input.name);
    if (space?.kind === 'shared')
      throw new StewardError(
        'STEWARD_CONFLICT',
        `${input.name} is the name of a shared space, and a user's name is their personal space's name: choose another name`,
      );
    const created = await this.store.createUser({
      name: input.name,
      role: input.role,
      passwordHash: await hashPassword(input.password),
      createdAt: this.clock(),
    });
    if (!created) {
      const existing = await this.store.getUser(input.name);
      if (existing?.deletedAt != null)
        throw new StewardError(
          'STEWARD_USER_NAME_RETIRED',
          `the name ${input.name} belonged to a user deleted on ${new Date(existing.deletedAt).toISOString()}; names are not reused, so its past jobs and audit entries never pass to a new account: choose another name`,
        );
      throw new StewardError('STEWARD_CONFLICT', `user ${input.name} already exists`);
    }
    await this.audit.record({
      actor: principal.user,
      action: 'user.create',
      target: input.name,
      source,
      detail: { role: input.role },
    });
  }
}

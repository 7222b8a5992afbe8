/**
 * Local and LDAP users and bearer tokens. Login tokens expire after `sessionTtlMs`; named API tokens after
 * the lifetime chosen at creation (or never). Disabled users are refused whatever token they hold.
 *
 * `Authenticator` is the one entry point the rest of the server uses; the work is split by concept:
 * logging in (login.ts, under the login throttle of throttle.ts), verifying and issuing tokens
 * (token-auth.ts), the directory's cached answers for LDAP users (directory-checks.ts) and local accounts
 * and passwords (accounts.ts).
 */
import type { CompiledServerConfig } from '../config/index.js';
import { StewardError, type Role } from '../protocol/index.js';
import type { Clock, Store, TokenRecord } from '../store/index.js';
import { LocalAccounts } from './accounts.js';
import type { AuditLog } from './audit.js';
import { DirectoryChecks } from './directory-checks.js';
import { LdapDirectory } from './ldap.js';
import { Logins, type LoginIssue, type LoginOutcome } from './login.js';
import type { Principal } from './principal.js';
import { LoginThrottle } from './throttle.js';
import { BEARER_KINDS, bearerOf, TokenAuth } from './token-auth.js';

export type { Principal } from './principal.js';
export { bearerOf } from './token-auth.js';

export class Authenticator {
  private readonly logins: Logins;
  private readonly tokens: TokenAuth;
  private readonly accounts: LocalAccounts;

  constructor(
    store: Store,
    audit: AuditLog,
    private readonly config: CompiledServerConfig,
    /** Epoch ms for token lifetimes, directory re-checks and creation times (the store's clock in tests). */
    clock: Clock = Date.now,
  ) {
    const directory = config.ldap ? new LdapDirectory(config.ldap) : undefined;
    const throttle = new LoginThrottle(store, config.loginThrottle);
    const directoryChecks = new DirectoryChecks(store, audit, directory);
    this.logins = new Logins({ store, audit, throttle, directory, directoryChecks, clock });
    this.tokens = new TokenAuth(store, audit, directoryChecks, clock);
    this.accounts = new LocalAccounts(store, audit, throttle, clock);
  }

  /** On first start (no users at all) creates `admin`; returns the password when it was generated. */
  bootstrapAdmin(password: string | undefined): Promise<string | undefined> {
    return this.accounts.bootstrapAdmin(password);
  }

  /**
   * Checks the password (or the directory) and issues a token: a CLI `login` token by default, or a portal
   * `session` (sessions.ts) with its own lifetime. Both go through the same throttle and audit.
   */
  login(
    name: string,
    password: string,
    source: string,
    issue: LoginIssue = { kind: 'login', ttlMs: this.config.sessionTtlMs },
  ): Promise<LoginOutcome> {
    return this.logins.login(name, password, source, issue);
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
    return this.tokens.authenticateSecret(secret, BEARER_KINDS, source);
  }

  /**
   * Resolves a token secret of one of `kinds` to a user, with the checks `authenticate` describes. A bearer
   * header takes `login` and `api` tokens, the portal cookie only `session` ones: a session secret never
   * works as a bearer, and an API token planted as a cookie is refused.
   */
  authenticateSecret(
    secret: string,
    kinds: readonly TokenRecord['kind'][],
    source?: string,
  ): Promise<Principal> {
    return this.tokens.authenticateSecret(secret, kinds, source);
  }

  createApiToken(
    principal: Principal,
    name: string,
    expiresInDays: number | undefined,
    source: string,
  ): Promise<{ token: string; record: TokenRecord }> {
    return this.tokens.createApiToken(principal, name, expiresInDays, source);
  }

  /**
   * Revokes a token (API or login) by id: one's own, or, for admins, anyone's. Someone else's token is
   * reported to a non-admin as absent, like an unknown id.
   */
  revokeApiToken(principal: Principal, id: string, source: string): Promise<void> {
    return this.tokens.revokeApiToken(principal, id, source);
  }

  /** Sets a local user's password: see `LocalAccounts.changePassword`. */
  changePassword(
    principal: Principal,
    name: string,
    input: { currentPassword?: string | undefined; password: string },
    source: string,
  ): Promise<{ revokedSessions: number }> {
    return this.accounts.changePassword(principal, name, input, source);
  }

  createUser(
    principal: Principal,
    input: { name: string; password: string; role: Role },
    source: string,
  ): Promise<void> {
    return this.accounts.createUser(principal, input, source);
  }
}

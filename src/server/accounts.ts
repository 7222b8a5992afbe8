/**
 * Local accounts: the first admin, creating users, and passwords (a user's own change under the login
 * throttle, or an admin's reset). An LDAP user's password is the directory's.
 */
import { StewardError, type Role } from '../protocol/index.js';
import type { Clock, Store } from '../store/index.js';
import type { AuditLog } from './audit.js';
import type { Principal } from './principal.js';
import { dummyPasswordHash, hashPassword, newPassword, verifyPassword } from './secrets.js';
import type { LoginThrottle } from './throttle.js';

export class LocalAccounts {
  constructor(
    private readonly store: Store,
    private readonly audit: AuditLog,
    private readonly throttle: LoginThrottle,
    private readonly clock: Clock,
  ) {}

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

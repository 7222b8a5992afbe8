/**
 * The directory's last answer per LDAP user. A directory answer is trusted for `ldap.cacheTtl`; after that,
 * the next use of any of the user's tokens asks the directory again, so a user deleted there or taken out of
 * the allowed groups loses access within one TTL, and a changed admin group changes the role.
 */
import { StewardError, type Role } from '../protocol/index.js';
import type { Store, UserRecord } from '../store/index.js';
import type { AuditLog } from './audit.js';
import type { DirectoryOutcome, LdapDirectory } from './ldap.js';

export interface DirectoryCheck {
  checkedAt: number;
  role: Role;
  groups: readonly string[];
}

const NO_LONGER_IN_DIRECTORY = 'this user is disabled or no longer in the directory';

export class DirectoryChecks {
  /** Last good directory answer per LDAP user; absent = ask the directory at the next token use. */
  private readonly checks = new Map<string, DirectoryCheck>();
  /** In-flight re-checks, so a burst of requests with one token asks the directory once. */
  private readonly rechecks = new Map<string, Promise<DirectoryOutcome>>();

  constructor(
    private readonly store: Store,
    private readonly audit: AuditLog,
    private readonly directory: LdapDirectory | undefined,
  ) {}

  /** Records a good answer (a login the directory accepted). */
  remember(name: string, check: DirectoryCheck): void {
    this.checks.set(name, check);
  }

  /**
   * The LDAP user's current role and groups, asking the directory when the cached answer is older than the
   * TTL. A refusal is audited (`token.refused`) and thrown.
   */
  async current(
    user: UserRecord,
    tokenId: string,
    source: string | undefined,
    now: number,
  ): Promise<{ role: Role; groups: readonly string[] }> {
    const cached = this.checks.get(user.name);
    const directory = this.directory;
    if (cached && directory && now - cached.checkedAt < directory.cacheTtlMs)
      return { role: cached.role, groups: cached.groups };
    const refuse = async (reason: string, error: StewardError) => {
      this.checks.delete(user.name);
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
        new StewardError('STEWARD_UNAUTHENTICATED', NO_LONGER_IN_DIRECTORY),
      );
    }
    let outcome: DirectoryOutcome;
    try {
      outcome = await this.lookupOnce(directory, user.name);
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
        new StewardError('STEWARD_UNAUTHENTICATED', NO_LONGER_IN_DIRECTORY),
      );
    }
    await this.followRole(user, outcome.user.role, now);
    this.checks.set(user.name, { checkedAt: now, role: outcome.user.role, groups: outcome.user.groups });
    return { role: outcome.user.role, groups: outcome.user.groups };
  }

  /** One directory lookup per user at a time, shared by every request that waits for it. */
  private lookupOnce(directory: LdapDirectory, name: string): Promise<DirectoryOutcome> {
    let pending = this.rechecks.get(name);
    if (!pending) {
      pending = directory.lookup(name).finally(() => this.rechecks.delete(name));
      this.rechecks.set(name, pending);
    }
    return pending;
  }

  /** A changed admin group changes the stored role (audited). */
  private async followRole(user: UserRecord, role: Role, now: number): Promise<void> {
    if (role === user.role) return;
    await this.store.upsertDirectoryUser({ name: user.name, role, time: now });
    await this.audit.record({
      actor: 'system',
      action: 'user.role',
      target: user.name,
      source: 'ldap',
      detail: { from: user.role, to: role },
    });
  }
}

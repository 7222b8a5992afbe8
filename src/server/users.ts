/**
 * User lifecycle for admins: disable, enable, change role, delete. Every change is audited; refusals that
 * name a rule (last admin, live jobs, directory users) carry their own error codes.
 *
 * - Disable: the user can no longer log in, every token of theirs is revoked in the same transaction (the
 *   next request with any of them is 401), and every job of theirs that has not ended is canceled: queued and
 *   offered ones at once, loading and running ones through their agent (which kills the steps). A disabled
 *   account is someone who left or a credential that leaked; code must not go on running under that OS
 *   account on its behalf. Their schedules are paused (each audited) and stay paused when the user is
 *   enabled again. Enabling does not bring tokens back: the user logs in again.
 * - Delete: refused while the user has jobs that have not ended. The row stays (disabled, no password, its
 *   tokens removed, `deletedAt` set) so past jobs, results and audit entries stay readable by admins under
 *   the same name, and the name cannot be created again (STEWARD_USER_NAME_RETIRED), by an admin or by an
 *   LDAP login, so nobody inherits that history.
 * - Last admin: disabling, deleting or demoting the last enabled admin is refused (STEWARD_LAST_ADMIN).
 */
import { StewardError, type Role } from '../protocol/index.js';
import type { Store, UserChange, UserRecord } from '../store/index.js';
import type { AuditLog } from './audit.js';
import type { Principal } from './auth.js';
import type { JobService } from './jobs/index.js';
import type { ScheduleService } from './schedules/index.js';

export interface UserAdminDeps {
  store: Store;
  audit: AuditLog;
  jobs: JobService;
  /** Disabling a user pauses their schedules. */
  schedules: ScheduleService;
}

export class UserAdmin {
  constructor(private readonly deps: UserAdminDeps) {}

  /** Disables `name`, revoking its tokens and canceling its jobs that have not ended. */
  async disable(
    principal: Principal,
    name: string,
    source: string,
  ): Promise<{ user: UserRecord; canceledJobs: string[] }> {
    const outcome = await this.change(principal, name, { kind: 'disable' }, source);
    // Listed after the commit: a job inserted before it is in the list, and a submission that authenticated
    // before it but is written after it sees the user disabled and cancels itself (JobService.submit).
    // If a cancel fails (the bus is down), the disable stands and is audited with the jobs canceled so far;
    // running the disable again cancels the rest.
    const canceledJobs: string[] = [];
    let pausedSchedules = 0;
    try {
      // Paused first: a tick firing now would otherwise add a job after the cancel's listing.
      pausedSchedules = (await this.deps.schedules.pauseOwnerSchedules(principal, name, source)).length;
      await this.cancelLiveJobs(principal, name, source, canceledJobs);
    } finally {
      await this.deps.audit.record({
        actor: principal.user,
        action: 'user.disable',
        target: name,
        source,
        detail: {
          wasDisabled: outcome.before.disabled,
          revokedTokens: outcome.revokedTokens,
          canceledJobs: canceledJobs.length,
          pausedSchedules,
        },
      });
    }
    return { user: outcome.user, canceledJobs };
  }

  async enable(principal: Principal, name: string, source: string): Promise<UserRecord> {
    const outcome = await this.change(principal, name, { kind: 'enable' }, source);
    await this.deps.audit.record({
      actor: principal.user,
      action: 'user.enable',
      target: name,
      source,
      detail: { wasDisabled: outcome.before.disabled },
    });
    return outcome.user;
  }

  /** Sets a local user's role; an LDAP user's role is the directory's (its admin group). */
  async setRole(principal: Principal, name: string, role: Role, source: string): Promise<UserRecord> {
    const current = await this.deps.store.getUser(name);
    if (current && current.deletedAt === null && current.source === 'ldap')
      throw new StewardError(
        'STEWARD_USER_IN_DIRECTORY',
        `${name} is an LDAP user: its role follows the directory's admin group (server.ldap.adminGroups); ask the directory's administrators to change its groups`,
      );
    const outcome = await this.change(principal, name, { kind: 'role', role }, source);
    await this.deps.audit.record({
      actor: principal.user,
      action: 'user.role',
      target: name,
      source,
      detail: { from: outcome.before.role, to: role },
    });
    return outcome.user;
  }

  /** Deletes `name` (see the file comment); refused while the user has jobs that have not ended. */
  async delete(principal: Principal, name: string, source: string): Promise<UserRecord> {
    const outcome = await this.change(principal, name, { kind: 'delete', time: Date.now() }, source);
    // A deleted user's schedules could never fire again: paused (audited), kept for the record.
    const pausedSchedules = (
      await this.deps.schedules.pauseOwnerSchedules(principal, name, source, 'deleted')
    ).length;
    await this.deps.audit.record({
      actor: principal.user,
      action: 'user.delete',
      target: name,
      source,
      detail: {
        role: outcome.before.role,
        source: outcome.before.source,
        revokedTokens: outcome.revokedTokens,
        pausedSchedules,
      },
    });
    return outcome.user;
  }

  private async change(
    principal: Principal,
    name: string,
    change: UserChange,
    source: string,
  ): Promise<{ user: UserRecord; before: UserRecord; revokedTokens: number }> {
    const outcome = await this.deps.store.changeUser(name, change);
    if (outcome.ok) return outcome;
    const refuse = async (reason: string, error: StewardError): Promise<never> => {
      await this.deps.audit.record({
        actor: principal.user,
        action: `user.${change.kind}.refused`,
        target: name,
        source,
        detail: { reason },
      });
      throw error;
    };
    if (outcome.reason === 'not-found')
      return refuse(
        'not found',
        new StewardError('STEWARD_NOT_FOUND', `no user ${name} (see \`steward user list\`)`),
      );
    if (outcome.reason === 'last-admin') {
      const verb = change.kind === 'role' ? 'demote' : change.kind;
      return refuse(
        'last admin',
        new StewardError(
          'STEWARD_LAST_ADMIN',
          `cannot ${verb} ${name}: it is the last enabled admin, and without one nobody could manage users; an admin must first make another user an admin (\`steward user role NAME admin\`, or add an LDAP user to the directory's admin group)`,
        ),
      );
    }
    return refuse(
      'live jobs',
      new StewardError(
        'STEWARD_USER_HAS_JOBS',
        `cannot delete ${name}: ${outcome.jobs} of its jobs have not ended; \`steward user disable ${name}\` cancels them (or wait for them to end), then delete`,
        { details: { jobs: outcome.jobs } },
      ),
    );
  }

  private async cancelLiveJobs(
    principal: Principal,
    name: string,
    source: string,
    canceled: string[],
  ): Promise<void> {
    for (const id of await this.deps.store.listLiveJobIds(name)) {
      try {
        await this.deps.jobs.cancel(
          { ...principal, role: 'admin' },
          id,
          source,
          `canceled: user ${name} was disabled by ${principal.user}`,
        );
        canceled.push(id);
      } catch (error) {
        // It ended between the listing and the cancel: nothing left to do for it.
        if (!(error instanceof StewardError && error.code === 'STEWARD_JOB_NOT_CANCELABLE')) throw error;
      }
    }
  }
}

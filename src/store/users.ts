/**
 * Users: local and directory (LDAP) accounts, and the one guarded change (`changeUser`) that never leaves
 * the server without an enabled admin. Tokens are in `tokens.ts`, the login throttle's rows in
 * `login-failures.ts`.
 */
import type { Transaction } from 'kysely';
import { terminalJobStates } from '../protocol/index.js';
import { insertedRows, type StoreContext } from './context.js';
import type { Database } from './schema.js';

export interface UserRecord {
  name: string;
  role: 'admin' | 'user';
  passwordHash: string | null;
  disabled: boolean;
  createdAt: number;
  /** `ldap` users were created by their first LDAP login and have no local password. */
  source: 'local' | 'ldap';
  /** When an admin deleted the user (the row stays, disabled, so its history keeps its name); else null. */
  deletedAt: number | null;
}

/** A change to a user that `changeUser` makes only if at least one enabled admin remains. */
export type UserChange =
  | { kind: 'disable' }
  | { kind: 'enable' }
  | { kind: 'role'; role: 'admin' | 'user' }
  | { kind: 'delete'; time: number };

export type UserChangeOutcome =
  | { ok: true; user: UserRecord; before: UserRecord; revokedTokens: number }
  | { ok: false; reason: 'not-found' }
  | { ok: false; reason: 'last-admin'; user: UserRecord }
  | { ok: false; reason: 'live-jobs'; user: UserRecord; jobs: number };

export function toUser(row: {
  name: string;
  role: 'admin' | 'user';
  password_hash: string | null;
  disabled: number;
  created_at: number;
  source: 'local' | 'ldap';
  deleted_at: number | null;
}): UserRecord {
  return {
    name: row.name,
    role: row.role,
    passwordHash: row.password_hash,
    disabled: row.disabled === 1,
    createdAt: row.created_at,
    source: row.source,
    deletedAt: row.deleted_at === null ? null : Number(row.deleted_at),
  };
}

export class UserStore {
  constructor(private readonly ctx: StoreContext) {}

  async countUsers(): Promise<number> {
    const row = await this.ctx.db
      .selectFrom('users')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }

  /** Returns false when the name is taken. */
  async createUser(user: {
    name: string;
    role: 'admin' | 'user';
    passwordHash: string | null;
    createdAt: number;
  }): Promise<boolean> {
    const result = await this.ctx.db
      .insertInto('users')
      .values({
        name: user.name,
        role: user.role,
        password_hash: user.passwordHash,
        disabled: 0,
        created_at: user.createdAt,
      })
      .onConflict((oc) => oc.column('name').doNothing())
      .executeTakeFirst();
    return insertedRows(result) === 1;
  }

  /**
   * Creates or refreshes the record of a directory (LDAP) user: created with no password, role updated on
   * later logins. A local user of the same name is left untouched; returns the stored record either way.
   */
  async upsertDirectoryUser(user: {
    name: string;
    role: 'admin' | 'user';
    time: number;
  }): Promise<UserRecord> {
    await this.ctx.db
      .insertInto('users')
      .values({
        name: user.name,
        role: user.role,
        password_hash: null,
        disabled: 0,
        created_at: user.time,
        source: 'ldap',
      })
      .onConflict((oc) => oc.column('name').doNothing())
      .execute();
    await this.ctx.db
      .updateTable('users')
      .set({ role: user.role })
      .where('name', '=', user.name)
      .where('source', '=', 'ldap')
      .where('role', '!=', user.role)
      .execute();
    const stored = await this.getUser(user.name);
    if (!stored) throw new Error(`user ${user.name} vanished while being stored`);
    return stored;
  }

  async getUser(name: string): Promise<UserRecord | undefined> {
    const row = await this.ctx.db.selectFrom('users').selectAll().where('name', '=', name).executeTakeFirst();
    return row && toUser(row);
  }

  async listUsers(): Promise<UserRecord[]> {
    const rows = await this.ctx.db.selectFrom('users').selectAll().orderBy('name').execute();
    return rows.map(toUser);
  }

  async setUserDisabled(name: string, disabled: boolean): Promise<boolean> {
    const result = await this.ctx.db
      .updateTable('users')
      .set({ disabled: disabled ? 1 : 0 })
      .where('name', '=', name)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 1;
  }

  async setUserPassword(name: string, passwordHash: string): Promise<boolean> {
    const result = await this.ctx.db
      .updateTable('users')
      .set({ password_hash: passwordHash })
      .where('name', '=', name)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 1;
  }

  /**
   * Disables, enables, re-roles or deletes a user in one transaction, refusing (`last-admin`) a change that
   * would leave no enabled admin, and a delete (`live-jobs`) while the user has jobs that have not ended.
   * Disabling and deleting revoke every token of the user in the same transaction, so no request
   * authenticated after the commit passes with any of them. A deleted user keeps its row (disabled, no
   * password, no tokens): jobs reference it, and the name cannot be created again.
   *
   * On PostgreSQL the enabled admins' rows are locked first, so two admins disabling each other at once
   * cannot both succeed; SQLite serialises write transactions anyway.
   */
  async changeUser(name: string, change: UserChange): Promise<UserChangeOutcome> {
    return this.ctx.db.transaction().execute(async (trx) => {
      const enabledAdmins = await this.lockEnabledAdmins(trx);
      let target = trx.selectFrom('users').selectAll().where('name', '=', name);
      if (this.ctx.dialect === 'postgres') target = target.forUpdate();
      const row = await target.executeTakeFirst();
      if (!row || row.deleted_at !== null) return { ok: false, reason: 'not-found' };
      const before = toUser(row);
      const leavesAdmins =
        change.kind === 'disable' ||
        change.kind === 'delete' ||
        (change.kind === 'role' && change.role !== 'admin');
      if (leavesAdmins && enabledAdmins.includes(name) && enabledAdmins.length === 1)
        return { ok: false, reason: 'last-admin', user: before };
      if (change.kind === 'delete') {
        const live = await countLiveJobs(trx, name);
        if (live > 0) return { ok: false, reason: 'live-jobs', user: before, jobs: live };
      }
      const revokedTokens = await applyUserChange(trx, name, change);
      const after = await trx
        .selectFrom('users')
        .selectAll()
        .where('name', '=', name)
        .executeTakeFirstOrThrow();
      return { ok: true, user: toUser(after), before, revokedTokens };
    });
  }

  /** The names of the enabled admins, their rows locked on PostgreSQL until the transaction ends. */
  private async lockEnabledAdmins(trx: Transaction<Database>): Promise<string[]> {
    let admins = trx
      .selectFrom('users')
      .select('name')
      .where('role', '=', 'admin')
      .where('disabled', '=', 0)
      .where('deleted_at', 'is', null);
    if (this.ctx.dialect === 'postgres') admins = admins.forUpdate();
    return (await admins.execute()).map((row) => row.name);
  }
}

async function countLiveJobs(trx: Transaction<Database>, user: string): Promise<number> {
  const live = await trx
    .selectFrom('jobs')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('user_name', '=', user)
    .where('state', 'not in', [...terminalJobStates])
    .executeTakeFirstOrThrow();
  return Number(live.n);
}

/** Writes a change `changeUser` allowed; returns how many of the user's tokens it revoked. */
async function applyUserChange(
  trx: Transaction<Database>,
  name: string,
  change: UserChange,
): Promise<number> {
  let revokedTokens = 0;
  if (change.kind === 'disable' || change.kind === 'delete') {
    const revoked = await trx
      .updateTable('api_tokens')
      .set({ revoked: 1 })
      .where('user_name', '=', name)
      .where('revoked', '=', 0)
      .executeTakeFirst();
    revokedTokens = Number(revoked.numUpdatedRows);
  }
  if (change.kind === 'disable') {
    await trx.updateTable('users').set({ disabled: 1 }).where('name', '=', name).execute();
  } else if (change.kind === 'enable') {
    await trx.updateTable('users').set({ disabled: 0 }).where('name', '=', name).execute();
  } else if (change.kind === 'role') {
    await trx.updateTable('users').set({ role: change.role }).where('name', '=', name).execute();
  } else {
    // The tokens go entirely: nothing of a deleted user's can ever authenticate again.
    await trx.deleteFrom('api_tokens').where('user_name', '=', name).execute();
    await trx
      .updateTable('users')
      .set({ disabled: 1, password_hash: null, deleted_at: change.time })
      .where('name', '=', name)
      .execute();
  }
  return revokedTokens;
}

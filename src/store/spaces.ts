/**
 * Spaces, their members, and local groups (migration 0008): the rows behind workflow permissions. What a
 * membership allows is decided in the server (`server/spaces.ts`); this module only reads and writes rows.
 */
import type { Kysely } from 'kysely';
import type { Database } from './schema.js';

export type SpaceRole = 'viewer' | 'editor' | 'owner';
export type MemberKind = 'user' | 'group';

export interface SpaceRecord {
  name: string;
  kind: 'personal' | 'shared';
  /** The user a personal space belongs to; null for shared spaces. */
  owner: string | null;
  description: string;
  createdBy: string;
  createdAt: number;
}

export interface SpaceMemberRecord {
  space: string;
  kind: MemberKind;
  /** A user name, a local group name, or an LDAP group DN. */
  member: string;
  role: SpaceRole;
  addedBy: string;
  addedAt: number;
}

export interface GroupRecord {
  name: string;
  description: string;
  createdBy: string;
  createdAt: number;
  members: string[];
}

function toSpace(row: Database['spaces']): SpaceRecord {
  return {
    name: row.name,
    kind: row.kind,
    owner: row.owner,
    description: row.description,
    createdBy: row.created_by,
    createdAt: row.created_at,
  };
}

function toMember(row: Database['space_members']): SpaceMemberRecord {
  return {
    space: row.space,
    kind: row.kind,
    member: row.member,
    role: row.role,
    addedBy: row.added_by,
    addedAt: row.added_at,
  };
}

export class SpaceStore {
  constructor(private readonly db: Kysely<Database>) {}

  async getSpace(name: string): Promise<SpaceRecord | undefined> {
    const row = await this.db.selectFrom('spaces').selectAll().where('name', '=', name).executeTakeFirst();
    return row && toSpace(row);
  }

  /**
   * The user's personal space, created on first use. When the name is taken by a shared space, that space
   * is returned (its `kind` tells the caller).
   */
  async ensurePersonalSpace(user: string, time: number): Promise<SpaceRecord> {
    await this.db
      .insertInto('spaces')
      .values({
        name: user,
        kind: 'personal',
        owner: user,
        description: '',
        created_by: 'system',
        created_at: time,
      })
      .onConflict((oc) => oc.column('name').doNothing())
      .execute();
    const space = await this.getSpace(user);
    if (!space) throw new Error(`space ${user} vanished while being created`);
    return space;
  }

  /** Returns false when the name is taken. */
  async createSharedSpace(space: {
    name: string;
    description: string;
    createdBy: string;
    time: number;
  }): Promise<boolean> {
    const result = await this.db
      .insertInto('spaces')
      .values({
        name: space.name,
        kind: 'shared',
        owner: null,
        description: space.description,
        created_by: space.createdBy,
        created_at: space.time,
      })
      .onConflict((oc) => oc.column('name').doNothing())
      .executeTakeFirst();
    return Number(result.numInsertedOrUpdatedRows ?? 0n) === 1;
  }

  /** Deletes a space and its memberships (the caller checked it holds no live workflow). */
  async deleteSpace(name: string): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      await trx.deleteFrom('space_members').where('space', '=', name).execute();
      const result = await trx.deleteFrom('spaces').where('name', '=', name).executeTakeFirst();
      return Number(result.numDeletedRows) === 1;
    });
  }

  async listSpaces(): Promise<SpaceRecord[]> {
    const rows = await this.db.selectFrom('spaces').selectAll().orderBy('name').execute();
    return rows.map(toSpace);
  }

  async listMembers(space?: string): Promise<SpaceMemberRecord[]> {
    let query = this.db.selectFrom('space_members').selectAll();
    if (space !== undefined) query = query.where('space', '=', space);
    const rows = await query.orderBy('space').orderBy('kind').orderBy('member').execute();
    return rows.map(toMember);
  }

  /** Adds a member or changes its role; returns the role it had before (undefined: new member). */
  async setMember(
    member: Omit<SpaceMemberRecord, 'addedAt'> & { time: number },
  ): Promise<SpaceRole | undefined> {
    return this.db.transaction().execute(async (trx) => {
      const existing = await trx
        .selectFrom('space_members')
        .select('role')
        .where('space', '=', member.space)
        .where('kind', '=', member.kind)
        .where('member', '=', member.member)
        .executeTakeFirst();
      if (existing) {
        await trx
          .updateTable('space_members')
          .set({ role: member.role, added_by: member.addedBy, added_at: member.time })
          .where('space', '=', member.space)
          .where('kind', '=', member.kind)
          .where('member', '=', member.member)
          .execute();
      } else {
        await trx
          .insertInto('space_members')
          .values({
            space: member.space,
            kind: member.kind,
            member: member.member,
            role: member.role,
            added_by: member.addedBy,
            added_at: member.time,
          })
          .execute();
      }
      return existing?.role;
    });
  }

  async removeMember(space: string, kind: MemberKind, member: string): Promise<boolean> {
    const result = await this.db
      .deleteFrom('space_members')
      .where('space', '=', space)
      .where('kind', '=', kind)
      .where('member', '=', member)
      .executeTakeFirst();
    return Number(result.numDeletedRows) === 1;
  }

  // ---- local groups -----------------------------------------------------------------------------------

  /** Returns false when the name is taken. */
  async createGroup(group: {
    name: string;
    description: string;
    createdBy: string;
    time: number;
  }): Promise<boolean> {
    const result = await this.db
      .insertInto('groups')
      .values({
        name: group.name,
        description: group.description,
        created_by: group.createdBy,
        created_at: group.time,
      })
      .onConflict((oc) => oc.column('name').doNothing())
      .executeTakeFirst();
    return Number(result.numInsertedOrUpdatedRows ?? 0n) === 1;
  }

  async getGroup(name: string): Promise<GroupRecord | undefined> {
    return (await this.listGroups(name))[0];
  }

  async listGroups(name?: string): Promise<GroupRecord[]> {
    let groups = this.db.selectFrom('groups').selectAll();
    let members = this.db.selectFrom('group_members').select(['group_name', 'user_name']);
    if (name !== undefined) {
      groups = groups.where('name', '=', name);
      members = members.where('group_name', '=', name);
    }
    const [groupRows, memberRows] = await Promise.all([
      groups.orderBy('name').execute(),
      members.orderBy('user_name').execute(),
    ]);
    return groupRows.map((row) => ({
      name: row.name,
      description: row.description,
      createdBy: row.created_by,
      createdAt: row.created_at,
      members: memberRows.filter((m) => m.group_name === row.name).map((m) => m.user_name),
    }));
  }

  /** Returns false when the user was a member already. */
  async addGroupMember(group: string, user: string, by: string, time: number): Promise<boolean> {
    const result = await this.db
      .insertInto('group_members')
      .values({ group_name: group, user_name: user, added_by: by, added_at: time })
      .onConflict((oc) => oc.columns(['group_name', 'user_name']).doNothing())
      .executeTakeFirst();
    return Number(result.numInsertedOrUpdatedRows ?? 0n) === 1;
  }

  async removeGroupMember(group: string, user: string): Promise<boolean> {
    const result = await this.db
      .deleteFrom('group_members')
      .where('group_name', '=', group)
      .where('user_name', '=', user)
      .executeTakeFirst();
    return Number(result.numDeletedRows) === 1;
  }

  /** The local groups a user is in. */
  async groupsOf(user: string): Promise<string[]> {
    const rows = await this.db
      .selectFrom('group_members')
      .select('group_name')
      .where('user_name', '=', user)
      .orderBy('group_name')
      .execute();
    return rows.map((row) => row.group_name);
  }
}

/**
 * Spaces and who may do what in them: the one place that decides workflow permissions. Every workflow
 * route, job submission and space or group change asks here first.
 *
 * Rules (docs/user-guide.md, "Spaces and roles"):
 * - A personal space belongs to its user (role `owner`); nobody else pushes, deletes or shares there, admins
 *   included, because a workflow pushed there runs as that user when they run it. Admins may read it.
 * - In a shared space the caller's role is the highest of their own membership and their groups' (local
 *   groups, and LDAP groups the directory reported at the last re-check). `viewer` reads and runs, `editor`
 *   also pushes and deletes workflows, `owner` also manages members.
 * - Admins create and delete shared spaces, manage every shared space's members and may read and delete
 *   workflows anywhere but in other users' personal spaces; pushing needs an explicit editor membership even
 *   for them, so code entering a shared space always comes from a listed member.
 */
import { parseWorkflowRef, StewardError, type ParsedWorkflowRef, type SpaceRole } from '../protocol/index.js';
import type { GroupRecord, MemberKind, SpaceMemberRecord, SpaceRecord, Store } from '../store/index.js';
import type { AuditLog } from './audit.js';
import type { Principal } from './auth.js';

const RANK: Record<SpaceRole, number> = { viewer: 1, editor: 2, owner: 3 };

/** What the caller wants to do in a space. */
export type SpaceAction = 'view' | 'push' | 'delete-workflow' | 'manage';

export interface SpaceAccess {
  space: SpaceRecord;
  /** The caller's own role (null: none; an admin may still view and manage). */
  role: SpaceRole | null;
}

/** A workflow address with its space decided (the caller's personal space for a bare name). */
export interface WorkflowAddress {
  space: string;
  name: string;
  version?: number;
}

/** DNs compare case-insensitively and without blanks around separators, as directories treat them. */
export function normalizeDn(dn: string): string {
  return dn
    .trim()
    .toLowerCase()
    .replace(/\s*([,=+])\s*/g, '$1');
}

export function isDn(member: string): boolean {
  return member.includes('=');
}

export class SpaceService {
  constructor(
    private readonly store: Store,
    private readonly audit: AuditLog,
  ) {}

  /** Parses `[space/]name[@version]`; a bare name means the caller's personal space. */
  address(principal: Principal, ref: string): WorkflowAddress {
    const parsed = parseWorkflowRef(ref);
    if ('error' in parsed) throw new StewardError('STEWARD_WORKFLOW_REF_INVALID', parsed.error);
    return this.withSpace(principal, parsed);
  }

  withSpace(principal: Principal, parsed: ParsedWorkflowRef): WorkflowAddress {
    return {
      space: parsed.space ?? principal.user,
      name: parsed.name,
      ...(parsed.version !== undefined ? { version: parsed.version } : {}),
    };
  }

  /**
   * The space, or STEWARD_SPACE_NOT_FOUND. A user's personal space is created on first use (users created
   * after the spaces migration have none until then).
   */
  async find(name: string): Promise<SpaceRecord> {
    const space = await this.store.spaces.getSpace(name);
    if (space) return space;
    if (await this.store.getUser(name)) return this.store.spaces.ensurePersonalSpace(name, Date.now());
    throw new StewardError(
      'STEWARD_SPACE_NOT_FOUND',
      `there is no space ${JSON.stringify(name)}: personal spaces are named after their user, shared spaces are created by an admin (steward space create)`,
    );
  }

  /** The caller's own role in a space (admin rights are not counted here). */
  async roleIn(principal: Principal, space: SpaceRecord): Promise<SpaceRole | null> {
    if (space.kind === 'personal') return space.owner === principal.user ? 'owner' : null;
    const members = await this.store.spaces.listMembers(space.name);
    if (members.length === 0) return null;
    const localGroups = members.some((m) => m.kind === 'group' && !isDn(m.member))
      ? new Set(await this.store.spaces.groupsOf(principal.user))
      : new Set<string>();
    const directoryGroups = new Set((principal.directoryGroups ?? []).map(normalizeDn));
    let best: SpaceRole | null = null;
    for (const member of members) {
      const matches =
        member.kind === 'user'
          ? member.member === principal.user
          : isDn(member.member)
            ? directoryGroups.has(normalizeDn(member.member))
            : localGroups.has(member.member);
      if (matches && (best === null || RANK[member.role] > RANK[best])) best = member.role;
    }
    return best;
  }

  /**
   * Checks that the caller may do `action` in the space; returns the space and the caller's role. A refused
   * change (push, delete, member management) is audited as `space.denied`: an attempt to slip code into
   * someone's space should leave a trace.
   */
  async require(principal: Principal, spaceName: string, action: SpaceAction): Promise<SpaceAccess> {
    try {
      return await this.check(principal, spaceName, action);
    } catch (error) {
      if (action !== 'view' && error instanceof StewardError && error.status === 403) {
        await this.audit.record({
          actor: principal.user,
          action: 'space.denied',
          target: spaceName,
          detail: { action, code: error.code },
        });
      }
      throw error;
    }
  }

  private async check(principal: Principal, spaceName: string, action: SpaceAction): Promise<SpaceAccess> {
    const space = await this.find(spaceName);
    const role = await this.roleIn(principal, space);
    const admin = principal.role === 'admin';
    const label = JSON.stringify(space.name);
    if (space.kind === 'personal' && space.owner !== principal.user) {
      if (action === 'view' && admin) return { space, role };
      if (action === 'view')
        throw new StewardError(
          'STEWARD_SPACE_NOT_MEMBER',
          `space ${label} is ${space.owner ?? space.name}'s personal space: only they (and admins) can see it; to share workflows, ask an admin for a shared space`,
        );
      throw new StewardError(
        'STEWARD_SPACE_PERSONAL',
        `space ${label} is ${space.owner ?? space.name}'s personal space: only ${space.owner ?? space.name} can ${describe(action)} there (admins cannot either); push into your own space or a shared space where an owner or admin made you an editor`,
      );
    }
    if (space.kind === 'personal') {
      if (action === 'manage')
        throw new StewardError(
          'STEWARD_SPACE_NOT_SHARED',
          `space ${label} is a personal space: it has no members; to share workflows, ask an admin to create a shared space`,
        );
      return { space, role };
    }
    const needed: SpaceRole = action === 'view' ? 'viewer' : action === 'manage' ? 'owner' : 'editor';
    if (role !== null && RANK[role] >= RANK[needed]) return { space, role };
    // Admins read, manage and delete in shared spaces; pushing needs a membership (see the module comment).
    if (admin && action !== 'push') return { space, role };
    if (role === null)
      throw new StewardError(
        'STEWARD_SPACE_NOT_MEMBER',
        `you are not a member of space ${label}, directly or through a group; ${describe(action)} there needs the ${needed} role, which the space's owners or an admin grant (steward space member add)`,
      );
    throw new StewardError(
      'STEWARD_SPACE_ROLE_REQUIRED',
      `you are ${role} in space ${label}; to ${describe(action)} there you need the ${needed} role, which the space's owners or an admin grant (steward space member add)`,
    );
  }

  /** Spaces the caller is in (their personal space first), or every space for an admin. */
  async visible(principal: Principal): Promise<SpaceAccess[]> {
    const own = await this.ownPersonal(principal);
    const all = await this.store.spaces.listSpaces();
    const out: SpaceAccess[] = [];
    for (const space of all) {
      const role = space.name === own.name ? 'owner' : await this.roleIn(principal, space);
      if (role !== null || principal.role === 'admin') out.push({ space, role });
    }
    return out.sort((a, b) =>
      a.space.name === own.name
        ? -1
        : b.space.name === own.name
          ? 1
          : a.space.name.localeCompare(b.space.name),
    );
  }

  /** The caller's personal space, created on first use. */
  async ownPersonal(principal: Principal): Promise<SpaceRecord> {
    const space = await this.store.spaces.ensurePersonalSpace(principal.user, Date.now());
    if (space.kind !== 'personal' || space.owner !== principal.user)
      throw new StewardError(
        'STEWARD_CONFLICT',
        `your personal space's name ${JSON.stringify(principal.user)} is taken by a shared space; an admin must delete or empty that shared space`,
      );
    return space;
  }

  // ---- management -------------------------------------------------------------------------------------

  async createShared(
    principal: Principal,
    name: string,
    description: string,
    source: string,
  ): Promise<SpaceRecord> {
    if (await this.store.getUser(name))
      throw new StewardError(
        'STEWARD_CONFLICT',
        `${JSON.stringify(name)} is a user's name, which is their personal space's name; choose another name for the shared space`,
      );
    const created = await this.store.spaces.createSharedSpace({
      name,
      description,
      createdBy: principal.user,
      time: Date.now(),
    });
    if (!created) throw new StewardError('STEWARD_CONFLICT', `space ${JSON.stringify(name)} exists already`);
    await this.audit.record({
      actor: principal.user,
      action: 'space.create',
      target: name,
      source,
      detail: { description },
    });
    return (await this.store.spaces.getSpace(name))!;
  }

  async deleteShared(principal: Principal, name: string, source: string): Promise<void> {
    const space = await this.find(name);
    if (space.kind !== 'shared')
      throw new StewardError(
        'STEWARD_SPACE_NOT_SHARED',
        `space ${JSON.stringify(name)} is a personal space; it goes with its user, not on its own`,
      );
    const workflows = await this.store.countWorkflows(name);
    if (workflows > 0)
      throw new StewardError(
        'STEWARD_SPACE_NOT_EMPTY',
        `space ${JSON.stringify(name)} still holds ${workflows} workflow${workflows === 1 ? '' : 's'}; delete them first (steward workflow delete ${name}/NAME), which its editors or an admin can do`,
      );
    await this.store.spaces.deleteSpace(name);
    await this.audit.record({ actor: principal.user, action: 'space.delete', target: name, source });
  }

  async setMember(
    principal: Principal,
    spaceName: string,
    member: { kind: MemberKind; name: string; role: SpaceRole },
    source: string,
  ): Promise<SpaceMemberRecord> {
    const { space } = await this.require(principal, spaceName, 'manage');
    await this.checkMemberExists(member.kind, member.name);
    const time = Date.now();
    const previous = await this.store.spaces.setMember({
      space: space.name,
      kind: member.kind,
      member: member.name,
      role: member.role,
      addedBy: principal.user,
      time,
    });
    await this.audit.record({
      actor: principal.user,
      action: previous === undefined ? 'space.member.add' : 'space.member.role',
      target: space.name,
      source,
      detail: {
        kind: member.kind,
        member: member.name,
        role: member.role,
        ...(previous ? { from: previous } : {}),
      },
    });
    return {
      space: space.name,
      kind: member.kind,
      member: member.name,
      role: member.role,
      addedBy: principal.user,
      addedAt: time,
    };
  }

  async removeMember(
    principal: Principal,
    spaceName: string,
    member: { kind: MemberKind; name: string },
    source: string,
  ): Promise<void> {
    const { space } = await this.require(principal, spaceName, 'manage');
    const removed = await this.store.spaces.removeMember(space.name, member.kind, member.name);
    if (!removed)
      throw new StewardError(
        'STEWARD_NOT_FOUND',
        `${member.kind} ${JSON.stringify(member.name)} is not a member of space ${JSON.stringify(space.name)}`,
      );
    await this.audit.record({
      actor: principal.user,
      action: 'space.member.remove',
      target: space.name,
      source,
      detail: { kind: member.kind, member: member.name },
    });
  }

  private async checkMemberExists(kind: MemberKind, name: string): Promise<void> {
    if (kind === 'user') {
      // Directory users appear at their first login; an admin may add them before that.
      if (!/^[a-z_][a-z0-9_.-]{0,63}$/.test(name))
        throw new StewardError('STEWARD_BAD_REQUEST', `name: ${JSON.stringify(name)} is not a user name`);
      return;
    }
    if (isDn(name)) return;
    if (!(await this.store.spaces.getGroup(name)))
      throw new StewardError(
        'STEWARD_NOT_FOUND',
        `there is no local group ${JSON.stringify(name)}; an admin creates it (steward group add), or give an LDAP group by its DN`,
      );
  }

  // ---- local groups (admins; the route checks the role) -------------------------------------------------

  async createGroup(
    principal: Principal,
    name: string,
    description: string,
    source: string,
  ): Promise<GroupRecord> {
    const created = await this.store.spaces.createGroup({
      name,
      description,
      createdBy: principal.user,
      time: Date.now(),
    });
    if (!created) throw new StewardError('STEWARD_CONFLICT', `group ${JSON.stringify(name)} exists already`);
    await this.audit.record({
      actor: principal.user,
      action: 'group.create',
      target: name,
      source,
      detail: { description },
    });
    return (await this.store.spaces.getGroup(name))!;
  }

  async addGroupMember(
    principal: Principal,
    group: string,
    user: string,
    source: string,
  ): Promise<GroupRecord> {
    await this.group(group);
    const added = await this.store.spaces.addGroupMember(group, user, principal.user, Date.now());
    if (added)
      await this.audit.record({
        actor: principal.user,
        action: 'group.member.add',
        target: group,
        source,
        detail: { user },
      });
    return this.group(group);
  }

  async removeGroupMember(
    principal: Principal,
    group: string,
    user: string,
    source: string,
  ): Promise<GroupRecord> {
    await this.group(group);
    if (!(await this.store.spaces.removeGroupMember(group, user)))
      throw new StewardError(
        'STEWARD_NOT_FOUND',
        `${user} is not a member of group ${JSON.stringify(group)}`,
      );
    await this.audit.record({
      actor: principal.user,
      action: 'group.member.remove',
      target: group,
      source,
      detail: { user },
    });
    return this.group(group);
  }

  private async group(name: string): Promise<GroupRecord> {
    const group = await this.store.spaces.getGroup(name);
    if (!group)
      throw new StewardError(
        'STEWARD_NOT_FOUND',
        `there is no local group ${JSON.stringify(name)} (steward group list)`,
      );
    return group;
  }
}

function describe(action: SpaceAction): string {
  switch (action) {
    case 'view':
      return 'see workflows';
    case 'push':
      return 'push workflows';
    case 'delete-workflow':
      return 'delete workflows';
    case 'manage':
      return 'manage members';
  }
}

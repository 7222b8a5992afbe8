/**
 * `steward space create|list|show|delete|member add|member remove` and `steward group add|list|member
 * add|member remove`. The server decides who may do what (see docs/user-guide.md, "Spaces and roles").
 */
import { Option, type Command } from 'commander';
import { SpaceName, type SpaceRole } from '../../protocol/index.js';
import { UsageError } from '../failures.js';
import { formatTable, formatTime } from '../output.js';
import { contextOf } from './shared.js';

const roles = ['viewer', 'editor', 'owner'] as const;

interface MemberOptions {
  user?: string;
  group?: string;
}

/** Exactly one of --user or --group. */
function memberOf(options: MemberOptions): { kind: 'user' | 'group'; name: string } {
  if ((options.user === undefined) === (options.group === undefined))
    throw new UsageError(
      'give exactly one of --user NAME or --group NAME (a local group, or an LDAP group DN)',
    );
  return options.user !== undefined
    ? { kind: 'user', name: options.user }
    : { kind: 'group', name: options.group ?? '' };
}

function checkSpace(space: string): string {
  if (!SpaceName.safeParse(space).success)
    throw new UsageError(
      `${JSON.stringify(space)} is not a space name (lowercase letters, digits, "_", "." or "-")`,
    );
  return space;
}

export function registerSpaceCommands(program: Command): void {
  const space = program
    .command('space')
    .description('spaces: where workflows live and who may see, run and push them');
  spaceCreate(space);
  spaceList(space);
  spaceShow(space);
  spaceDelete(space);
  spaceMemberCommands(space);
  registerGroupCommands(program);
}

/** `steward space create NAME` */
function spaceCreate(space: Command): void {
  space
    .command('create')
    .description('create a shared space (admins)')
    .argument('<name>', 'space name')
    .option('--description <text>', 'what the space is for', '')
    .action(async (name: string, options: { description: string }, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const created = await client.call('createSpace', {
        body: { name: checkSpace(name), description: options.description },
      });
      if (context.json) return context.printJson(created);
      context.out(`created space ${created.name}\n`);
      context.note(`add members with: steward space member add ${created.name} --user NAME --role editor`);
    });
}

/** `steward space list` */
function spaceList(space: Command): void {
  space
    .command('list')
    .description('spaces you are a member of, with your role (admins: every space)')
    .action(async (_options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const { spaces } = await client.call('listSpaces');
      if (context.json) return context.printJson({ spaces });
      context.out(
        formatTable(
          ['space', 'kind', 'your role', 'description'],
          spaces.map((item) => [
            item.name,
            item.kind === 'personal' ? `personal (${item.owner ?? '-'})` : 'shared',
            item.role ?? '-',
            item.description,
          ]),
        ),
      );
    });
}

/** `steward space show NAME` */
function spaceShow(space: Command): void {
  space
    .command('show')
    .description('a space with its members')
    .argument('<name>', 'space name')
    .action(async (name: string, _options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const detail = await client.call('showSpace', { params: { space: checkSpace(name) } });
      if (context.json) return context.printJson(detail);
      let text = `${detail.name}  ${detail.kind === 'personal' ? `personal space of ${detail.owner ?? '-'}` : 'shared space'}\n`;
      if (detail.description) text += `${detail.description}\n`;
      text += `created ${formatTime(detail.createdAt)} by ${detail.createdBy}; ${detail.workflows} workflow${detail.workflows === 1 ? '' : 's'}; your role: ${detail.role ?? '-'}\n`;
      if (detail.kind === 'shared') {
        text += '\nMembers:\n';
        text += detail.members.length
          ? formatTable(
              ['kind', 'name', 'role', 'added', 'by'],
              detail.members.map((m) => [m.kind, m.name, m.role, formatTime(m.addedAt), m.addedBy]),
            )
          : '(none)\n';
      }
      context.out(text);
    });
}

/** `steward space delete NAME` */
function spaceDelete(space: Command): void {
  space
    .command('delete')
    .description('delete an empty shared space (admins)')
    .argument('<name>', 'space name')
    .action(async (name: string, _options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      await client.call('deleteSpace', { params: { space: checkSpace(name) } });
      if (context.json) return context.printJson({ deleted: name });
      context.out(`deleted space ${name}\n`);
    });
}

/** `steward space member add|remove SPACE --user NAME | --group NAME`. */
function spaceMemberCommands(space: Command): void {
  const member = space.command('member').description("manage a shared space's members (its owners, admins)");
  member
    .command('add')
    .description('add a user or group to a shared space, or change its role')
    .argument('<space>', 'space name')
    .option('--user <name>', 'a user')
    .option('--group <name>', 'a local group, or an LDAP group by its DN')
    .addOption(new Option('--role <role>', 'the role').choices(roles).default('viewer'))
    .action(async (spaceName: string, options: MemberOptions & { role: SpaceRole }, command: Command) => {
      const context = contextOf(command);
      const target = memberOf(options);
      const client = await context.client();
      const added = await client.call('setSpaceMember', {
        params: { space: checkSpace(spaceName) },
        body: { ...target, role: options.role },
      });
      if (context.json) return context.printJson(added);
      context.out(`${added.kind} ${added.name} is ${added.role} in space ${spaceName}\n`);
    });
  member
    .command('remove')
    .description('remove a user or group from a shared space')
    .argument('<space>', 'space name')
    .option('--user <name>', 'a user')
    .option('--group <name>', 'a local group, or an LDAP group by its DN')
    .action(async (spaceName: string, options: MemberOptions, command: Command) => {
      const context = contextOf(command);
      const target = memberOf(options);
      const client = await context.client();
      await client.call('removeSpaceMember', { params: { space: checkSpace(spaceName) }, query: target });
      if (context.json) return context.printJson({ removed: target, space: spaceName });
      context.out(`removed ${target.kind} ${target.name} from space ${spaceName}\n`);
    });
}

function registerGroupCommands(program: Command): void {
  const group = program.command('group').description('local groups, for space memberships (admins)');
  group
    .command('add')
    .description('create a local group')
    .argument('<name>', 'group name')
    .option('--description <text>', 'what the group is', '')
    .action(async (name: string, options: { description: string }, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const created = await client.call('createGroup', {
        body: { name, description: options.description },
      });
      if (context.json) return context.printJson(created);
      context.out(`created group ${created.name}\n`);
    });
  group
    .command('list')
    .description('local groups with their members')
    .action(async (_options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const { groups } = await client.call('listGroups');
      if (context.json) return context.printJson({ groups });
      context.out(
        formatTable(
          ['group', 'members', 'description'],
          groups.map((item) => [item.name, item.members.join(', ') || '-', item.description]),
        ),
      );
    });
  const member = group.command('member').description("manage a local group's members");
  for (const action of ['add', 'remove'] as const) {
    member
      .command(action)
      .description(action === 'add' ? 'add a user to a local group' : 'remove a user from a local group')
      .argument('<group>', 'group name')
      .argument('<user>', 'user name')
      .action(async (groupName: string, user: string, _options: unknown, command: Command) => {
        const context = contextOf(command);
        const client = await context.client();
        const params = { group: groupName, user };
        const updated =
          action === 'add'
            ? await client.call('addGroupMember', { params })
            : await client.call('removeGroupMember', { params });
        if (context.json) return context.printJson(updated);
        context.out(
          `${action === 'add' ? 'added' : 'removed'} ${user} ${action === 'add' ? 'to' : 'from'} group ${updated.name}\n`,
        );
      });
  }
}

/** `steward user …` (admins; `user passwd` for everyone) and `steward whoami`. */
import { Option, type Command } from 'commander';
import { CliError, UsageError } from '../../failures.js';
import { formatTable, formatTime } from '../../output.js';
import { promptPassword, readPasswordFromStdin, readPasswordLinesFromStdin } from '../../prompt.js';
import { contextOf } from '../shared.js';

export function registerUserCommands(program: Command): void {
  const user = program
    .command('user')
    .description('manage users (admins); `user passwd` changes your own password');
  userAdd(user);
  userList(user);
  userDisable(user);
  userEnable(user);
  userRole(user);
  userDelete(user);
  userPasswd(user);
}

/** `steward user add NAME` */
function userAdd(user: Command): void {
  user
    .command('add')
    .description('create a local user')
    .argument('<name>', 'user name')
    .addOption(new Option('--role <role>', 'role').choices(['admin', 'user']).default('user'))
    .option('--password-stdin', 'read the password from stdin instead of prompting')
    .action(
      async (
        name: string,
        options: { role: 'admin' | 'user'; passwordStdin?: boolean },
        command: Command,
      ) => {
        const context = contextOf(command);
        const client = await context.client();
        const password = options.passwordStdin
          ? await readPasswordFromStdin()
          : await promptPassword(`Password for new user ${name}: `);
        if (password.length < 8) throw new UsageError('the password must have at least 8 characters');
        const created = await client.call('createUser', {
          body: { name, password, role: options.role },
        });
        if (context.json) return context.printJson(created);
        context.out(`created user ${created.name} (${created.role})\n`);
      },
    );
}

/** `steward user list` */
function userList(user: Command): void {
  user
    .command('list')
    .description('list users with their source (local or ldap)')
    .option('--deleted', 'include deleted users (their names stay retired)')
    .action(async (options: { deleted?: boolean }, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const { users } = await client.call('listUsers', {
        query: options.deleted ? { deleted: 'true' } : {},
      });
      if (context.json) return context.printJson({ users });
      context.out(
        formatTable(
          ['name', 'role', 'source', 'created', 'state'],
          users.map((item) => [
            item.name,
            item.role,
            item.source,
            formatTime(item.createdAt),
            item.deletedAt ? `deleted ${formatTime(item.deletedAt)}` : item.disabled ? 'disabled' : 'enabled',
          ]),
        ),
      );
    });
}

/** `steward user disable NAME` */
function userDisable(user: Command): void {
  user
    .command('disable')
    .description(
      "disable a user: blocks login, revokes all the user's tokens at once, cancels the user's queued and running jobs",
    )
    .argument('<name>', 'user name')
    .action(async (name: string, _options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const result = await client.call('disableUser', { params: { name } });
      if (context.json) return context.printJson(result);
      const jobs = result.canceledJobs.length;
      context.out(
        `disabled user ${result.name}: tokens revoked${jobs > 0 ? `, ${jobs} job(s) canceled: ${result.canceledJobs.join(' ')}` : ', no jobs to cancel'}\n`,
      );
    });
}

/** `steward user enable NAME` */
function userEnable(user: Command): void {
  user
    .command('enable')
    .description('enable a disabled user (who logs in again: revoked tokens stay revoked)')
    .argument('<name>', 'user name')
    .action(async (name: string, _options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const result = await client.call('enableUser', { params: { name } });
      if (context.json) return context.printJson(result);
      context.out(`enabled user ${result.name}\n`);
    });
}

/** `steward user role NAME ROLE` */
function userRole(user: Command): void {
  user
    .command('role')
    .description("set a local user's role (an LDAP user's role follows the directory's admin group)")
    .argument('<name>', 'user name')
    .argument('<role>', 'admin or user')
    .action(async (name: string, role: string, _options: unknown, command: Command) => {
      if (role !== 'admin' && role !== 'user')
        throw new UsageError(`user role: expected "admin" or "user", got ${JSON.stringify(role)}`);
      const context = contextOf(command);
      const client = await context.client();
      const result = await client.call('setUserRole', { params: { name }, body: { role } });
      if (context.json) return context.printJson(result);
      context.out(`user ${result.name} is now ${result.role}\n`);
    });
}

/** `steward user delete NAME` */
function userDelete(user: Command): void {
  user
    .command('delete')
    .description(
      'delete a user: refused while it has jobs not ended (disable it first); its past jobs and audit entries stay, and its name cannot be used again',
    )
    .argument('<name>', 'user name')
    .action(async (name: string, _options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      await client.call('deleteUser', { params: { name } });
      if (context.json) return context.printJson({ name, deleted: true });
      context.out(`deleted user ${name}\n`);
    });
}

/** `steward user passwd [NAME]` */
function userPasswd(user: Command): void {
  user
    .command('passwd')
    .description(
      "change your own password (asks for the current one), or as an admin reset another user's; ends that user's other login sessions",
    )
    .argument('[name]', 'whose password (default: yours)')
    .option(
      '--password-stdin',
      'read from stdin instead of prompting: for your own, the current password on the first line and the new one on the second; for a reset, the new one',
    )
    .action(async (name: string | undefined, options: { passwordStdin?: boolean }, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const me = await client.call('me');
      const target = name ?? me.user;
      const own = target === me.user;
      // Say it before asking for passwords (the server refuses it anyway).
      if (own && me.source === 'ldap')
        throw new CliError(
          'STEWARD_USER_IN_DIRECTORY',
          `${me.user} is an LDAP user: its password is the directory's; change it with the directory's own tools (or ask its administrators)`,
        );
      let currentPassword: string | undefined;
      let password: string;
      if (options.passwordStdin) {
        const lines = await readPasswordLinesFromStdin(own ? 2 : 1);
        if (own) currentPassword = lines[0];
        password = lines[own ? 1 : 0]!;
      } else {
        if (own) currentPassword = await promptPassword('Current password: ');
        password = await promptPassword(own ? 'New password: ' : `New password for ${target}: `);
        const again = await promptPassword('Again: ');
        if (again !== password) throw new UsageError('the two new passwords differ; nothing changed');
      }
      if (password.length < 8) throw new UsageError('the password must have at least 8 characters');
      await client.call('setUserPassword', {
        params: { name: target },
        body: { password, ...(currentPassword === undefined ? {} : { currentPassword }) },
      });
      if (context.json) return context.printJson({ user: target, changed: true });
      context.out(
        own
          ? 'password changed; your other login sessions were ended\n'
          : `password of ${target} reset; its login sessions were ended\n`,
      );
    });
}

/** `steward whoami`: who the server says you are. */
export function registerWhoamiCommand(program: Command): void {
  program
    .command('whoami')
    .description('who the server says you are: user, role, source (local or ldap) and the token in use')
    .action(async (_options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const me = await client.call('me');
      if (context.json) return context.printJson({ server: client.server, ...me });
      const token = me.token
        ? `; ${me.token.kind === 'login' ? 'login session' : `API token ${me.token.name}`} ${me.token.id}, ${me.token.expiresAt ? `expires ${formatTime(me.token.expiresAt)}` : 'does not expire'}`
        : '';
      context.out(
        `${me.user} (${me.role}${me.source ? `, ${me.source}` : ''}) at ${client.server}${token}\n`,
      );
    });
}

/** `steward user`, `steward token`, `steward whoami`, `steward agents` (and `agents drain|resume`). */
import type { Command } from 'commander';
import { Option } from 'commander';
import { formatBytes, formatElapsed, formatTable, formatTime } from '../output.js';
import { promptPassword, readPasswordFromStdin, readPasswordLinesFromStdin } from '../prompt.js';
import { CliError, UsageError } from '../failures.js';
import { contextOf, positiveInteger } from './shared.js';

export function registerAdminCommands(program: Command): void {
  const user = program
    .command('user')
    .description('manage users (admins); `user passwd` changes your own password');
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

  const token = program.command('token').description('manage your API tokens');
  token
    .command('create')
    .description('create a named API token; it is printed once and cannot be shown again')
    .argument('<name>', 'token name')
    .option('--days <n>', 'lifetime in days (default: no expiry)', positiveInteger('--days', 3650))
    .action(async (name: string, options: { days?: number }, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const created = await client.call('createToken', {
        body: { name, ...(options.days === undefined ? {} : { expiresInDays: options.days }) },
      });
      if (context.json) return context.printJson(created);
      context.out(`${created.token}\n`);
      context.note(
        `token ${created.name} (${created.id}) ${created.expiresAt ? `expires ${formatTime(created.expiresAt)}` : 'does not expire'}; it is shown only this once`,
      );
    });
  token
    .command('list')
    .description('list your tokens (without their secrets)')
    .option('--user <name>', "admins: another user's tokens")
    .action(async (options: { user?: string }, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const { tokens } = await client.call('listTokens', {
        query: options.user === undefined ? {} : { user: options.user },
      });
      if (context.json) return context.printJson({ tokens });
      context.out(
        formatTable(
          ['id', 'name', 'created', 'expires', 'last used'],
          tokens.map((item) => [
            item.id,
            item.name,
            formatTime(item.createdAt),
            item.expiresAt ? formatTime(item.expiresAt) : 'never',
            formatTime(item.lastUsedAt),
          ]),
        ),
      );
    });

  token
    .command('revoke')
    .description(
      "revoke a token by id (see `token list`); admins may revoke anyone's. The next request with it is refused",
    )
    .argument('<id>', 'token id')
    .action(async (id: string, _options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      await client.call('revokeToken', { params: { id } });
      if (context.json) return context.printJson({ id, revoked: true });
      context.out(`revoked token ${id}\n`);
    });

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

  const agents = program
    .command('agents')
    .description('live agents and their executors; `agents drain|resume <id>` to take one out of service')
    .action(async (_options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const { agents } = await client.call('listAgents');
      if (context.json) return context.printJson({ agents });
      context.out(
        formatTable(
          ['id', 'state', 'labels', 'isolation', 'free/slots', 'executors', 'last seen'],
          agents.map((agent) => [
            agent.id,
            agent.state ?? (agent.draining ? 'draining' : 'active'),
            agent.labels.join(','),
            agent.isolation,
            `${agent.capacity.free}/${agent.capacity.slots}`,
            agent.executors
              .map(
                (executor) =>
                  `${executor.user}(pid ${executor.pid}, ${executor.jobs} jobs${executor.rssBytes === null ? '' : `, ${formatBytes(executor.rssBytes)}`}${executor.idleSinceMs === null ? '' : `, idle ${formatElapsed(Date.now() - executor.idleSinceMs)}`})`,
              )
              .join(' ') || '-',
            formatTime(agent.lastSeen),
          ]),
        ),
      );
    });

  agents
    .command('drain')
    .description(
      'stop an agent taking new jobs (for maintenance); its running jobs finish. With --wait, return once it has none',
    )
    .argument('<id>', 'agent id (see `steward agents`)')
    .option('--wait', 'wait until the agent reports being drained with no jobs left')
    .option(
      '--timeout <seconds>',
      'with --wait: give up (exit 1) after this long',
      positiveInteger('--timeout', 7 * 86_400),
    )
    .action(async (id: string, options: { wait?: boolean; timeout?: number }, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      await client.call('drainAgent', { params: { id } });
      if (!options.wait) {
        if (context.json) return context.printJson({ id, action: 'drain' });
        context.out(`drain sent to agent ${id}: it takes no new jobs; its running jobs finish\n`);
        return;
      }
      const deadline = options.timeout === undefined ? Infinity : Date.now() + options.timeout * 1000;
      for (;;) {
        const { agents: live } = await client.call('listAgents');
        const agent = live.find((candidate) => candidate.id === id);
        const running = agent ? agent.capacity.slots - agent.capacity.free : undefined;
        if (agent?.draining && running === 0) {
          if (context.json) return context.printJson({ agent });
          context.out(`agent ${id} is drained: no jobs left\n`);
          return;
        }
        if (Date.now() >= deadline)
          throw new CliError(
            'STEWARD_UNAVAILABLE',
            agent?.draining
              ? `agent ${id} still has ${running} job(s) after ${options.timeout}s`
              : `agent ${id} has not reported the drain within ${options.timeout}s (is it running?)`,
          );
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    });

  agents
    .command('resume')
    .description('let a drained agent take jobs again')
    .argument('<id>', 'agent id')
    .action(async (id: string, _options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      await client.call('resumeAgent', { params: { id } });
      if (context.json) return context.printJson({ id, action: 'resume' });
      context.out(`resume sent to agent ${id}\n`);
    });
}

/** `steward user`, `steward token`, `steward agents` (and `agents drain|resume`). */
import type { Command } from 'commander';
import { Option } from 'commander';
import { z } from 'zod';
import { AgentInfo, CreateTokenResponse, TokenInfo, User } from '../../protocol/index.js';
import { formatBytes, formatDuration, formatTable, formatTime } from '../output.js';
import { promptPassword, readPasswordFromStdin } from '../prompt.js';
import { CliError, UsageError } from '../failures.js';
import { contextOf, positiveInteger } from './shared.js';

const AgentList = z.object({ agents: z.array(AgentInfo) });
const AgentControl = z.object({ id: z.string(), action: z.enum(['drain', 'resume']) });

export function registerAdminCommands(program: Command): void {
  const user = program.command('user').description('manage local users (admins)');
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
        const created = await client.json('POST', '/api/users', User, {
          body: { name, password, role: options.role },
        });
        if (context.json) return context.printJson(created);
        context.out(`created user ${created.name} (${created.role})\n`);
      },
    );
  user
    .command('list')
    .description('list users')
    .action(async (_options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const { users } = await client.json('GET', '/api/users', z.object({ users: z.array(User) }));
      if (context.json) return context.printJson({ users });
      context.out(
        formatTable(
          ['name', 'role', 'created', 'disabled'],
          users.map((item) => [
            item.name,
            item.role,
            formatTime(item.createdAt),
            item.disabled ? 'yes' : 'no',
          ]),
        ),
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
      const created = await client.json('POST', '/api/tokens', CreateTokenResponse, {
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
    .action(async (_options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const { tokens } = await client.json('GET', '/api/tokens', z.object({ tokens: z.array(TokenInfo) }));
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

  const agents = program
    .command('agents')
    .description('live agents and their executors; `agents drain|resume <id>` to take one out of service')
    .action(async (_options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const { agents } = await client.json('GET', '/api/agents', AgentList);
      if (context.json) return context.printJson({ agents });
      context.out(
        formatTable(
          ['id', 'state', 'labels', 'isolation', 'free/slots', 'executors', 'last seen'],
          agents.map((agent) => [
            agent.id,
            agent.draining ? 'draining' : 'active',
            agent.labels.join(','),
            agent.isolation,
            `${agent.capacity.free}/${agent.capacity.slots}`,
            agent.executors
              .map(
                (executor) =>
                  `${executor.user}(pid ${executor.pid}, ${executor.jobs} jobs${executor.rssBytes === null ? '' : `, ${formatBytes(executor.rssBytes)}`}${executor.idleSinceMs === null ? '' : `, idle ${formatDuration(executor.idleSinceMs)}`})`,
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
      await client.json('POST', `/api/agents/${encodeURIComponent(id)}/drain`, AgentControl);
      if (!options.wait) {
        if (context.json) return context.printJson({ id, action: 'drain' });
        context.out(`drain sent to agent ${id}: it takes no new jobs; its running jobs finish\n`);
        return;
      }
      const deadline = options.timeout === undefined ? Infinity : Date.now() + options.timeout * 1000;
      for (;;) {
        const { agents: live } = await client.json('GET', '/api/agents', AgentList);
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
      await client.json('POST', `/api/agents/${encodeURIComponent(id)}/resume`, AgentControl);
      if (context.json) return context.printJson({ id, action: 'resume' });
      context.out(`resume sent to agent ${id}\n`);
    });
}

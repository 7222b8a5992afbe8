/** `steward token create|list|revoke`: a user's named API tokens. */
import type { Command } from 'commander';
import { formatTable, formatTime } from '../../output.js';
import { contextOf, positiveInteger } from '../shared.js';

export function registerTokenCommands(program: Command): void {
  const token = program.command('token').description('manage your API tokens');
  tokenCreate(token);
  tokenList(token);
  tokenRevoke(token);
}

/** `steward token create NAME` */
function tokenCreate(token: Command): void {
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
}

/** `steward token list` */
function tokenList(token: Command): void {
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
}

/** `steward token revoke ID` */
function tokenRevoke(token: Command): void {
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
}

/** `steward login` and `steward logout`: the only commands that touch the credentials file. */
import type { Command } from 'commander';
import { ApiClient } from '../client.js';
import { credentialsPath, readCredentials, writeCredentials } from '../credentials.js';
import { UsageError } from '../failures.js';
import { formatTime } from '../output.js';
import { promptPassword, readPasswordFromStdin } from '../prompt.js';
import { contextOf } from './shared.js';

export function registerAuthCommands(program: Command): void {
  program
    .command('login')
    .description('log in to a server and remember the token (in $XDG_CONFIG_HOME/steward/credentials.json)')
    .requiredOption('--user <name>', 'user name')
    .option('--password-stdin', 'read the password from stdin instead of prompting')
    .addHelpText(
      'after',
      '\nThe server comes from --server (or STEWARD_SERVER). Example:\n  steward login --server http://127.0.0.1:8080 --user alice',
    )
    .action(async (options: { user: string; passwordStdin?: boolean }, command: Command) => {
      const context = contextOf(command);
      const server = context.explicitServer() ?? (await readCredentials(context.env)).current;
      if (server === null) throw new UsageError('login: --server URL is required (or set STEWARD_SERVER)');
      const password = options.passwordStdin
        ? await readPasswordFromStdin()
        : await promptPassword(`Password for ${options.user} at ${server}: `);
      const client = new ApiClient({ server, token: null, debug: context.debug });
      const login = await client.call('login', {
        body: { user: options.user, password },
        anonymous: true,
      });
      const credentials = await readCredentials(context.env);
      credentials.servers[server] = { server, user: login.user, token: login.token };
      credentials.current = server;
      const file = await writeCredentials(credentials, context.env);
      if (context.json) {
        context.printJson({
          server,
          user: login.user,
          role: login.role,
          expiresAt: login.expiresAt,
          credentialsFile: file,
        });
        return;
      }
      const expiry = login.expiresAt ? `, token expires ${formatTime(login.expiresAt)}` : '';
      context.out(`logged in to ${server} as ${login.user} (${login.role}${expiry})\n`);
    });

  program
    .command('logout')
    .description('forget the stored token for a server (default: the current one)')
    .action(async (_options: unknown, command: Command) => {
      const context = contextOf(command);
      const credentials = await readCredentials(context.env);
      const server = context.explicitServer() ?? credentials.current;
      const known = server !== null && server in credentials.servers;
      if (server !== null) {
        delete credentials.servers[server];
        if (credentials.current === server) credentials.current = Object.keys(credentials.servers)[0] ?? null;
        if (known) await writeCredentials(credentials, context.env);
      }
      if (context.json) {
        context.printJson({ server, loggedOut: known, credentialsFile: credentialsPath(context.env) });
        return;
      }
      context.out(known ? `logged out of ${server}\n` : `not logged in${server ? ` to ${server}` : ''}\n`);
    });
}

/**
 * `steward up`, `server`, `agent`: parse options and hand over to the long-running entry points.
 * daemon.js pulls in the server and agent, so it is loaded only when one of these commands runs: the
 * client commands stay quick to start and do not depend on server code.
 */
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import type { GlobalOptions } from '../context.js';
import { UsageError } from '../failures.js';

interface ServeOptions {
  host?: string;
  port?: number;
  dataDir?: string;
  config?: string;
}

export function registerDaemonCommands(program: Command): void {
  const serve = (name: string, description: string, entry: 'runUp' | 'runServer'): void => {
    program
      .command(name)
      .description(description)
      .option('--host <host>', 'interface to listen on (default 127.0.0.1)')
      .option('--port <port>', 'TCP port (default 8080)', parsePort)
      .option('--data-dir <dir>', 'where the store, results and keys live (default ./.steward)')
      .option('--config <file>', 'configuration file (YAML)')
      .action(async (options: ServeOptions, command: Command) => {
        const { debug } = command.optsWithGlobals<GlobalOptions>();
        const daemon = await import('../daemon.js');
        await daemon[entry]({ ...options, debug: debug === true });
      });
  };
  serve('up', 'run a single-machine installation: server, embedded bus and a local agent', 'runUp');
  serve('server', 'run the server only', 'runServer');

  registerCleanupCommand(program);

  program
    .command('agent')
    .description('run an agent on this executor machine (as root)')
    .option('--config <file>', 'configuration file (YAML)')
    .option('--data-dir <dir>', 'where the agent keeps its state and logs')
    .action(async (options: { config?: string; dataDir?: string }, command: Command) => {
      const { debug } = command.optsWithGlobals<GlobalOptions>();
      const { runAgent } = await import('../daemon.js');
      await runAgent({ ...options, debug: debug === true });
    });
}

export function registerCleanupCommand(program: Command): void {
  program
    .command('cleanup')
    .description(
      "delete old job directories and temp files from users' workspaces (as root); with --server, run the server's retention sweep (admins)",
    )
    .option('--config <file>', 'configuration file (YAML); its agent section gives the workspace root')
    .option(
      '--data-dir <dir>',
      'data dir (default ./.steward); the workspace root defaults to <dataDir>/workspaces',
    )
    .option('--older-than <duration>', 'delete what was last modified longer ago than this', '7d')
    .option('--dry-run', 'only list what would be deleted')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      '\nWith the global --server [URL] it cleans up the server instead: the retention sweep of\nserver.retention runs now (`steward cleanup --server`) or lists what it would remove\n(`steward cleanup --server --dry-run`). Admins only; audited.',
    )
    .action(
      async (
        options: {
          config?: string;
          dataDir?: string;
          olderThan: string;
          dryRun?: boolean;
          json?: boolean;
        },
        command: Command,
      ) => {
        if (command.optsWithGlobals<{ server?: string | true }>().server !== undefined) {
          if (options.config !== undefined || options.dataDir !== undefined)
            throw new UsageError(
              'cleanup --server cleans up the server through its API: --config and --data-dir are for the local cleanup',
            );
          const { runServerCleanup } = await import('./retention.js');
          process.exitCode = await runServerCleanup(command, options.dryRun === true);
          return;
        }
        const { runCleanupCommand } = await import('../daemon.js');
        process.exitCode = await runCleanupCommand(options);
      },
    );
}

function parsePort(value: string): number {
  if (!/^[0-9]{1,5}$/.test(value) || Number(value) > 65535) {
    throw new InvalidArgumentError(
      `--port: expected a port number from 0 to 65535, got ${JSON.stringify(value)}`,
    );
  }
  return Number(value);
}

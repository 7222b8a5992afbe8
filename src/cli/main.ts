/**
 * The `steward` command. bin/steward.js imports this module, which runs the command line at once.
 *
 * Shape: one commander program with the global options (`--server`, `--json`, `--debug`); each group of
 * commands registers itself from `commands/*.ts`. Actions are thin: resolve a `CliContext` (options, server,
 * token), call the REST API through `ApiClient`, print a table or `--json`. Every failure ends up in
 * `reportFailure`: one line `steward: CODE: message` on stderr, exit 2 for usage errors and 1 otherwise.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { registerAdminCommands } from './commands/admin.js';
import { registerAuditCommands } from './commands/audit.js';
import { registerRerunCommand } from './commands/rerun.js';
import { registerAuthCommands } from './commands/auth.js';
import { registerClusterCommands } from './commands/cluster.js';
import { registerDaemonCommands } from './commands/daemons.js';
import { registerDoctorCommand } from './commands/doctor.js';
import { registerJobCommands } from './commands/jobs.js';
import { registerNotifyCommands } from './commands/notify.js';
import { registerResultCommands } from './commands/results.js';
import { registerRetentionCommands } from './commands/retention.js';
import { registerScheduleCommands } from './commands/schedule.js';
import { registerSpaceCommands } from './commands/spaces.js';
import { registerWorkflowCommands } from './commands/workflows.js';
import { UsageError, exitCodes, reportFailure } from './failures.js';
import { stripControl } from './output.js';

export function buildProgram(options: { json?: boolean } = {}): Command {
  const program = new Command('steward');
  // Settings that subcommands inherit must be set before the subcommands are added.
  program
    .exitOverride()
    .configureOutput({
      // With --json a usage error is reported as JSON by `main`, not as commander's text.
      outputError: (text, write) => {
        if (!options.json) write(`steward: ${text.replace(/^error: /, '')}`);
      },
    })
    .showSuggestionAfterError(true)
    .description('Steward: run workflows on a Steward server as your own OS account')
    .version(packageVersion(), '-V, --version')
    // The URL is optional only so that `steward cleanup --server` (the server's retention sweep) parses;
    // every command that talks to a server refuses a bare --server (see CliContext.explicitServer).
    .option(
      '--server [url]',
      'server URL (default: $STEWARD_SERVER, else the server of the last `steward login`)',
    )
    .option('--json', 'machine-readable output')
    .option('--debug', 'show HTTP requests and stack traces')
    .addHelpText(
      'after',
      '\nEnvironment:\n  STEWARD_SERVER  server URL (overrides the stored login)\n  STEWARD_TOKEN   API token (overrides the stored login)\n  XDG_CONFIG_HOME credentials live in $XDG_CONFIG_HOME/steward/credentials.json (default ~/.config)',
    );
  registerAuthCommands(program);
  registerWorkflowCommands(program);
  registerSpaceCommands(program);
  registerJobCommands(program);
  registerRerunCommand(program);
  registerScheduleCommands(program);
  registerResultCommands(program);
  registerNotifyCommands(program);
  registerRetentionCommands(program);
  registerAdminCommands(program);
  registerAuditCommands(program);
  registerClusterCommands(program);
  registerDaemonCommands(program);
  registerDoctorCommand(program);
  return program;
}

/** Runs one command line and returns the exit status (it never throws). */
export async function main(argv: readonly string[]): Promise<number> {
  const debug = argv.includes('--debug');
  const json = argv.includes('--json');
  const program = buildProgram({ json });
  try {
    await program.parseAsync([...argv]);
  } catch (error) {
    if (error instanceof CommanderError) {
      // Commander has already printed its message (help, version, or a usage error), unless --json.
      if (error.exitCode === 0) return exitCodes.ok;
      if (!json) return exitCodes.usage;
      return reportFailure(
        new UsageError(error.message.replace(/^error: /, '')),
        debug,
        (text) => process.stderr.write(text),
        true,
      );
    }
    // Error messages carry server-provided text (names, job errors): no terminal control reaches the screen
    // (JSON escapes control characters itself).
    return json
      ? reportFailure(error, debug, (text) => process.stderr.write(text), true)
      : reportFailure(error, debug, (text) => process.stderr.write(stripControl(text)));
  }
  return typeof process.exitCode === 'number' ? process.exitCode : exitCodes.ok;
}

function packageVersion(): string {
  try {
    const text = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
    return (JSON.parse(text) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

// `steward jobs | head` closes stdout early: that is not an error worth a stack trace.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw error;
});

process.exitCode = await main(process.argv);

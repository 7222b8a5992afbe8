/**
 * `steward doctor`: checks this machine's preconditions for its role (from the config file) and prints the
 * PASS/WARN/FAIL table, or the CheckReport with `--json`. Exit 1 when a check failed, 0 otherwise (warnings
 * included). The doctor and daemon modules pull in the server and agent: loaded only when this runs.
 */
import type { Command } from 'commander';
import { formatCheckTable } from '../checks-table.js';
import { contextOf } from './shared.js';

interface DoctorOptions {
  config?: string;
  dataDir?: string;
  user?: string;
}

export function registerDoctorCommand(program: Command): void {
  program
    .command('doctor')
    .description("check this machine's preconditions for its role (agent, server, or both with `up`)")
    .option('--config <file>', 'the configuration file the daemon runs with (YAML); it decides the role')
    .option('--data-dir <dir>', 'the data dir the daemon runs with')
    .option('--user <name>', 'an OS user this machine must resolve (NSS) to run jobs as')
    .addHelpText(
      'after',
      '\nRole: an "agent" section alone checks an agent machine; a "server" section with a RabbitMQ bus\nalone checks a server machine; anything else checks both, as `steward up` runs them.\nExit status: 1 when any check failed, 0 otherwise (warnings included).',
    )
    .action(async (options: DoctorOptions, command: Command) => {
      const context = contextOf(command);
      const { loadFileConfig } = await import('../daemon.js');
      const { doctor } = await import('../../doctor/index.js');
      const file = loadFileConfig(options.config);
      const { role, report } = await doctor({ file, dataDir: options.dataDir, user: options.user });
      if (context.json) context.out(`${JSON.stringify({ role, ...report }, null, 2)}\n`);
      else context.out(`steward doctor: checks for ${describeRole(role)}\n\n${formatCheckTable(report)}`);
      process.exitCode = report.ok ? 0 : 1;
    });
}

function describeRole(role: 'agent' | 'server' | 'up'): string {
  if (role === 'agent') return 'an agent machine (steward agent)';
  if (role === 'server') return 'a server machine (steward server)';
  return 'a single machine (steward up: server and agent)';
}

/** `steward audit`: the audit log (admins), newest first, filtered and paged. */
import type { Command } from 'commander';
import { formatTable, formatTime } from '../output.js';
import { contextOf, positiveInteger } from './shared.js';

interface AuditOptions {
  actor?: string;
  action?: string;
  target?: string;
  since?: string;
  until?: string;
  before?: number;
  limit?: number;
}

export function registerAuditCommands(program: Command): void {
  program
    .command('audit')
    .description('show the audit log (admins), newest first')
    .option('--actor <name>', 'only entries of this actor')
    .option('--action <action>', 'only this action (login, job.submit, csrf.refused, …)')
    .option('--target <target>', 'only entries about this target (a job id, a user name, …)')
    .option('--since <time>', 'only entries at or after this time (2026-01-31 or 2026-01-31T12:00:00Z)')
    .option('--until <time>', 'only entries before this time')
    .option(
      '--before <cursor>',
      'the next page: the cursor the previous page printed',
      positiveInteger('--before'),
    )
    .option('--limit <n>', 'at most this many (default 100)', positiveInteger('--limit', 1000))
    .action(async (options: AuditOptions, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const { entries, next } = await client.call('listAudit', {
        query: { ...options },
      });
      if (context.json) return context.printJson({ entries, next });
      context.out(
        formatTable(
          ['time', 'actor', 'action', 'target', 'source'],
          entries.map((entry) => [
            formatTime(entry.time),
            entry.actor,
            entry.action,
            entry.target ?? '',
            entry.source ?? '',
          ]),
        ),
      );
      if (next !== null) context.note(`more: steward audit --before ${next} (with the same filters)`);
    });
}

/**
 * `steward pin JOB`, `steward unpin JOB`, and the server half of `steward cleanup`: `--server` runs the
 * server's retention sweep now (admins), `--server --dry-run` lists what it would remove.
 */
import type { Command } from 'commander';
import { CliContext, type GlobalOptions } from '../context.js';
import { formatTable, formatTime } from '../output.js';
import { contextOf } from './shared.js';

export function registerRetentionCommands(program: Command): void {
  for (const pinned of [true, false]) {
    program
      .command(pinned ? 'pin' : 'unpin')
      .description(
        pinned
          ? 'keep a job (its results, logs and record) whatever the retention settings (owner or admin)'
          : 'let retention remove a job again (owner or admin)',
      )
      .argument('<job>', 'job id')
      .action(async (job: string, _options: unknown, command: Command) => {
        const context = contextOf(command);
        const client = await context.client();
        const result = await client.call(pinned ? 'pinJob' : 'unpinJob', { params: { id: job } });
        if (context.json) return context.printJson(result);
        context.out(
          `${result.pinned ? 'pinned' : 'unpinned'} ${result.id}` +
            (result.filesPurgedAt === null
              ? '\n'
              : ` (its files were already removed by retention at ${formatTime(result.filesPurgedAt)})\n`),
        );
      });
  }
}

/**
 * `steward cleanup --server [URL] [--dry-run]`: the server's retention sweep through the REST API. A bare
 * `--server` means the server of the stored login (or STEWARD_SERVER).
 */
export async function runServerCleanup(command: Command, dryRun: boolean): Promise<number> {
  const globals = command.optsWithGlobals<GlobalOptions>();
  const context = new CliContext(globals.server === true ? { ...globals, server: undefined } : globals);
  const client = await context.client();
  const report = await client.call('retentionSweep', { body: { dryRun } });
  if (context.json) {
    context.printJson(report);
    return 0;
  }
  if (!report.ran) {
    context.out('another server is sweeping right now; nothing done (try again in a moment)\n');
    return 0;
  }
  const what = (noun: string): string => `${dryRun ? 'would remove' : 'removed'} ${noun}`;
  const rows = [
    ...report.files.map((job) => ({ what: what('files'), job })),
    ...report.records.map((job) => ({ what: what('record'), job })),
  ];
  if (rows.length > 0)
    context.out(
      formatTable(
        ['WHAT', 'JOB', 'USER', 'SPACE', 'ENDED'],
        rows.map(({ what, job }) => [what, job.id, job.user, job.space, formatTime(job.finishedAt)]),
      ),
    );
  const verb = dryRun ? 'would remove' : 'removed';
  context.out(
    `${verb} the files (results, logs, inputs) of ${report.files.length} job(s) and ${report.records.length} job record(s)` +
      (report.truncated ? '; more remain for the next sweep' : '') +
      (dryRun ? ' (dry run: nothing removed)' : '') +
      '\n',
  );
  return 0;
}

/** `steward rerun`: run a job again with its pinned workflow version and params, as you. */
import type { Command } from 'commander';
import { waitAndReport } from './jobs.js';
import { contextOf } from './shared.js';

export function registerRerunCommand(program: Command): void {
  program
    .command('rerun')
    .description(
      'run a job again: the same workflow version and params, as you, with your rights now; with --wait, follow it',
    )
    .argument('<id>', 'the job to run again')
    .option('--wait', 'follow the new job; exit 0 only if it succeeds')
    .action(async (id: string, options: { wait?: boolean }, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const job = await client.call('rerunJob', { params: { id } });
      if (!options.wait) {
        if (context.json) return context.printJson(job);
        context.out(`${job.id}\n`);
        return;
      }
      if (!context.json) context.note(`submitted job ${job.id} (a rerun of ${id})`);
      await waitAndReport(context, client, job.id);
    });
}

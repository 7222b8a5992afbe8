/**
 * `steward schedule add|list|show|pause|resume|delete`: workflows run as you on a cron expression in a time
 * zone. A schedule is named by its id or by its name (among your own schedules).
 */
import { Option, type Command } from 'commander';
import type { ScheduleInfo } from '../../protocol/index.js';
import { formatTable, formatTime } from '../output.js';
import { collect, contextOf, positiveInteger } from './shared.js';
import { collectParam } from './jobs.js';
import { parseWorkflowRef } from './workflows.js';

interface AddOptions {
  cron: string;
  tz: string;
  param: Record<string, string>;
  label?: string[];
  misfire: 'catch-up' | 'skip';
  overlap: 'skip' | 'queue' | 'allow';
}

function stateOf(schedule: ScheduleInfo): string {
  return schedule.paused ? 'paused' : schedule.nextRuns.length ? 'active' : 'ended';
}

function describe(schedule: ScheduleInfo): string {
  const lines = [
    `${schedule.name}  (${schedule.id})  ${stateOf(schedule)}`,
    `owner:     ${schedule.owner}`,
    `workflow:  ${schedule.workflow}`,
    `cron:      ${schedule.cron}  (${schedule.timeZone})`,
    `policies:  misfire ${schedule.misfire}, overlap ${schedule.overlap}`,
  ];
  const params = Object.entries(schedule.params);
  if (params.length)
    lines.push(`params:    ${params.map(([key, value]) => `${key}=${String(value)}`).join(' ')}`);
  if (schedule.labels.length) lines.push(`labels:    ${schedule.labels.join(' ')}`);
  if (schedule.pausedReason) lines.push(`paused:    ${schedule.pausedReason}`);
  if (schedule.queuedRun)
    lines.push(`held run:  ${formatTime(schedule.queuedRun)} (waits for the running job)`);
  lines.push(
    `last run:  ${schedule.lastFiredAt ? `${formatTime(schedule.lastFiredAt)} job ${schedule.lastJobId ?? '-'}` : '-'}`,
  );
  if (schedule.lastError) lines.push(`last error: ${schedule.lastError.code}: ${schedule.lastError.message}`);
  lines.push('next runs:');
  for (const run of schedule.nextRuns) lines.push(`  ${formatTime(run)}`);
  if (!schedule.nextRuns.length) lines.push('  (none)');
  return `${lines.join('\n')}\n`;
}

export function registerScheduleCommands(program: Command): void {
  const schedule = program
    .command('schedule')
    .description('run a workflow as you on a cron expression in a time zone');
  registerAdd(schedule);
  registerListAndShow(schedule);
  registerChanges(schedule);
}

function registerAdd(schedule: Command): void {
  schedule
    .command('add')
    .description('create a schedule')
    .argument('<name>', 'a name for it, unique among your schedules')
    .argument('<workflow>', '[SPACE/]NAME[@VERSION]; without a version, the latest at each run')
    .requiredOption(
      '--cron <expression>',
      'five fields (minute hour day month weekday), or six with seconds first; e.g. "0 2 * * 1-5"',
    )
    .option('--tz <zone>', 'IANA time zone the expression is read in (e.g. Europe/Berlin)', 'UTC')
    .option('-p, --param <key=value>', 'a fixed parameter value (repeatable)', collectParam, {})
    .option('--label <label>', 'run only on agents with this label (repeatable)', collect)
    .addOption(
      new Option('--misfire <policy>', 'after downtime: fire the missed run once, or skip it')
        .choices(['catch-up', 'skip'])
        .default('catch-up'),
    )
    .addOption(
      new Option('--overlap <policy>', 'while its previous job still runs: skip, queue (one) or allow')
        .choices(['skip', 'queue', 'allow'])
        .default('skip'),
    )
    .action(async (name: string, ref: string, options: AddOptions, command: Command) => {
      const context = contextOf(command);
      parseWorkflowRef(ref);
      const client = await context.client();
      const created = await client.call('createSchedule', {
        body: {
          name,
          workflow: ref,
          params: options.param,
          labels: options.label ?? [],
          cron: options.cron,
          timeZone: options.tz,
          misfire: options.misfire,
          overlap: options.overlap,
        },
      });
      if (context.json) return context.printJson(created);
      context.out(describe(created));
    });
}

function registerListAndShow(schedule: Command): void {
  schedule
    .command('list')
    .description('your schedules with their next run (admins: --all for everyone)')
    .option('--all', "every user's schedules (admins)")
    .action(async (options: { all?: boolean }, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const { schedules } = await client.call('listSchedules', {
        query: { ...(options.all ? { all: 'true' as const } : {}), runs: 1 },
      });
      if (context.json) return context.printJson({ schedules });
      context.out(
        formatTable(
          ['name', 'id', 'owner', 'workflow', 'cron', 'zone', 'state', 'next run', 'last error'],
          schedules.map((item) => [
            item.name,
            item.id,
            item.owner,
            item.workflow,
            item.cron,
            item.timeZone,
            stateOf(item),
            item.nextRuns[0] ? formatTime(item.nextRuns[0]) : '-',
            item.lastError?.code ?? '',
          ]),
        ),
      );
    });

  schedule
    .command('show')
    .description('a schedule with its next run times')
    .argument('<schedule>', 'its name (yours) or id')
    .option('--runs <n>', 'how many next run times (default 3)', positiveInteger('--runs', 20))
    .action(async (ref: string, options: { runs?: number }, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const shown = await client.call('showSchedule', {
        params: { schedule: ref },
        query: { runs: options.runs ?? 3 },
      });
      if (context.json) return context.printJson(shown);
      context.out(describe(shown));
    });
}

function registerChanges(schedule: Command): void {
  for (const [verb, route, done] of [
    ['pause', 'pauseSchedule', 'paused'],
    ['resume', 'resumeSchedule', 'resumed'],
  ] as const) {
    schedule
      .command(verb)
      .description(
        verb === 'pause'
          ? 'pause a schedule: nothing fires until resumed'
          : 'resume from the next run after now',
      )
      .argument('<schedule>', 'its name (yours) or id')
      .action(async (ref: string, _options: unknown, command: Command) => {
        const context = contextOf(command);
        const client = await context.client();
        const changed = await client.call(route, { params: { schedule: ref } });
        if (context.json) return context.printJson(changed);
        const next = changed.nextRuns[0];
        context.out(`${done} schedule ${changed.name}${next ? `; next run ${formatTime(next)}` : ''}\n`);
      });
  }

  schedule
    .command('delete')
    .description('delete a schedule (the jobs it fired stay)')
    .argument('<schedule>', 'its name (yours) or id')
    .action(async (ref: string, _options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      await client.call('deleteSchedule', { params: { schedule: ref } });
      if (context.json) return context.printJson({ deleted: ref });
      context.out(`deleted schedule ${ref}\n`);
    });
}

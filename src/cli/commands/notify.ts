/** `steward notify add|list|remove|test|deliveries`: your notification rules on job end. */
import type { Command } from 'commander';
import { Option } from 'commander';
import { formatTable, formatTime } from '../output.js';
import { readPasswordFromStdin } from '../prompt.js';
import { UsageError } from '../failures.js';
import { contextOf, positiveInteger } from './shared.js';

interface AddOptions {
  on: 'failure' | 'success' | 'always';
  webhook?: string;
  email?: string;
  schedule?: string;
  secretStdin?: boolean;
}

export function registerNotifyCommands(program: Command): void {
  const notify = program
    .command('notify')
    .description('tell you when your jobs end: webhooks (signed) or email, on failure, success or always');
  addCommand(notify);
  listCommand(notify);
  removeCommand(notify);
  testCommand(notify);
  deliveriesCommand(notify);
}

/** `steward notify add --webhook URL|--email ADDRESS`: add a rule. */
function addCommand(notify: Command): void {
  notify
    .command('add')
    .description(
      'add a rule: by default for all your jobs; with --schedule only for that schedule (whose rules then replace the default)',
    )
    .addOption(
      new Option('--on <when>', 'failure (failed, lost, expired), success, or always (canceled too)')
        .choices(['failure', 'success', 'always'])
        .default('failure'),
    )
    .option('--webhook <url>', 'POST a signed JSON message to this http(s) URL')
    .option('--email <address>', 'send an email to this address')
    .option('--schedule <name>', 'only jobs started by this schedule of yours')
    .option('--secret-stdin', "read the webhook's signing secret from stdin instead of having one generated")
    .action(async (options: AddOptions, command: Command) => {
      if ((options.webhook === undefined) === (options.email === undefined))
        throw new UsageError('notify add: give exactly one of --webhook URL or --email ADDRESS');
      if (options.secretStdin && options.webhook === undefined)
        throw new UsageError('notify add: --secret-stdin goes with --webhook');
      const context = contextOf(command);
      const client = await context.client();
      const channel =
        options.webhook !== undefined
          ? {
              type: 'webhook' as const,
              url: options.webhook,
              ...(options.secretStdin ? { secret: await readPasswordFromStdin() } : {}),
            }
          : { type: 'email' as const, address: options.email! };
      const created = await client.call('createNotificationRule', {
        body: {
          when: options.on,
          channel,
          ...(options.schedule === undefined ? {} : { schedule: options.schedule }),
        },
      });
      if (context.json) return context.printJson(created);
      context.out(`added rule ${created.id}: ${describe(created)}\n`);
      if (created.secret !== null) {
        context.out(`${created.secret}\n`);
        context.note(
          'that is the webhook signing secret: it is shown only this once (see the user guide, "Verifying a webhook")',
        );
      }
    });
}

/** `steward notify list`: your rules (admins: --all). */
function listCommand(notify: Command): void {
  notify
    .command('list')
    .description("list your rules (admins: --all for every user's)")
    .option('--all', "admins: every user's rules")
    .action(async (options: { all?: boolean }, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const { rules } = await client.call('listNotificationRules', {
        query: options.all ? { all: 'true' } : {},
      });
      if (context.json) return context.printJson({ rules });
      context.out(
        formatTable(
          ['id', 'user', 'when', 'schedule', 'channel', 'target', 'created'],
          rules.map((rule) => [
            rule.id,
            rule.user,
            rule.when,
            rule.schedule ?? '(default)',
            rule.channel,
            rule.target,
            formatTime(rule.createdAt),
          ]),
        ),
      );
    });
}

/** `steward notify remove ID`: remove a rule. */
function removeCommand(notify: Command): void {
  notify
    .command('remove')
    .description('remove a rule; its deliveries not yet sent are dropped')
    .argument('<id>', 'rule id (`steward notify list`)')
    .action(async (id: string, _options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      await client.call('deleteNotificationRule', { params: { id } });
      if (context.json) return context.printJson({ id, removed: true });
      context.out(`removed rule ${id}\n`);
    });
}

/** `steward notify test ID`: send a test message through a rule now. */
function testCommand(notify: Command): void {
  notify
    .command('test')
    .description('send a test message through a rule now and say whether it arrived')
    .argument('<id>', 'rule id (`steward notify list`)')
    .action(async (id: string, _options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const result = await client.call('testNotificationRule', { params: { id } });
      if (context.json) return context.printJson(result);
      if (result.delivered) context.out(`rule ${id}: test message delivered\n`);
      else {
        context.out(`rule ${id}: test message NOT delivered: ${result.error ?? 'unknown error'}\n`);
        process.exitCode = 1;
      }
    });
}

/** `steward notify deliveries`: recent deliveries of your rules. */
function deliveriesCommand(notify: Command): void {
  notify
    .command('deliveries')
    .description('recent deliveries of your rules: state, attempts, last error')
    .option('--all', "admins: every user's deliveries")
    .option('--limit <n>', 'how many (default 50)', positiveInteger('--limit', 500))
    .action(async (options: { all?: boolean; limit?: number }, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const { deliveries } = await client.call('listNotificationDeliveries', {
        query: {
          ...(options.all ? { all: 'true' as const } : {}),
          ...(options.limit === undefined ? {} : { limit: options.limit }),
        },
      });
      if (context.json) return context.printJson({ deliveries });
      context.out(
        formatTable(
          ['created', 'job', 'state', 'channel', 'delivery', 'attempts', 'last error'],
          deliveries.map((item) => [
            formatTime(item.createdAt),
            item.jobId,
            item.jobState,
            item.channel,
            item.state,
            String(item.attempts),
            item.lastError ?? '',
          ]),
        ),
      );
    });
}

function describe(rule: { when: string; schedule: string | null; channel: string; target: string }): string {
  const scope = rule.schedule === null ? 'your jobs' : `jobs of schedule ${rule.schedule}`;
  return `${rule.channel} ${rule.target} on ${rule.when} of ${scope}`;
}

/** `steward run`, `jobs`, `job`, `logs`, `cancel`. */
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { InvalidArgumentError, Option, type Command } from 'commander';
import {
  MAX_BATCH_JOBS,
  MAX_RETRIES,
  jobStates,
  type SubmitJobBatchRequest,
  type DaskWorkerInfo,
  type JobDetail as JobDetailType,
  type JobState,
} from '../../protocol/index.js';
import { ApiClient } from '../client.js';
import type { CliContext } from '../context.js';
import { followJob } from '../follow.js';
import { formatBytes, formatElapsed, formatTable, formatTime, spanMs } from '../output.js';
import { createProgressView, renderJobTable } from '../progress.js';
import { followLogs } from '../log-follow.js';
import { uploadFileParams } from '../uploads.js';
import { parseWorkflowRef } from './workflows.js';
import { collect, contextOf, positiveInteger, wholeNumber } from './shared.js';

/** How long `steward run` keeps sending its submission while no server answers (it is idempotent). */
const SUBMIT_RETRY_MS = 30_000;

interface ListJobsOptions {
  state?: JobState;
  user?: string;
  workflow?: string;
  space?: string;
  since?: string;
  until?: string;
  before?: string;
  limit?: number;
}

export function registerJobCommands(program: Command): void {
  runCommand(program);
  jobsCommand(program);
  jobCommand(program);
  logsCommand(program);
  cancelCommand(program);
}

interface RunOptions {
  param: Record<string, string>;
  label?: string[];
  cluster?: string;
  timeout?: number;
  retries?: number;
  wait?: boolean;
  repeat?: number;
}

/** `steward run WORKFLOW`: submit a job, and with --wait follow it. */
function runCommand(program: Command): void {
  program
    .command('run')
    .description('submit a job; with --wait, follow it and exit 0 only if it succeeds')
    .argument('<workflow>', '[SPACE/]NAME[@VERSION] (a bare NAME is in your personal space)')
    .option(
      '-p, --param <key=value>',
      'a parameter value (repeatable); the server converts it by the parameter type. For a file param, @PATH uploads that local file (@@ for a literal leading @)',
      collectParam,
      {},
    )
    .option('--label <label>', 'run only on agents with this label (repeatable)', collect)
    .option(
      '--cluster <name>',
      "the cluster to run on (default: the workflow's cluster:, else the server's default cluster)",
    )
    .option(
      '--timeout <seconds>',
      'overall job time limit in seconds',
      positiveInteger('--timeout', 30 * 24 * 3600),
    )
    .option(
      '--retries <n>',
      "run it again, as a new attempt, up to N times if its agent or executor is lost (default: the server's policy)",
      wholeNumber('--retries', MAX_RETRIES),
    )
    .option('--wait', 'follow the job until it ends')
    .option(
      '--repeat <n>',
      `submit N jobs with these params, ${MAX_BATCH_JOBS} per request (POST /api/jobs/batch); prints one job id or error per line`,
      positiveInteger('--repeat', 1_000_000),
    )
    .action(async (ref: string, options: RunOptions, command: Command) => {
      const context = contextOf(command);
      parseWorkflowRef(ref);
      if (options.repeat !== undefined && options.wait)
        throw new InvalidArgumentError(
          '--repeat and --wait do not go together (follow jobs with `steward jobs`)',
        );
      const client = await context.client();
      const params = await uploadFileParams(client, options.param, (line) => {
        if (!context.json) context.note(line);
      });
      // One key per submission: if the answer is lost (the server died behind a load balancer), sending the
      // same request again returns the job the first one created instead of submitting a second.
      const submission = () => ({
        workflow: ref,
        params,
        labels: options.label ?? [],
        ...(options.cluster === undefined ? {} : { cluster: options.cluster }),
        ...(options.timeout === undefined ? {} : { timeoutSeconds: options.timeout }),
        ...(options.retries === undefined ? {} : { retries: options.retries }),
        idempotencyKey: randomUUID(),
      });
      if (options.repeat !== undefined) {
        await submitRepeated(context, client, options.repeat, submission);
        return;
      }
      const job = await client.call('submitJob', { body: submission(), retryForMs: SUBMIT_RETRY_MS });
      if (!options.wait) {
        if (context.json) context.printJson(job);
        else context.out(`${job.id}\n`);
        return;
      }
      if (!context.json) context.note(`submitted job ${job.id}`);
      await waitAndReport(context, client, job.id);
    });
}

/**
 * `steward run --repeat N`: N submissions in batches of at most MAX_BATCH_JOBS, each item with its own
 * idempotency key (a batch retried after a lost answer returns the jobs it created). Prints a job id, or
 * `error CODE: message`, per line in order; exits 1 when any item was refused.
 */
async function submitRepeated(
  context: CliContext,
  client: ApiClient,
  count: number,
  submission: () => SubmitJobBatchRequest['jobs'][number],
): Promise<void> {
  const items: unknown[] = [];
  let refused = 0;
  for (let done = 0; done < count; done += MAX_BATCH_JOBS) {
    const jobs = Array.from({ length: Math.min(MAX_BATCH_JOBS, count - done) }, submission);
    const answer = await client.call('submitJobBatch', { body: { jobs }, retryForMs: SUBMIT_RETRY_MS });
    for (const item of answer.jobs) {
      items.push(item);
      if ('error' in item) refused++;
      if (context.json) continue;
      context.out('job' in item ? `${item.job.id}\n` : `error ${item.error.code}: ${item.error.message}\n`);
    }
  }
  if (context.json) context.printJson({ jobs: items });
  if (refused > 0) process.exitCode = 1;
}

/** `steward jobs`: the jobs list, filtered and paged. */
function jobsCommand(program: Command): void {
  program
    .command('jobs')
    .description("list jobs (yours; admins see everyone's)")
    .addOption(new Option('--state <state>', 'only jobs in this state').choices(jobStates))
    .option('--user <name>', 'only jobs of this user')
    .option('--workflow <name>', 'only jobs of this workflow')
    .option('--space <name>', "only jobs of this space's workflows")
    .option('--since <time>', 'only jobs created at or after this time (2026-01-31 or 2026-01-31T12:00:00Z)')
    .option('--until <time>', 'only jobs created before this time')
    .option('--before <cursor>', 'the next page: the cursor the previous page printed')
    .option('--limit <n>', 'at most this many (default 50)', positiveInteger('--limit', 1000))
    .action(async (options: ListJobsOptions, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const { jobs, next } = await client.call('listJobs', {
        query: {
          state: options.state,
          user: options.user,
          workflow: options.workflow,
          space: options.space,
          since: options.since,
          until: options.until,
          before: options.before,
          limit: options.limit,
        },
      });
      if (context.json) return context.printJson({ jobs, next });
      context.out(
        formatTable(
          ['id', 'workflow', 'user', 'state', 'created', 'duration'],
          jobs.map((job) => [
            job.id,
            `${job.workflow.space}/${job.workflow.name}@${job.workflow.version}`,
            job.user,
            job.state,
            formatTime(job.createdAt),
            formatElapsed(spanMs(job.startedAt, job.finishedAt)),
          ]),
        ),
      );
      if (next !== null) context.note(`more: steward jobs --before ${next} (with the same filters)`);
    });
}

/** `steward job ID`: one job in detail. */
function jobCommand(program: Command): void {
  program
    .command('job')
    .description('show a job: state, parameters, executor identity, steps, error')
    .argument('<id>', 'job id')
    .action(async (id: string, _options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const detail = await client.call('showJob', { params: { id } });
      if (context.json) return context.printJson(detail);
      context.out(describeJob(detail));
      // A server without Dask placement (older) answers 404: nothing to show.
      const dask = await client.call('jobDaskWorkers', { params: { id } }).catch(() => ({ workers: [] }));
      if (dask.workers.length > 0) context.out(describeDaskWorkers(dask.workers));
    });
}

/** The job's Dask workers placed on the cluster's agents: where, as whom, and what they used. */
function describeDaskWorkers(workers: readonly DaskWorkerInfo[]): string {
  return (
    '\nDask workers:\n' +
    formatTable(
      ['STEP', 'WORKER', 'STATE', 'AGENT', 'PID', 'UID', 'THREADS', 'MEMORY', 'PEAK RSS', 'CPU'],
      workers.map((worker) => [
        worker.step,
        String(worker.index),
        worker.exit ? `${worker.state} (${worker.exit.signal ?? `code ${worker.exit.code}`})` : worker.state,
        worker.agent ?? '-',
        worker.pid === null ? '-' : String(worker.pid),
        worker.uid === null ? '-' : String(worker.uid),
        String(worker.threads),
        formatBytes(worker.memoryBytes),
        formatBytes(worker.peakRssBytes),
        worker.cpuMs === null ? '-' : formatElapsed(worker.cpuMs),
      ]),
    )
  );
}

/** `steward logs ID`: the steps' stored logs, or followed live with -f. */
function logsCommand(program: Command): void {
  program
    .command('logs')
    .description(
      "print every step's stdout and stderr, streamed (a log over the server's cap shows its head, a marker line and its tail)",
    )
    .argument('<id>', 'job id')
    .option('--step <id>', 'only this step')
    .addOption(new Option('--stream <stream>', 'only this stream').choices(['stdout', 'stderr']))
    .option('--tail <lines>', 'only the last N lines of each log', positiveInteger('--tail', 10_000_000))
    .option('-f, --follow', 'print the logs as the steps write them, until the job ends')
    .action(
      async (
        id: string,
        options: { step?: string; stream?: 'stdout' | 'stderr'; tail?: number; follow?: boolean },
        command: Command,
      ) => {
        const context = contextOf(command);
        const client = await context.client();
        if (options.follow) {
          if (options.tail !== undefined || context.json)
            throw new InvalidArgumentError(
              '--follow prints the whole logs as text: not with --tail or --json',
            );
          await followLogs(client, id, {
            ...(options.step !== undefined ? { step: options.step } : {}),
            ...(options.stream !== undefined ? { stream: options.stream } : {}),
            note: (line) => context.note(line),
          });
          return;
        }
        // Text is streamed per log below; the listing only names them (with --json it inlines what fits).
        const response = await client.call('jobLogs', {
          params: { id },
          query: { maxBytes: context.json ? undefined : 0 },
        });
        const logs = response.logs.filter(
          (entry) =>
            (options.step === undefined || entry.stepId === options.step) &&
            (options.stream === undefined || entry.stream === options.stream),
        );
        if (context.json) return context.printJson({ jobId: response.jobId, logs });
        if (logs.length === 0)
          context.note(
            options.step === undefined
              ? `job ${id} has no logs yet`
              : `job ${id} has no logs for step ${options.step}`,
          );
        // Empty streams are left out here (they are in --json): a header with nothing under it is noise.
        for (const entry of logs) {
          if (entry.size === 0) continue;
          const body = await client.call('jobLog', {
            params: { id, step: entry.stepId, stream: entry.stream },
            accept: 'text/plain',
            query: { tail: options.tail },
          });
          context.out(`==> step ${entry.stepId} ${entry.stream} <==\n`);
          await streamToStdout(body);
        }
      },
    );
}

/** `steward cancel ID`. */
function cancelCommand(program: Command): void {
  program
    .command('cancel')
    .description('cancel a job; with --wait, wait until it has stopped')
    .argument('<id>', 'job id')
    .option('--wait', 'follow the job until it ends; exit 0 only if it ended canceled')
    .action(async (id: string, options: { wait?: boolean }, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const job = await client.call('cancelJob', { params: { id } });
      if (!options.wait) {
        if (context.json) context.printJson(job);
        else context.out(`cancel requested for job ${job.id} (now ${job.state})\n`);
        return;
      }
      await waitAndReport(context, client, job.id, 'canceled');
    });
}

/**
 * Follows a job, shows progress, prints the summary (or, with --json, only the final JobDetail on stdout) and
 * sets the exit status: 0 only when the job ended in `wanted`.
 */
export async function waitAndReport(
  context: CliContext,
  client: ApiClient,
  jobId: string,
  wanted: JobDetailType['state'] = 'succeeded',
): Promise<void> {
  // With --json, stdout carries only the final document; progress goes to stderr, and only for a person.
  const progressStream = context.json ? (process.stderr.isTTY ? process.stderr : null) : process.stdout;
  const view = progressStream ? createProgressView(progressStream) : null;
  let final: JobDetailType;
  try {
    final = await followJob(client, jobId, { onUpdate: (detail, change) => view?.update(detail, change) });
  } finally {
    view?.close();
  }
  if (context.json) context.printJson(final);
  else context.out(summary(final));
  if (final.state !== wanted) {
    if (wanted !== 'succeeded' && !context.json)
      context.note(`job ${final.id} ended ${final.state}, not ${wanted}`);
    process.exitCode = 1;
  }
}

export function summary(detail: JobDetailType): string {
  const took = formatElapsed(spanMs(detail.startedAt ?? detail.createdAt, detail.finishedAt));
  let text = `job ${detail.id} ${detail.state} after ${took}${detail.attempt > 1 ? ` (attempt ${detail.attempt})` : ''}\n`;
  if (detail.error) text += `error: ${detail.error.code}: ${detail.error.message}\n`;
  for (const step of detail.steps.filter((candidate) => candidate.state === 'failed')) {
    // The job's error is usually its first failed step's: print that message once.
    const repeated = step.message !== null && detail.error?.message.includes(step.message) === true;
    text += `failed step: ${step.id}${step.message && !repeated ? `: ${step.message}` : ''}\n`;
  }
  return text;
}

function describeJob(detail: JobDetailType): string {
  const executor = detail.executor
    ? `${detail.executor.osUser} uid=${detail.executor.uid} gid=${detail.executor.gid} groups=${detail.executor.groups.join(',') || '-'} pid=${detail.executor.pid}`
    : '-';
  const fields: [string, string][] = [
    ['id', detail.id],
    [
      'workflow',
      `${detail.workflow.space}/${detail.workflow.name}@${detail.workflow.version}` +
        (detail.workflow.pushedBy ? ` (pushed by ${detail.workflow.pushedBy})` : ''),
    ],
    ['user', detail.user],
    ['state', detail.state],
    ['attempt', String(detail.attempt)],
    [
      'params',
      Object.keys(detail.params).length
        ? Object.entries(detail.params)
            .map(([key, value]) => `${key}=${JSON.stringify(value)}`)
            .join(' ')
        : '-',
    ],
    ...detail.inputs.map((input): [string, string] => [
      `input ${input.param}`,
      `${input.name} (${input.size} bytes, sha256 ${input.sha256})`,
    ]),
    ['labels', detail.labels.join(', ') || '-'],
    ['created', formatTime(detail.createdAt)],
    ['started', formatTime(detail.startedAt)],
    ['finished', formatTime(detail.finishedAt)],
    ['duration', formatElapsed(spanMs(detail.startedAt, detail.finishedAt))],
    ['agent', detail.agentId ?? '-'],
    ['executor', executor],
    ['error', detail.error ? `${detail.error.code}: ${detail.error.message}` : '-'],
    ['pinned', detail.pinned ? 'yes (kept whatever the retention settings)' : 'no'],
    ...(detail.filesPurgedAt === null
      ? []
      : [
          [
            'files',
            `results, logs and inputs removed by retention at ${formatTime(detail.filesPurgedAt)}`,
          ] as [string, string],
        ]),
  ];
  const width = Math.max(...fields.map(([name]) => name.length));
  let text = fields.map(([name, value]) => `${`${name}:`.padEnd(width + 2)}${value}`).join('\n') + '\n';
  if (detail.attempts.length > 0) {
    text +=
      '\n' +
      formatTable(
        ['attempt', 'agent', 'state', 'started', 'finished', 'error'],
        detail.attempts.map((attempt) => [
          String(attempt.attempt),
          attempt.agentId ?? '-',
          attempt.state,
          formatTime(attempt.startedAt),
          formatTime(attempt.finishedAt),
          attempt.error ? `${attempt.error.code}: ${attempt.error.message}` : '-',
        ]),
      );
  }
  if (detail.steps.length > 0) {
    text += '\n' + renderJobTable(detail).split('\n').slice(1).join('\n');
    const messages = detail.steps.filter((step) => step.message);
    for (const step of messages) text += `${step.id}: ${step.message}\n`;
  }
  return text;
}

export function collectParam(value: string, previous: Record<string, string>): Record<string, string> {
  const equals = value.indexOf('=');
  if (equals <= 0) throw new InvalidArgumentError(`expected key=value, got ${JSON.stringify(value)}`);
  const key = value.slice(0, equals);
  if (Object.hasOwn(previous, key)) throw new InvalidArgumentError(`parameter ${key} given twice`);
  return { ...previous, [key]: value.slice(equals + 1) };
}

/**
 * Writes a log body to stdout as it arrives, waiting for stdout to drain, so a long log never sits in
 * memory. The content is the user's own output and is written as it is; a final newline is added if missing.
 */
async function streamToStdout(response: Response): Promise<void> {
  let last = 0x0a;
  for await (const chunk of ApiClient.bodyStream(response) as AsyncIterable<Buffer>) {
    if (chunk.length === 0) continue;
    last = chunk[chunk.length - 1]!;
    if (!process.stdout.write(chunk)) await once(process.stdout, 'drain');
  }
  if (last !== 0x0a) process.stdout.write('\n');
}

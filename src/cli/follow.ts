/**
 * Following a job to its end over `GET /api/jobs/:id/events` (SSE: `snapshot`, then `job` and `step`
 * changes, then `end`). A dropped stream is not the end of the job: catch up with `GET /api/jobs/:id` and
 * reconnect, backing off, until the job is terminal. Only the server unreachable for `giveUpMs` ends it.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Job, JobDetail, LogChunkEvent, StepInfo, isTerminal } from '../protocol/index.js';
import type { z } from 'zod';
import { ApiClient, unreachable } from './client.js';
import { CliError } from './failures.js';
import { readSse } from './sse.js';

export interface FollowOptions {
  /** Called with the current view after every change. */
  onUpdate?: (detail: JobDetail, change: Change) => void;
  /** Called with each piece of a running step's log (`event: log`). */
  onLog?: (chunk: LogChunkEvent) => void;
  /** How long the server may stay unreachable before giving up. Default 60 s. */
  giveUpMs?: number;
}

export type Change =
  | { kind: 'snapshot' }
  | { kind: 'job' }
  | { kind: 'step'; step: StepInfo }
  | { kind: 'end' }
  | { kind: 'reconnect' };

export async function followJob(
  client: ApiClient,
  jobId: string,
  options: FollowOptions = {},
): Promise<JobDetail> {
  const giveUpMs = options.giveUpMs ?? 60_000;
  const params = { id: jobId };
  let view: JobDetail | null = null;
  let failingSince: number | null = null;
  let delayMs = 250;
  const update = (next: JobDetail, change: Change): void => {
    view = next;
    options.onUpdate?.(next, change);
  };

  for (;;) {
    try {
      if (view !== null) {
        // Catch up on what the dropped stream missed.
        update(await client.call('showJob', { params }), { kind: 'reconnect' });
        if (isTerminal((view as JobDetail).state)) return view;
      }
      const response = await client.call('jobEvents', { params, accept: 'text/event-stream' });
      failingSince = null;
      delayMs = 250;
      for await (const message of readSse(ApiClient.bodyStream(response))) {
        switch (message.event) {
          case 'snapshot':
            update(parseEvent(JobDetail, message.event, message.data), { kind: 'snapshot' });
            break;
          case 'job':
            if (view !== null)
              update(
                {
                  ...(view as JobDetail),
                  ...parseEvent(Job, message.event, message.data),
                  // A job event carries no pusher; the pinned version never changes, so keep the snapshot's.
                  workflow: (view as JobDetail).workflow,
                },
                { kind: 'job' },
              );
            break;
          case 'step': {
            const step = parseEvent(StepInfo, message.event, message.data);
            if (view === null) break;
            const current: JobDetail = view;
            const known = current.steps.some((existing) => existing.id === step.id);
            const steps = known
              ? current.steps.map((existing) => (existing.id === step.id ? step : existing))
              : [...current.steps, step];
            update({ ...current, steps }, { kind: 'step', step });
            break;
          }
          case 'log':
            options.onLog?.(parseEvent(LogChunkEvent, message.event, message.data));
            break;
          case 'end': {
            const final = parseEvent(JobDetail, message.event, message.data);
            update(final, { kind: 'end' });
            return final;
          }
          default:
            break;
        }
      }
      // The stream closed without `end`: loop to catch up and reconnect.
    } catch (error) {
      // A CliError is a refusal or an unreachable server; anything else is the stream breaking mid-read.
      const failure = error instanceof CliError ? error : unreachable(client.server, error);
      if (!retryable(failure)) throw failure;
      failingSince ??= Date.now();
      if (Date.now() - failingSince > giveUpMs) throw failure;
    }
    if (view !== null && isTerminal((view as JobDetail).state)) return view;
    await sleep(delayMs);
    delayMs = Math.min(delayMs * 2, 5000);
  }
}

/** Lost connections and an overloaded server are worth retrying; a 404 or 403 is not. */
function retryable(error: CliError): boolean {
  return error.code === 'STEWARD_SERVER_UNREACHABLE' || error.code === 'STEWARD_UNAVAILABLE';
}

function parseEvent<T extends z.ZodType>(schema: T, event: string, data: string): z.infer<T> {
  const result = schema.safeParse(parsePayload(data));
  if (!result.success) {
    const issue = result.error.issues[0];
    throw new CliError(
      'STEWARD_INTERNAL',
      `the job event stream sent an unexpected \`${event}\` event: ${issue ? `${issue.path.join('.')}: ${issue.message}` : 'schema mismatch'}`,
    );
  }
  return result.data;
}

function parsePayload(data: string): unknown {
  try {
    return JSON.parse(data);
  } catch (error) {
    throw new CliError('STEWARD_INTERNAL', 'the job event stream sent an event that is not JSON', {
      cause: error,
    });
  }
}

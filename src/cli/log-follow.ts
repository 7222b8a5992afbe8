/**
 * `steward logs -f JOB`: prints step logs as they arrive until the job ends. The job's event stream
 * (follow.ts, which reconnects and catches up by itself) sends each new piece of a running step's log
 * (`event: log` with its byte offset); what the stream did not carry — the logs before it connected, a gap
 * after a reconnect, the rest of a log past what is shipped live — is read from
 * `GET /api/jobs/:id/logs/:step/:stream?offset=N` from the last byte printed. Every log is therefore printed
 * once, in order, whichever way its bytes came. Output of several logs is interleaved as it arrives, under
 * a `==> step S stream <==` line whenever the log being printed changes (as `tail -f` does for several files).
 */
import { once } from 'node:events';
import type { JobDetail, LogChunkEvent } from '../protocol/index.js';
import { ApiClient } from './client.js';
import { CliError } from './failures.js';
import { followJob } from './follow.js';

export interface LogFollowOptions {
  step?: string;
  stream?: 'stdout' | 'stderr';
  /** Notes for people (stderr). */
  note: (line: string) => void;
}

type Stream = 'stdout' | 'stderr';

export async function followLogs(
  client: ApiClient,
  jobId: string,
  options: LogFollowOptions,
): Promise<JobDetail> {
  const printed = new Map<string, number>();
  let current: string | undefined;
  let endedWithNewline = true;
  let chain: Promise<void> = Promise.resolve();
  let failure: Error | undefined;
  const streams: Stream[] = options.stream ? [options.stream] : ['stdout', 'stderr'];
  const wanted = (stepId: string, stream: Stream): boolean =>
    (options.step === undefined || stepId === options.step) && streams.includes(stream);

  const write = async (stepId: string, stream: Stream, bytes: Buffer): Promise<void> => {
    if (bytes.length === 0) return;
    const key = `${stepId}/${stream}`;
    if (current !== key) {
      if (!endedWithNewline) process.stdout.write('\n');
      process.stdout.write(`${current === undefined ? '' : '\n'}==> step ${stepId} ${stream} <==\n`);
      current = key;
    }
    printed.set(key, (printed.get(key) ?? 0) + bytes.length);
    endedWithNewline = bytes[bytes.length - 1] === 0x0a;
    if (!process.stdout.write(bytes)) await once(process.stdout, 'drain');
  };

  /** Prints what the server has of a log past the last byte printed. */
  const catchUp = async (stepId: string, stream: Stream): Promise<void> => {
    const offset = printed.get(`${stepId}/${stream}`) ?? 0;
    let response: Response;
    try {
      response = await client.call('jobLog', {
        params: { id: jobId, step: stepId, stream },
        accept: 'text/plain',
        query: { offset },
      });
    } catch (error) {
      if (error instanceof CliError && error.code === 'STEWARD_NOT_FOUND') return; // nothing written yet
      throw error;
    }
    for await (const piece of ApiClient.bodyStream(response) as AsyncIterable<Buffer>)
      await write(stepId, stream, piece);
  };

  const enqueue = (work: () => Promise<void>): void => {
    chain = chain.then(work).catch((error: unknown) => {
      failure ??= error instanceof Error ? error : new Error(String(error));
    });
  };
  const catchUpSteps = (detail: JobDetail): void => {
    for (const step of detail.steps)
      for (const stream of streams)
        if (step.state !== 'pending' && wanted(step.id, stream)) enqueue(() => catchUp(step.id, stream));
  };

  const final = await followJob(client, jobId, {
    onUpdate: (detail, change) => {
      if (change.kind === 'snapshot' || change.kind === 'reconnect') catchUpSteps(detail);
      else if (change.kind === 'step' && change.step.state !== 'running' && change.step.state !== 'pending')
        for (const stream of streams)
          if (wanted(change.step.id, stream)) enqueue(() => catchUp(change.step.id, stream));
    },
    onLog: (chunk: LogChunkEvent) => {
      if (!wanted(chunk.stepId, chunk.stream)) return;
      enqueue(async () => {
        const have = printed.get(`${chunk.stepId}/${chunk.stream}`) ?? 0;
        const bytes = Buffer.from(chunk.text);
        if (chunk.offset === have) await write(chunk.stepId, chunk.stream, bytes);
        else if (chunk.offset + bytes.length > have) await catchUp(chunk.stepId, chunk.stream);
      });
    },
  });
  // The final logs (uploaded before the job's end is reported) may hold more than arrived live.
  catchUpSteps(final);
  await chain;
  if (!endedWithNewline) process.stdout.write('\n');
  if (failure) throw failure;
  if (printed.size === 0) options.note(`job ${jobId} ended (${final.state}) with no logs`);
  return final;
}

/**
 * Uploads a finished run's step logs and results to the server, several at once. Each upload is one HTTP
 * round trip, and one after the other they were most of a small job's time after its last step (six round
 * trips for a workflow with three output tables). Each upload streams its file, so running a few at once
 * keeps memory bounded: `concurrency` files in flight, each in small chunks. A table's two formats are two
 * uploads like any other: the server merges them into one result row in whichever order they arrive.
 */
import type { RunResult } from '../engine/index.js';
import type { ServerClient } from './server-client.js';

/** How many uploads run at once: a workflow's usual outputs (a few tables, two formats each) in one round. */
export const UPLOAD_CONCURRENCY = 8;

type Upload = () => Promise<void>;

/** Every upload a run needs: its logs, and when it succeeded its results (a table's two formats). */
function uploadsOf(client: ServerClient, result: RunResult): Upload[] {
  const uploads: Upload[] = result.logs.map(
    (log) => () => client.uploadLog(log.stepId, log.stream, log.path),
  );
  if (result.state !== 'succeeded') return uploads;
  for (const output of result.outputs) {
    if (output.kind === 'table') {
      for (const [format, file] of [
        ['parquet', output.parquetPath],
        ['csv', output.csvPath],
      ] as const)
        uploads.push(() =>
          client.uploadResult(output.name, file, { kind: 'table', format, rows: output.rows }),
        );
    } else {
      uploads.push(() => client.uploadResult(output.name, output.path, { kind: 'file' }));
    }
  }
  return uploads;
}

/**
 * Uploads the logs (first, since they matter most when a job failed) and, for a succeeded run, the results,
 * `concurrency` at a time. After a failure no new upload starts; the call returns (throwing the first
 * failure) only once every started upload has ended, so that nothing still reads the job's files when the
 * job's end is reported and its directories are removed.
 */
export async function uploadRun(
  client: ServerClient,
  result: RunResult,
  concurrency = UPLOAD_CONCURRENCY,
): Promise<void> {
  const uploads = uploadsOf(client, result);
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (!failure && next < uploads.length) {
      const upload = uploads[next++]!;
      try {
        await upload();
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, uploads.length) }, worker));
  if (failure) throw failure.error;
}

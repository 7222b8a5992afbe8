/**
 * Batched submission (`POST /api/jobs/batch`): each item is checked as a single submit is
 * (`JobSubmission.prepare`: workflow, rights, params, cluster, uploads), the accepted ones are stored with
 * their audit entries in one transaction (`Store.insertJobBatch`), then their offers are published together
 * (the bus pipelines the confirms). An item refused at any step gets its error; the others go on. If the
 * transaction itself fails nothing of the batch is stored and the request fails as a whole.
 */
import { coerceError, type ErrorInfo } from '../../protocol/index.js';
import type { JobRecord } from '../../store/index.js';
import type { Principal } from '../auth.js';
import type { JobSubmission, JobSubmissionDeps, PreparedJob, SubmitInput, SubmitMemo } from './submission.js';

/** Why an item was refused: its error as a single submit would have answered it. */
export type BatchItemError = ErrorInfo & { details?: Record<string, unknown> };
/** An item's outcome, in the request's order. */
export type BatchItemResult = { job: JobRecord } | { error: BatchItemError };

export async function submitBatch(
  deps: JobSubmissionDeps,
  submission: JobSubmission,
  principal: Principal,
  inputs: readonly SubmitInput[],
  source: string,
): Promise<BatchItemResult[]> {
  const results: (BatchItemResult | undefined)[] = inputs.map(() => undefined);
  const fail = (index: number, error: unknown): void => {
    const failure = coerceError(error);
    if (failure.status >= 500) deps.logger.error({ err: error, item: index }, 'a batch item failed');
    results[index] = { error: failure.toJSON().error };
  };
  const prepared: { index: number; job: PreparedJob }[] = [];
  const memo: SubmitMemo = new Map();
  for (const [index, input] of inputs.entries()) {
    try {
      const item = await submission.prepare(principal, input, memo);
      if ('token' in item) prepared.push({ index, job: item });
      else results[index] = { job: item };
    } catch (error) {
      fail(index, error);
    }
  }
  const created = await store(deps, submission, principal, prepared, results, source);
  await submission.cancelIfOwnerDisabled(
    principal,
    created.map(({ job }) => job),
  );
  await Promise.all(
    created.map(async ({ index, prepared: item, job }) => {
      try {
        await submission.attachInputs(job, item.reserved);
        await submission.offer(item, job);
        results[index] = { job };
      } catch (error) {
        fail(index, error);
      }
    }),
  );
  return results.map(
    (result) => result ?? { error: { code: 'STEWARD_INTERNAL', message: 'internal error' } },
  );
}

/** Stores the prepared jobs in one transaction; returns the ones created (retried keys answer at once). */
async function store(
  deps: JobSubmissionDeps,
  submission: JobSubmission,
  principal: Principal,
  prepared: readonly { index: number; job: PreparedJob }[],
  results: (BatchItemResult | undefined)[],
  source: string,
): Promise<{ index: number; prepared: PreparedJob; job: JobRecord }[]> {
  const time = Date.now();
  let stored;
  try {
    stored = await deps.store.insertJobBatch(
      prepared.map(({ job }) => {
        const newJob = submission.newJob(principal, job);
        const entry = submission.auditEntry(principal, job, { id: job.id, cluster: job.cluster }, source);
        return {
          job: newJob,
          audit: {
            time,
            actor: entry.actor,
            action: entry.action,
            target: entry.target ?? null,
            source: entry.source ?? null,
            detail: entry.detail ?? null,
          },
        };
      }),
    );
  } catch (error) {
    await Promise.all(prepared.map(({ job }) => deps.uploads.release(job.id).catch(() => undefined)));
    throw error;
  }
  const created: { index: number; prepared: PreparedJob; job: JobRecord }[] = [];
  for (const [i, { index, job }] of prepared.entries()) {
    const result = stored[i]!;
    if (result.created) created.push({ index, prepared: job, job: result.job });
    else {
      // A retried key: the job its first submission created, and nothing new.
      await deps.uploads.release(job.id);
      results[index] = { job: result.job };
    }
  }
  return created;
}

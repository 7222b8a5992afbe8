/** Route handlers: jobs: submit, list, detail, live events, logs, inputs, uploads, cancel and results. */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { StewardError } from '../../protocol/index.js';
import type { JobRecord } from '../../store/index.js';
import type { Principal } from '../auth.js';
import type { ServerContext } from '../context.js';
import { listJobPage, streamJobList } from '../job-list.js';
import { contentDisposition } from '../results.js';
import { rerunJob } from '../rerun.js';
import { jobView, resultView, uploadView } from '../views.js';
import { contentLength, readJobDetailView, streamJobEvents } from './support.js';
import type { Handlers } from './types.js';

export function jobsHandlers(ctx: ServerContext) {
  const { store, jobs, results } = ctx;

  async function ownJob(principal: Principal, id: string, source: string): Promise<JobRecord> {
    return jobs.visibleJob(principal, id, source);
  }

  return {
    submitJob: async ({ principal, body, source }) => jobView(await jobs.submit(principal, body, source)),

    listJobs: async ({ principal, query }) => listJobPage(ctx, principal, query),

    jobStream: async ({ principal, request, reply }) => streamJobList(ctx, principal, request, reply),

    rerunJob: async ({ principal, params, source }) =>
      jobView(await rerunJob(ctx, principal, params.id, source)),

    showJob: async ({ principal, params, source }) => {
      const job = await ownJob(principal, params.id, source);
      return readJobDetailView(ctx, job.id);
    },

    jobEvents: async ({ principal, params, source, request, reply }) => {
      const job = await ownJob(principal, params.id, source);
      return streamJobEvents(ctx, job, request, reply);
    },

    jobLogs: async ({ principal, params, query, source }) => {
      const job = await ownJob(principal, params.id, source);
      return { jobId: job.id, logs: await results.listLogs(job.id, query.maxBytes) };
    },

    jobLog: async ({ principal, params, query, source, reply }) => {
      const job = await ownJob(principal, params.id, source);
      const slice = await results.logSlice(job.id, params.step, params.stream, query);
      reply
        .header('content-type', 'text/plain; charset=utf-8')
        .header('content-length', String(slice.end - slice.start))
        .header('x-steward-log-size', String(slice.size))
        .header('x-steward-log-offset', String(slice.start));
      // Streamed from disk in 64 KiB pieces: a reader costs no more memory however large the log.
      if (slice.end === slice.start) {
        await slice.handle.close();
        return reply.send('');
      }
      return reply.send(slice.handle.createReadStream({ start: slice.start, end: slice.end - 1 }));
    },

    jobInput: async ({ principal, params, source, reply }) => {
      const job = await ownJob(principal, params.id, source);
      const { file, input } = await ctx.uploads.locateInput(job.id, params.param);
      const info = await stat(file).catch(() => undefined);
      if (!info)
        throw new StewardError(
          'STEWARD_NOT_FOUND',
          `input ${params.param} of job ${job.id} is missing on disk`,
        );
      await ctx.audit.record({
        actor: principal.user,
        action: 'input.download',
        target: `${job.id}/${params.param}`,
        source,
        detail: { size: info.size },
      });
      reply
        .header('content-type', 'application/octet-stream')
        .header('content-length', String(info.size))
        .header('content-disposition', contentDisposition(input.name));
      return reply.send(createReadStream(file));
    },

    createUpload: async ({ principal, query, rawBody, request, source }) => {
      const upload = await ctx.uploads.create(principal.user, query.name, rawBody, contentLength(request));
      await ctx.audit.record({
        actor: principal.user,
        action: 'upload.create',
        target: upload.id,
        source,
        detail: { name: upload.name, size: upload.size, sha256: upload.sha256 },
      });
      return uploadView(upload);
    },

    cancelJob: async ({ principal, params, source }) =>
      jobView(await jobs.cancel(principal, params.id, source)),

    listResults: async ({ principal, params, source }) => {
      const job = await ownJob(principal, params.id, source);
      return { results: (await store.listResults(job.id)).map(resultView) };
    },

    downloadResult: async ({ principal, params, source, reply }) => {
      const job = await ownJob(principal, params.id, source);
      const located = await results.locate(job.id, params.name);
      const info = await stat(located.file).catch(() => undefined);
      if (!info)
        throw new StewardError(
          'STEWARD_NOT_FOUND',
          `result file ${params.name} of job ${job.id} is missing on disk`,
        );
      await ctx.audit.record({
        actor: principal.user,
        action: 'result.download',
        target: `${job.id}/${located.downloadName}`,
        source,
        detail: { size: info.size },
      });
      reply
        .header('content-type', located.contentType)
        .header('content-length', String(info.size))
        .header('content-disposition', contentDisposition(located.downloadName));
      return reply.send(createReadStream(located.file));
    },

    previewResult: async ({ principal, params, query, source }) => {
      const job = await ownJob(principal, params.id, source);
      return results.preview(job.id, params.name, query.limit, query.offset);
    },
  } satisfies Partial<Handlers>;
}

/** Route handlers: what a job reads and writes as files: its logs, input files, uploads and results. */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { FastifyReply } from 'fastify';
import { StewardError } from '../../protocol/index.js';
import type { ServerContext } from '../context.js';
import { contentDisposition, type LogSlice } from '../results.js';
import { resultView, uploadView } from '../views.js';
import { contentLength } from './support.js';
import type { Handlers } from './types.js';

export function jobFilesHandlers(ctx: ServerContext) {
  const { store, jobs, results } = ctx;

  return {
    jobLogs: async ({ principal, params, query, source }) => {
      const job = await jobs.visibleJob(principal, params.id, source);
      return { jobId: job.id, logs: await results.listLogs(job.id, query.maxBytes) };
    },

    jobLog: async ({ principal, params, query, source, reply }) => {
      const job = await jobs.visibleJob(principal, params.id, source);
      return sendLogSlice(reply, await results.logSlice(job.id, params.step, params.stream, query));
    },

    jobInput: async ({ principal, params, source, reply }) => {
      const job = await jobs.visibleJob(principal, params.id, source);
      const { file, input } = await ctx.uploads.locateInput(job.id, params.param);
      return sendFile(ctx, reply, {
        file,
        missing: `input ${params.param} of job ${job.id} is missing on disk`,
        audit: {
          actor: principal.user,
          action: 'input.download',
          target: `${job.id}/${params.param}`,
          source,
        },
        contentType: 'application/octet-stream',
        downloadName: input.name,
      });
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

    listResults: async ({ principal, params, source }) => {
      const job = await jobs.visibleJob(principal, params.id, source);
      return { results: (await store.listResults(job.id)).map(resultView) };
    },

    downloadResult: async ({ principal, params, source, reply }) => {
      const job = await jobs.visibleJob(principal, params.id, source);
      const located = await results.locate(job.id, params.name);
      return sendFile(ctx, reply, {
        file: located.file,
        missing: `result file ${params.name} of job ${job.id} is missing on disk`,
        audit: {
          actor: principal.user,
          action: 'result.download',
          target: `${job.id}/${located.downloadName}`,
          source,
        },
        contentType: located.contentType,
        downloadName: located.downloadName,
      });
    },

    previewResult: async ({ principal, params, query, source }) => {
      const job = await jobs.visibleJob(principal, params.id, source);
      return results.preview(job.id, params.name, query.limit, query.offset);
    },
  } satisfies Partial<Handlers>;
}

/** Streams one stored log's slice from disk in 64 KiB pieces: a reader costs no more memory however large the log. */
async function sendLogSlice(reply: FastifyReply, slice: LogSlice): Promise<FastifyReply> {
  reply
    .header('content-type', 'text/plain; charset=utf-8')
    .header('content-length', String(slice.end - slice.start))
    .header('x-steward-log-size', String(slice.size))
    .header('x-steward-log-offset', String(slice.start));
  if (slice.end === slice.start) {
    await slice.handle.close();
    return reply.send('');
  }
  return reply.send(slice.handle.createReadStream({ start: slice.start, end: slice.end - 1 }));
}

interface FileDownload {
  file: string;
  /** The 404's message when the file is not on disk. */
  missing: string;
  /** The download's audit entry (its size is added). */
  audit: { actor: string; action: string; target: string; source: string };
  contentType: string;
  downloadName: string;
}

/** Streams a stored file as a download, audited with its size. */
async function sendFile(
  ctx: ServerContext,
  reply: FastifyReply,
  download: FileDownload,
): Promise<FastifyReply> {
  const info = await stat(download.file).catch(() => undefined);
  if (!info) throw new StewardError('STEWARD_NOT_FOUND', download.missing);
  await ctx.audit.record({ ...download.audit, detail: { size: info.size } });
  reply
    .header('content-type', download.contentType)
    .header('content-length', String(info.size))
    .header('content-disposition', contentDisposition(download.downloadName));
  return reply.send(createReadStream(download.file));
}

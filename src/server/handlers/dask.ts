/** Route handlers: Dask workers across a cluster's agents (see server/dask/workers.ts). */
import type { ServerContext } from '../context.js';
import type { Handlers } from './types.js';

export function daskHandlers(ctx: ServerContext) {
  const { dask, jobs } = ctx;
  return {
    execDaskPlace: async ({ job, params, body }) => dask.place(job, params.step, body),

    execDaskWorkers: async ({ job, params }) => ({
      mode: 'cluster' as const,
      loadTimeoutMs: ctx.config.loadTimeoutMs,
      workers: dask.list(job.id, params.step),
      logs: dask.takeLogs(job.id, params.step),
    }),

    execDaskStop: async ({ job, params }) => {
      dask.stop(job.id, params.step);
      return undefined;
    },

    daskWorkerTls: async ({ request }) => dask.tls(request.headers.authorization),

    daskWorkerReport: async ({ request, body }) => dask.report(request.headers.authorization, body),

    jobDaskWorkers: async ({ principal, params, source }) => {
      const job = await jobs.visibleJob(principal, params.id, source);
      return { workers: dask.list(job.id) };
    },
  } satisfies Partial<Handlers>;
}

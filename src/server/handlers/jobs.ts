/** Route handlers: jobs: submit, list, detail, live events, rerun and cancel (files: job-files.ts). */
import type { JobRecord } from '../../store/index.js';
import type { Principal } from '../auth.js';
import type { ServerContext } from '../context.js';
import { listJobPage, streamJobList } from '../job-list.js';
import { rerunJob } from '../rerun.js';
import { jobView } from '../views.js';
import { jobFilesHandlers } from './job-files.js';
import { readJobDetailView, streamJobEvents } from './support.js';
import type { Handlers } from './types.js';

export function jobsHandlers(ctx: ServerContext) {
  const { jobs } = ctx;

  async function ownJob(principal: Principal, id: string, source: string): Promise<JobRecord> {
    return jobs.visibleJob(principal, id, source);
  }

  return {
    submitJob: async ({ principal, body, source }) => jobView(await jobs.submit(principal, body, source)),

    submitJobBatch: async ({ principal, body, source }) => ({
      jobs: (await jobs.submitBatch(principal, body.jobs, source)).map((item) =>
        'job' in item ? { job: jobView(item.job) } : item,
      ),
    }),

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

    cancelJob: async ({ principal, params, source }) =>
      jobView(await jobs.cancel(principal, params.id, source)),

    ...jobFilesHandlers(ctx),
  } satisfies Partial<Handlers>;
}

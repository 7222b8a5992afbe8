/** Route handlers: executor routes (`auth: job`): the workflow fetch with its claim, assets, inputs and uploads. */
import { createReadStream } from 'node:fs';
import { StewardError } from '../../protocol/index.js';
import type { ServerContext } from '../context.js';
import { jobInputView } from '../views.js';
import { contentLength } from './support.js';
import type { Handlers } from './types.js';

export function execHandlers(ctx: ServerContext) {
  const { store, jobs, workflows, results } = ctx;

  return {
    execWorkflow: async ({ job, query }) => {
      // With `agent`, the fetch claims the attempt (or, with `claim=event`, checks that the agent's `loading`
      // event did); it happens once per job before any user code runs. Without, it claims nothing: the
      // agent's confirmed `loading` event of a first delivery holds the claim (see JobClaims).
      if (query.agent !== undefined) await jobs.claim(job, query.agent, query.claim ?? 'fetch');
      // Exactly the version pinned at submit, even if the workflow was deleted or pushed again since.
      const record = await workflows.pinned(job.workflow);
      return {
        jobId: job.id,
        attempt: job.attempt,
        user: job.user,
        source: record.source,
        format: record.format,
        params: job.params,
        assets: record.assets,
        limits: { stepLogBytes: results.stepLogLimitBytes },
        inputs: (await ctx.uploads.listInputs(job.id)).map(jobInputView),
      };
    },

    execReleaseClaim: async ({ job, query }) => {
      await jobs.releaseClaim(job, query.agent);
      return undefined;
    },

    execAsset: async ({ job, params, reply }) => {
      const asset = await store.workflowHasAsset(job.workflow, params.digest);
      if (!asset)
        throw new StewardError('STEWARD_NOT_FOUND', `job ${job.id}'s workflow has no asset ${params.digest}`);
      reply.header('content-type', 'application/octet-stream').header('content-length', String(asset.size));
      return reply.send(createReadStream(workflows.assetPath(asset.digest)));
    },

    execInput: async ({ job, params, reply }) => {
      const { file, input } = await ctx.uploads.locateInput(job.id, params.param);
      reply.header('content-type', 'application/octet-stream').header('content-length', String(input.size));
      return reply.send(createReadStream(file));
    },

    execLogChunk: async ({ job, params, query, rawBody, request }) =>
      ctx.liveLogs.append(job.id, params.step, params.stream, query.offset, rawBody, contentLength(request)),

    execUploadResult: async ({ job, params, query, rawBody, request }) => {
      await results.upload(job.id, params.name, query, rawBody, contentLength(request));
      return undefined;
    },

    execUploadLog: async ({ job, params, rawBody, request }) => {
      await results.uploadLog(job.id, params.step, params.stream, rawBody, contentLength(request));
      return undefined;
    },
  } satisfies Partial<Handlers>;
}

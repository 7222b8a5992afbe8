/** Route handlers: pins and the retention sweep. */
import type { ServerContext } from '../context.js';
import { iso } from '../views.js';
import type { Handlers } from './types.js';

export function retentionHandlers(ctx: ServerContext) {
  const pinView = (job: { id: string; pinned: boolean; filesPurgedAt: number | null }) => ({
    id: job.id,
    pinned: job.pinned,
    filesPurgedAt: iso(job.filesPurgedAt),
  });

  return {
    pinJob: async ({ principal, params, source }) =>
      pinView(await ctx.retention.setPinned(principal, params.id, true, source)),

    unpinJob: async ({ principal, params, source }) =>
      pinView(await ctx.retention.setPinned(principal, params.id, false, source)),

    retentionSweep: ({ principal, body, source }) =>
      ctx.retention.sweep({ dryRun: body.dryRun, actor: principal.user, source }),
  } satisfies Partial<Handlers>;
}

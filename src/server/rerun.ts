/**
 * Run a job again (`POST /api/jobs/:id/rerun`): a new job of the same pinned workflow version with the same
 * params, labels, time limit and retry budget, submitted as the caller with the caller's rights now. It
 * goes through `JobService.submit` like any submission: the space's viewer role is checked again (a user
 * who lost it cannot rerun), the params are validated again, and it is audited as `job.submit` with
 * `rerunOf`.
 */
import type { JobRecord } from '../store/index.js';
import type { Principal } from './auth.js';
import type { ServerContext } from './context.js';

export async function rerunJob(
  ctx: ServerContext,
  principal: Principal,
  id: string,
  source: string,
): Promise<JobRecord> {
  // Someone else's job is "not found", as everywhere (admins may rerun any job, as themselves).
  const original = await ctx.jobs.visibleJob(principal, id, source);
  const { space, name, version } = original.workflow;
  // The original's input files (`file` params) become new uploads of the caller's, linked, not copied; the
  // submit moves them into the new job as it does any upload.
  const staged = await ctx.uploads.stageRerunInputs(principal.user, original.id);
  return ctx.jobs.submit(
    principal,
    {
      workflow: `${space}/${name}@${version}`,
      params: { ...original.params, ...staged },
      labels: original.labels,
      timeoutSeconds: original.timeoutMs === null ? undefined : Math.ceil(original.timeoutMs / 1000),
      retries: original.retries ?? undefined,
      rerunOf: original.id,
      cluster: original.cluster,
    },
    source,
  );
}

/** Retention of ended jobs: pins, and the sweep an admin runs now or previews (`steward cleanup --server`). */
import { z } from 'zod';
import { IdParams, type ApiRoute } from './route.js';

/** A job's pin: pinned jobs keep their files and record whatever the retention settings. */
export const PinResponse = z.object({
  id: z.string(),
  pinned: z.boolean(),
  /** When retention removed the job's result files, logs and inputs; null while they are kept. */
  filesPurgedAt: z.string().nullable(),
});
export type PinResponse = z.infer<typeof PinResponse>;

export const RetentionSweepRequest = z
  .object({
    /** List what would be removed, change nothing. Default false. */
    dryRun: z.boolean().default(false),
  })
  .strict();

const ExpiredJobInfo = z.object({
  id: z.string(),
  user: z.string(),
  space: z.string(),
  finishedAt: z.string(),
});

export const RetentionReport = z.object({
  dryRun: z.boolean(),
  /** False when another server was sweeping at that moment (nothing was done here). */
  ran: z.boolean(),
  /** Jobs whose result files, logs and inputs were (or would be) removed, oldest end first. */
  files: z.array(ExpiredJobInfo),
  /** Jobs whose records were (or would be) removed, oldest end first. */
  records: z.array(ExpiredJobInfo),
  /** True when a sweep's bound was reached: the next sweep continues. */
  truncated: z.boolean(),
});
export type RetentionReport = z.infer<typeof RetentionReport>;

export const retentionRoutes = {
  pinJob: {
    method: 'POST',
    path: '/api/jobs/:id/pin',
    summary: 'Pin a job (its owner or an admin): retention never removes its files or record',
    tag: 'jobs',
    auth: 'user',
    params: IdParams,
    response: PinResponse,
  },
  unpinJob: {
    method: 'DELETE',
    path: '/api/jobs/:id/pin',
    summary: 'Unpin a job (its owner or an admin): retention applies to it again',
    tag: 'jobs',
    auth: 'user',
    params: IdParams,
    response: PinResponse,
  },
  retentionSweep: {
    method: 'POST',
    path: '/api/retention/sweep',
    summary: 'Run the retention sweep now (admins), or with dryRun list what it would remove; audited',
    tag: 'admin',
    auth: 'admin',
    body: RetentionSweepRequest,
    response: RetentionReport,
  },
} as const satisfies Record<string, ApiRoute>;

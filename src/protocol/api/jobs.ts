/** Submitting jobs, listing and following them, their inputs, logs and results. */
import { z } from 'zod';
import { ErrorInfo, ExecutorIdentity, ParamValue } from '../messages.js';
import { JobState, StepState } from '../states.js';
import { ClusterName } from './clusters.js';
import { IsoTime, JobLabels, SpaceName, WorkflowName, WorkflowRef } from './common.js';
import { type ApiRoute, IdParams, InputParams, LogParams, ResultParams } from './route.js';

/** The most retries a job may ask for or a server may grant: beyond it, a failing job only burns machines. */
export const MAX_RETRIES = 10;

export const SubmitJobRequest = z
  .object({
    workflow: WorkflowRef,
    /** Values as typed JSON or as strings (from `-p key=value`); converted by the parameter definitions. */
    params: z.record(z.string(), ParamValue).default({}),
    labels: JobLabels,
    /** The cluster to run on. Default: the workflow's `cluster:`, else the server's default cluster. */
    cluster: ClusterName.optional(),
    /** Overall job time limit in seconds. */
    timeoutSeconds: z
      .number()
      .int()
      .positive()
      .max(30 * 24 * 3600)
      .optional(),
    /**
     * How many times to run the job again, as a new attempt, if an attempt ends lost or with a crashed
     * executor. Overrides the server's `retries` policy (default: 0 once a step started, 2 before).
     */
    retries: z
      .number()
      .int('expected a whole number')
      .min(0, 'expected 0 or more')
      .max(MAX_RETRIES, `expected at most ${MAX_RETRIES}`)
      .optional(),
    /**
     * A key the client chooses per submission (a UUID, say). Retrying with the same key returns the job the
     * first attempt created instead of submitting another: safe retries when an answer was lost (a server
     * died behind the load balancer). Unique per user; kept as long as the job.
     */
    idempotencyKey: z
      .string()
      .regex(/^[A-Za-z0-9_.:-]{1,100}$/, 'expected 1-100 letters, digits, "_", ".", ":" or "-"')
      .optional(),
  })
  .strict();

/** The most jobs one batch may submit: bounds one request's transaction and answer. */
export const MAX_BATCH_JOBS = 1000;

/**
 * Several submissions in one request. Each item is what `POST /api/jobs` takes. A body that does not match
 * this schema is refused whole (nothing stored; the issue names the item, `jobs.3.params`); the items are
 * then each checked as a single submit would be (workflow, rights, params, cluster), stored in one
 * transaction and offered. An item refused gets its error in the answer; the others are stored and run.
 */
export const SubmitJobBatchRequest = z
  .object({
    jobs: z
      .array(SubmitJobRequest)
      .min(1, 'expected at least one job')
      .max(MAX_BATCH_JOBS, `expected at most ${MAX_BATCH_JOBS} jobs per batch (send larger sets in parts)`),
  })
  .strict();
export type SubmitJobBatchRequest = z.infer<typeof SubmitJobBatchRequest>;

export const StepInfo = z.object({
  id: z.string(),
  kind: z.string(),
  state: StepState,
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
  durationMs: z.number().nullable(),
  rows: z.number().nullable(),
  progress: z.number().nullable(),
  message: z.string().nullable(),
});
export type StepInfo = z.infer<typeof StepInfo>;

/** One run of a job on one agent. A retry is a new attempt with its own number, token and step records. */
export const AttemptInfo = z.object({
  attempt: z.number().int(),
  /** `offered`, `loading` or `running` while it is the job's current attempt; then how it ended. */
  state: JobState,
  agentId: z.string().nullable(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
  error: ErrorInfo.nullable(),
});
export type AttemptInfo = z.infer<typeof AttemptInfo>;

/** A file a job was given for one `file` param. */
export const JobInputInfo = z.object({
  param: z.string(),
  /** The file's name as stored (sanitised at upload: one plain segment). */
  name: z.string(),
  size: z.number().int(),
  sha256: z.string(),
});
export type JobInputInfo = z.infer<typeof JobInputInfo>;

/** `POST /api/uploads?name=`: the file's name as the client knows it (only its last segment is kept). */
export const UploadQuery = z.object({ name: z.string().min(1).max(1024) }).strict();
/** An uploaded file, to pass as a `file` param's value (`id`) when submitting. */
export const UploadInfo = z.object({
  id: z.string(),
  /** The stored name: the last path segment, control characters replaced, no leading dots. */
  name: z.string(),
  size: z.number().int(),
  sha256: z.string(),
  /** When it is removed if no job used it. */
  expiresAt: z.string(),
});
export type UploadInfo = z.infer<typeof UploadInfo>;

/** One piece of a running step's log, as the job event stream sends it (`event: log`). */
export const LogChunkEvent = z.object({
  stepId: z.string(),
  stream: z.enum(['stdout', 'stderr']),
  /** Byte offset of `text` in the stored log. */
  offset: z.number().int(),
  text: z.string(),
});
export type LogChunkEvent = z.infer<typeof LogChunkEvent>;

export const Job = z.object({
  id: z.string(),
  user: z.string(),
  /** The version the job pinned at submit; it never changes afterwards. */
  workflow: z.object({ space: z.string(), name: z.string(), version: z.number().int() }),
  params: z.record(z.string(), ParamValue),
  labels: z.array(z.string()),
  state: JobState,
  attempt: z.number().int(),
  createdAt: z.string(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
  agentId: z.string().nullable(),
  executor: ExecutorIdentity.nullable(),
  error: ErrorInfo.nullable(),
  /** The cluster the job was routed to at submit (`local`: the server's own bus). */
  cluster: z.string(),
  /** The id of the schedule that fired the job; null for jobs submitted by hand. */
  schedule: z.string().nullable(),
});
export type Job = z.infer<typeof Job>;
/** What became of each item of a batch, in the request's order: its job, or why it was refused. */
export const SubmitJobBatchResponse = z.object({
  jobs: z.array(
    z.union([
      z.object({ job: Job }).strict(),
      z
        .object({ error: ErrorInfo.extend({ details: z.record(z.string(), z.unknown()).optional() }) })
        .strict(),
    ]),
  ),
});
export type SubmitJobBatchResponse = z.infer<typeof SubmitJobBatchResponse>;

export const JobDetail = Job.extend({
  /** The pinned version, with who pushed it (null if that version's record cannot be read). */
  workflow: z.object({
    space: z.string(),
    name: z.string(),
    version: z.number().int(),
    pushedBy: z.string().nullable(),
  }),
  steps: z.array(StepInfo),
  /** Every attempt, oldest first; the last one is the job's current attempt. */
  attempts: z.array(AttemptInfo),
  /** The files given for `file` params (`GET /api/jobs/:id/inputs/:param`). */
  inputs: z.array(JobInputInfo),
  /** Kept whatever the retention settings (`steward pin`). */
  pinned: z.boolean(),
  /** When retention removed the job's result files, logs and inputs; null while they are kept. */
  filesPurgedAt: z.string().nullable(),
});
export type JobDetail = z.infer<typeof JobDetail>;

export const ListJobsQuery = z
  .object({
    state: JobState.optional(),
    /** Admins: only this user's jobs (users always see only their own). */
    user: z.string().max(256).optional(),
    /** The workflow's name (in any space unless `space` is given). */
    workflow: WorkflowName.optional(),
    space: SpaceName.optional(),
    /** Created at or after this time. */
    since: IsoTime.optional(),
    /** Created before this time. */
    until: IsoTime.optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(50),
    /** The `next` of the previous page (older jobs follow), or a job id (the page starts after that job). */
    before: z.string().max(200).optional(),
  })
  .strict();
export const JobList = z.object({
  /** Newest first. */
  jobs: z.array(Job),
  /** Pass as `before` for the following (older) page; null on the last page. */
  next: z.string().nullable(),
});

export const ResultInfo = z.object({
  name: z.string(),
  kind: z.enum(['table', 'file']),
  /** For tables, the formats stored (`parquet`, `csv`). */
  formats: z.array(z.string()),
  size: z.number().int(),
  rows: z.number().int().nullable(),
  createdAt: z.string(),
});
export type ResultInfo = z.infer<typeof ResultInfo>;

export const PreviewQuery = z
  .object({
    limit: z.coerce.number().int().min(1).max(10_000).default(100),
    offset: z.coerce.number().int().min(0).default(0),
  })
  .strict();
export const PreviewResponse = z.object({
  name: z.string(),
  columns: z.array(z.object({ name: z.string(), type: z.string() })),
  rows: z.array(z.record(z.string(), z.unknown())),
  totalRows: z.number().int().nullable(),
  /**
   * True when this response is not the whole page asked for: a value was cut (`truncatedCells`) or rows were
   * left out to keep the response within its byte cap (`omittedRows`).
   */
  truncated: z.boolean(),
  /**
   * Values cut to the server's cell cap: `row` is the index in `rows`. A cut text keeps its first bytes (whole
   * UTF-8 characters); any other cut value is its text form, cut alike.
   */
  truncatedCells: z.array(z.object({ row: z.number().int(), column: z.string() })),
  /** Rows of the page asked for that were left out (ask again with a larger `offset` for them). */
  omittedRows: z.number().int(),
  /** The caps this server applies (server config `preview`). */
  limits: z.object({ cellBytes: z.number().int(), responseBytes: z.number().int() }),
});

export const LogEntry = z.object({
  stepId: z.string(),
  stream: z.enum(['stdout', 'stderr']),
  /**
   * The stored log's first bytes, within the listing's `maxBytes` budget (whole UTF-8 characters). The
   * whole log streams from `GET /api/jobs/:id/logs/:step/:stream`.
   */
  text: z.string(),
  /** Size of the stored log in bytes. */
  size: z.number().int(),
  /** True when `text` is not the whole stored log. */
  truncated: z.boolean(),
});
export const LogsResponse = z.object({ jobId: z.string(), logs: z.array(LogEntry) });
export const LogsQuery = z
  .object({
    /** Bytes of log text inlined in the whole listing (first logs first). Default and maximum 1 MiB. */
    maxBytes: z.coerce
      .number()
      .int()
      .min(0)
      .max(1024 * 1024)
      .default(1024 * 1024),
  })
  .strict();
/** One stored log stream: a byte range (`offset`, `limit`) or the last `tail` lines. */
export const LogQuery = z
  .object({
    /** First byte to send. Default 0. */
    offset: z.coerce.number().int().min(0).optional(),
    /** Most bytes to send. Default: to the end. */
    limit: z.coerce.number().int().min(1).optional(),
    /** Only the last N lines (not with `offset`). */
    tail: z.coerce.number().int().min(1).max(10_000_000).optional(),
  })
  .strict();

/** Routes of this area, in the order the OpenAPI document lists them. */
export const jobRoutes = {
  submitJob: {
    method: 'POST',
    path: '/api/jobs',
    summary: 'Submit a job',
    tag: 'jobs',
    auth: 'user',
    body: SubmitJobRequest,
    response: Job,
    status: 201,
  },
  submitJobBatch: {
    method: 'POST',
    path: '/api/jobs/batch',
    summary: `Submit up to ${MAX_BATCH_JOBS} jobs at once: each item as for \`POST /api/jobs\`, stored in one transaction; the answer lists each item's job or error, in order`,
    tag: 'jobs',
    auth: 'user',
    body: SubmitJobBatchRequest,
    response: SubmitJobBatchResponse,
  },
  listJobs: {
    method: 'GET',
    path: '/api/jobs',
    summary: 'List jobs (yours; admins see all)',
    tag: 'jobs',
    auth: 'user',
    query: ListJobsQuery,
    response: JobList,
  },
  jobStream: {
    method: 'GET',
    path: '/api/jobs/stream',
    summary:
      'Live changes of the jobs you may see (Server-Sent Events: `job` with a Job on each change, `resync` when changes may have been missed; admins: all jobs)',
    tag: 'jobs',
    auth: 'user',
    responseMediaType: 'text/event-stream',
  },
  rerunJob: {
    method: 'POST',
    path: '/api/jobs/:id/rerun',
    summary:
      'Run a job again: a new job of the same pinned workflow version with the same params, as you, with your rights now',
    tag: 'jobs',
    auth: 'user',
    params: IdParams,
    response: Job,
    status: 201,
  },
  showJob: {
    method: 'GET',
    path: '/api/jobs/:id',
    summary: 'A job with its step states',
    tag: 'jobs',
    auth: 'user',
    params: IdParams,
    response: JobDetail,
  },
  jobEvents: {
    method: 'GET',
    path: '/api/jobs/:id/events',
    summary: 'Live job and step events (Server-Sent Events); ends when the job ends',
    tag: 'jobs',
    auth: 'user',
    params: IdParams,
    responseMediaType: 'text/event-stream',
  },
  jobLogs: {
    method: 'GET',
    path: '/api/jobs/:id/logs',
    summary:
      "Every step's stdout and stderr: sizes, and each log's first bytes within `maxBytes` (`truncated` says when that is not all of it)",
    tag: 'jobs',
    auth: 'user',
    params: IdParams,
    query: LogsQuery,
    response: LogsResponse,
  },
  jobLog: {
    method: 'GET',
    path: '/api/jobs/:id/logs/:step/:stream',
    summary:
      "One stored step log, streamed as text: a byte range (`offset`, `limit`) or the last `tail` lines. Header `x-steward-log-size` is the whole log's size, `x-steward-log-offset` where the bytes sent start",
    tag: 'jobs',
    auth: 'user',
    params: LogParams,
    query: LogQuery,
    responseMediaType: 'text/plain',
  },
  jobInput: {
    method: 'GET',
    path: '/api/jobs/:id/inputs/:param',
    summary: 'Download the file a job was given for a `file` param',
    tag: 'jobs',
    auth: 'user',
    params: InputParams,
    responseMediaType: 'application/octet-stream',
  },
  createUpload: {
    method: 'POST',
    path: '/api/uploads',
    summary:
      'Upload a file for a `file` param: the raw file as the body (application/octet-stream), its name in `name`. Pass the returned `id` as the param value when submitting; unused uploads expire',
    tag: 'jobs',
    auth: 'user',
    query: UploadQuery,
    response: UploadInfo,
    status: 201,
  },
  cancelJob: {
    method: 'POST',
    path: '/api/jobs/:id/cancel',
    summary: 'Cancel a job',
    tag: 'jobs',
    auth: 'user',
    params: IdParams,
    response: Job,
  },
  listResults: {
    method: 'GET',
    path: '/api/jobs/:id/results',
    summary: "A job's published results",
    tag: 'results',
    auth: 'user',
    params: IdParams,
    response: z.object({ results: z.array(ResultInfo) }),
  },
  downloadResult: {
    method: 'GET',
    path: '/api/jobs/:id/results/:name',
    summary: 'Download a result file (tables: `NAME.csv` or `NAME.parquet`)',
    tag: 'results',
    auth: 'user',
    params: ResultParams,
    responseMediaType: 'application/octet-stream',
  },
  previewResult: {
    method: 'GET',
    path: '/api/jobs/:id/results/:name/preview',
    summary: 'First rows of a result table as JSON',
    tag: 'results',
    auth: 'user',
    params: ResultParams,
    query: PreviewQuery,
    response: PreviewResponse,
  },
} as const satisfies Record<string, ApiRoute>;

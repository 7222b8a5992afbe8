/** Routes for executors, with a job-scoped token: the workflow, assets, inputs, claims, logs and results. */
import { z } from 'zod';
import { AgentId, ParamValue } from '../messages.js';
import { JobInputInfo } from './jobs.js';
import { type ApiRoute, IdParams, InputParams, LogParams, ResultParams } from './route.js';

/** Routes of this area, in the order the OpenAPI document lists them. */
export const execRoutes = {
  execWorkflow: {
    method: 'GET',
    path: '/api/exec/jobs/:id/workflow',
    summary:
      "Executor: the workflow source and resolved params of its job; `agent` claims the attempt for that agent (with `claim=event`: checks that the agent's `loading` event claimed it)",
    tag: 'executor',
    auth: 'job',
    params: IdParams,
    query: z.object({ agent: AgentId.optional(), claim: z.enum(['fetch', 'event']).optional() }).strict(),
    response: z.object({
      jobId: z.string(),
      attempt: z.number().int(),
      user: z.string(),
      source: z.string(),
      format: z.enum(['yaml', 'json']),
      params: z.record(z.string(), ParamValue),
      assets: z.array(z.object({ path: z.string(), size: z.number().int(), digest: z.string() })),
      /** Limits the executor applies while running the job. */
      limits: z.object({ stepLogBytes: z.number().int() }),
      /** Files given for `file` params, fetched from `inputs/:param`. */
      inputs: z.array(JobInputInfo),
    }),
  },
  execReleaseClaim: {
    method: 'DELETE',
    path: '/api/exec/jobs/:id/claim',
    summary:
      "Agent: gives up its claim on the job's attempt before anything ran (its executor died while loading), so the redelivered offer can load elsewhere at once",
    tag: 'executor',
    auth: 'job',
    params: IdParams,
    query: z.object({ agent: AgentId }).strict(),
    status: 204,
  },
  execAsset: {
    method: 'GET',
    path: '/api/exec/jobs/:id/assets/:digest',
    summary: 'Executor: one asset file of its workflow, by digest',
    tag: 'executor',
    auth: 'job',
    params: z.object({ id: z.string().min(1).max(100), digest: z.string().regex(/^[a-f0-9]{64}$/) }).strict(),
    responseMediaType: 'application/octet-stream',
  },
  execInput: {
    method: 'GET',
    path: '/api/exec/jobs/:id/inputs/:param',
    summary: 'Executor: the file its job was given for a `file` param',
    tag: 'executor',
    auth: 'job',
    params: InputParams,
    responseMediaType: 'application/octet-stream',
  },
  execLogChunk: {
    method: 'POST',
    path: '/api/exec/jobs/:id/logs/:step/:stream/chunks',
    summary:
      "Executor: append a piece of a running step's stdout or stderr at byte `offset` (idempotent by offset; a gap is refused with the size stored)",
    tag: 'executor',
    auth: 'job',
    params: LogParams,
    query: z.object({ offset: z.coerce.number().int().min(0) }).strict(),
    response: z.object({ size: z.number().int() }),
  },
  execUploadResult: {
    method: 'PUT',
    path: '/api/exec/jobs/:id/results/:name',
    summary: 'Executor: upload one result file (query `kind`, `format`, `rows`)',
    tag: 'executor',
    auth: 'job',
    params: ResultParams,
    query: z
      .object({
        kind: z.enum(['table', 'file']),
        format: z
          .string()
          .regex(/^[a-z0-9]{1,16}$/)
          .optional(),
        rows: z.coerce.number().int().min(0).optional(),
      })
      .strict(),
    status: 204,
  },
  execUploadLog: {
    method: 'PUT',
    path: '/api/exec/jobs/:id/logs/:step/:stream',
    summary:
      "Executor: upload a step's stdout or stderr; the server stores at most its step log limit (head, marker, tail)",
    tag: 'executor',
    auth: 'job',
    params: LogParams,
    status: 204,
  },
} as const satisfies Record<string, ApiRoute>;

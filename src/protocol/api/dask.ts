/**
 * Routes of Dask workers placed across a cluster's agents: the executor asks for a step's workers and stops
 * them (job token); the agent that took a worker offer fetches its TLS files and reports it (worker token,
 * checked by the handler: `auth: 'none'` here means "no user or job credentials"); users see the workers
 * in job detail.
 */
import { z } from 'zod';
import { DaskWorkerInfo, DaskWorkerReport, DaskWorkerTls, DaskWorkerVerdict } from '../dask.js';
import { type ApiRoute, IdParams } from './route.js';

export const DaskStepParams = z
  .object({ id: z.string().min(1).max(100), step: z.string().min(1).max(100) })
  .strict();

export const DaskPlaceRequest = z
  .object({
    count: z.number().int().min(1).max(256),
    threads: z.number().int().min(1).max(1024),
    memoryBytes: z.number().int().positive(),
    schedulerAddress: z.string().max(300),
    /** The worker's certificate, key and the job's CA (PEM), handed to the workers' agents, never the bus. */
    tls: DaskWorkerTls,
    /** How long agents may take to start the workers. */
    loadTimeoutMs: z.number().int().min(1000).max(3_600_000),
  })
  .strict();
export type DaskPlaceRequest = z.infer<typeof DaskPlaceRequest>;

export const DaskPlacement = z.object({
  /** `cluster`: worker offers were published; `local`: the job's cluster has one embedded agent. */
  mode: z.enum(['cluster', 'local']),
  /** How long the agents have to start the workers: the asked time, at most the server's load timeout. */
  loadTimeoutMs: z.number().int(),
  workers: z.array(DaskWorkerInfo),
  /**
   * Output of workers on other agents not yet handed to the executor (each line once), for the step's log;
   * `dropped` counts lines the server's bound left out.
   */
  logs: z
    .array(
      z.object({
        index: z.number().int(),
        agent: z.string(),
        lines: z.array(z.string()),
        dropped: z.number().int(),
      }),
    )
    .optional(),
});
export type DaskPlacement = z.infer<typeof DaskPlacement>;

export const daskRoutes = {
  execDaskPlace: {
    method: 'POST',
    path: '/api/exec/jobs/:id/dask/:step/workers',
    summary:
      "Executor: place the step's Dask workers on the agents of the job's cluster (one signed worker offer each)",
    tag: 'executor',
    auth: 'job',
    params: DaskStepParams,
    body: DaskPlaceRequest,
    response: DaskPlacement,
  },
  execDaskWorkers: {
    method: 'GET',
    path: '/api/exec/jobs/:id/dask/:step/workers',
    summary: "Executor: the step's Dask workers: where they run, their pid, exit, and agents' refusals",
    tag: 'executor',
    auth: 'job',
    params: DaskStepParams,
    response: DaskPlacement,
  },
  execDaskStop: {
    method: 'DELETE',
    path: '/api/exec/jobs/:id/dask/:step/workers',
    summary: "Executor: stop the step's Dask workers (their agents kill them at their next report)",
    tag: 'executor',
    auth: 'job',
    params: DaskStepParams,
    status: 204,
  },
  daskWorkerTls: {
    method: 'GET',
    path: '/api/dask/worker/tls',
    summary: "Agent, with a worker token: the worker's TLS certificate, key and the job's CA",
    tag: 'executor',
    auth: 'none',
    response: DaskWorkerTls,
  },
  daskWorkerReport: {
    method: 'POST',
    path: '/api/dask/worker/report',
    summary:
      'Agent, with a worker token: the worker was declined, started, is alive (resources) or exited; the answer says whether to keep it',
    tag: 'executor',
    auth: 'none',
    body: DaskWorkerReport,
    response: DaskWorkerVerdict,
  },
  jobDaskWorkers: {
    method: 'GET',
    path: '/api/jobs/:id/dask-workers',
    summary: "The Dask workers of the job's steps: agent, pid, uid, threads, memory, peak RSS and CPU",
    tag: 'jobs',
    auth: 'user',
    params: IdParams,
    response: z.object({ workers: z.array(DaskWorkerInfo) }),
  },
} as const satisfies Record<string, ApiRoute>;

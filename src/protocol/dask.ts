/**
 * Dask workers placed across a cluster's agents (issue 17). The server signs one **worker offer** per
 * worker of a step's Dask cluster, with the same key as job offers, and publishes it on the job's cluster bus
 * (a queue of its own); any agent of that cluster may take it. The offer names everything the agent needs to
 * start the worker as the job's user; the worker's TLS key is not in it (the bus is not a place for keys):
 * the agent fetches it from the server with the offer's worker-scoped token, and reports the worker's pid,
 * resources and exit with the same token (`/api/dask/worker/*`).
 *
 * Domain separation: a worker offer's payload has `kind: 'dask-worker'`, which `JobOffer` (strict) refuses,
 * and a job offer's payload lacks it, so neither can be replayed as the other.
 */
import { z } from 'zod';
import { PROTOCOL_VERSION } from './messages.js';

const id = z.string().min(1).max(200);

export const DaskWorkerOffer = z
  .object({
    v: z.literal(PROTOCOL_VERSION),
    kind: z.literal('dask-worker'),
    jobId: id,
    attempt: z.number().int().min(1),
    /** The step whose cluster this worker joins. */
    step: id,
    /** 1-based index of this worker among the step's `count`. */
    index: z.number().int().min(1),
    count: z.number().int().min(1),
    /** Server user who submitted the job; the agent maps it to an OS account as for jobs. */
    user: z.string().min(1).max(256),
    /** `tls://host:port` of the job's scheduler. */
    schedulerAddress: z.string().regex(/^tls:\/\/[A-Za-z0-9_.:[\]-]+:\d+$/),
    threads: z.number().int().min(1).max(1024),
    memoryBytes: z.number().int().positive(),
    /** Where the agent fetches the TLS files and reports the worker (the server that placed it). */
    serverUrl: z.string().url(),
    /** Bearer token for this one worker's calls (fetch its TLS files, report it); nothing else. */
    workerToken: z.string().min(16).max(512),
    /** Epoch ms after which no agent may start this worker (the step's load timeout). */
    deadline: z.number().int(),
    issuedAt: z.number().int(),
  })
  .strict();
export type DaskWorkerOffer = z.infer<typeof DaskWorkerOffer>;

/** One worker of a step's Dask cluster, as job detail and the executor's placement see it. */
export const DaskWorkerInfo = z.object({
  step: z.string(),
  index: z.number().int(),
  /** `offered` (waiting for an agent), `started`, `exited`, or `withdrawn` (never started: stopped first). */
  state: z.enum(['offered', 'started', 'exited', 'withdrawn']),
  agent: z.string().nullable(),
  pid: z.number().int().nullable(),
  uid: z.number().int().nullable(),
  threads: z.number().int(),
  memoryBytes: z.number().int(),
  startedAt: z.number().int().nullable(),
  exitedAt: z.number().int().nullable(),
  exit: z.object({ code: z.number().int().nullable(), signal: z.string().nullable() }).nullable(),
  /** Peak resident memory of the worker's cgroup (or process) and CPU time used, when the agent can tell. */
  peakRssBytes: z.number().int().nullable(),
  cpuMs: z.number().int().nullable(),
  /** Why agents handed its offer back, last reason first seen per agent (bounded). */
  declined: z.array(z.object({ agent: z.string(), reason: z.string() })),
});
export type DaskWorkerInfo = z.infer<typeof DaskWorkerInfo>;

/** Most lines of a worker's output one report carries (the agent keeps the rest for the next). */
export const MAX_REPORT_LOG_LINES = 200;
/** Longest line of a worker's output relayed (longer ones are cut by the agent). */
export const MAX_REPORT_LOG_LINE = 2000;
/** Output lines of a worker since the agent's previous report, relayed into the step's log. */
const ReportLog = z.array(z.string().max(MAX_REPORT_LOG_LINE)).max(MAX_REPORT_LOG_LINES).optional();

/** What an agent reports about a worker it holds, with the worker token. */
export const DaskWorkerReport = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('declined'), agent: z.string().max(100), reason: z.string().max(500) }).strict(),
  z
    .object({
      kind: z.literal('started'),
      agent: z.string().max(100),
      pid: z.number().int(),
      uid: z.number().int(),
    })
    .strict(),
  z
    .object({
      kind: z.literal('alive'),
      peakRssBytes: z.number().int().nonnegative().nullable(),
      cpuMs: z.number().int().nonnegative().nullable(),
      log: ReportLog,
    })
    .strict(),
  z
    .object({
      kind: z.literal('exited'),
      code: z.number().int().nullable(),
      signal: z.string().max(20).nullable(),
      peakRssBytes: z.number().int().nonnegative().nullable(),
      cpuMs: z.number().int().nonnegative().nullable(),
      log: ReportLog,
    })
    .strict(),
]);
export type DaskWorkerReport = z.infer<typeof DaskWorkerReport>;

/** The server's answer to a report: keep the worker running, or stop it (the step or the job ended). */
export const DaskWorkerVerdict = z.object({ action: z.enum(['keep', 'stop']) });
export type DaskWorkerVerdict = z.infer<typeof DaskWorkerVerdict>;

/** The worker's TLS files, as text; written 0600 by the worker's own process as the job's user. */
export const DaskWorkerTls = z.object({ ca: z.string(), cert: z.string(), key: z.string() });
export type DaskWorkerTls = z.infer<typeof DaskWorkerTls>;

// ---------------------------------------------------------------------------------------------------------
// Agent ↔ Dask worker host (dist/executor/dask-worker-main.js): a small process the agent starts as root,
// in a cgroup of its own, that takes on the job's user for good (as an executor does) and runs one worker.

export const AgentToDaskWorkerHost = z.discriminatedUnion('type', [
  z
    .object({
      type: z.literal('start'),
      identity: z
        .object({
          osUser: z.string(),
          uid: z.number().int(),
          gid: z.number().int(),
          home: z.string(),
          shell: z.string(),
          tempDir: z.string(),
          workspaceDir: z.string(),
        })
        .strict(),
      worker: z
        .object({
          /** `<job>-<attempt>`: the job's directory name on this machine. */
          jobDir: z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,250}$/),
          /** `<step>-worker-<index>`: its directory, log prefix and part of its Dask name. */
          name: z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,250}$/),
          label: z.string().max(300),
          schedulerAddress: z.string().max(300),
          threads: z.number().int().min(1),
          memoryBytes: z.number().int().positive(),
          python: z.string(),
          keepDirs: z.boolean(),
        })
        .strict(),
      tls: DaskWorkerTls,
    })
    .strict(),
  z.object({ type: z.literal('stop'), graceMs: z.number().int().min(0) }).strict(),
]);
export type AgentToDaskWorkerHost = z.infer<typeof AgentToDaskWorkerHost>;

export const DaskWorkerHostToAgent = z.discriminatedUnion('type', [
  z.object({ type: z.literal('ready'), pid: z.number().int() }).strict(),
  z
    .object({
      type: z.literal('started'),
      pid: z.number().int(),
      uid: z.number().int(),
      gid: z.number().int(),
      groups: z.array(z.number().int()),
    })
    .strict(),
  z.object({ type: z.literal('failed'), message: z.string().max(8000) }).strict(),
  z
    .object({ type: z.literal('exited'), code: z.number().int().nullable(), signal: z.string().nullable() })
    .strict(),
]);
export type DaskWorkerHostToAgent = z.infer<typeof DaskWorkerHostToAgent>;

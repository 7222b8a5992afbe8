/**
 * Messages that cross process boundaries: server → agents (offers, control), agents → server (events,
 * heartbeats) and agent ↔ executor (the pipe). Every message carries `v`; a reader refuses versions it does
 * not know instead of guessing.
 */
import { z } from 'zod';
import { JobState, StepState } from './states.js';
import { errorCatalogue, type ErrorCode } from './errors.js';

export const PROTOCOL_VERSION = 1 as const;
/** Upper bound for any single bus message; larger ones are dead-lettered unread. */
export const MAX_MESSAGE_BYTES = 256 * 1024;
/**
 * Deliveries of one offer, in all, after which a bus dead-letters it with reason `delivery-limit`, unless
 * configured otherwise (`bus.deliveryLimit`). RabbitMQ's own default for quorum queues; the embedded bus
 * uses it too.
 */
export const DEFAULT_DELIVERY_LIMIT = 20;

const id = z.string().min(1).max(200);
/** An agent's id (`agent.id` in its config): letters, digits, `_`, `.`, `:`, `-`. */
export const AgentId = z
  .string()
  .regex(/^[A-Za-z0-9_.:-]{1,100}$/, 'expected 1-100 letters, digits, "_", ".", ":" or "-"');
const errorCode = z.string().refine((code): code is ErrorCode => Object.hasOwn(errorCatalogue, code), {
  message: 'unknown error code',
});
export const ParamValue = z.union([z.string(), z.number(), z.boolean()]);
export type ParamValue = z.infer<typeof ParamValue>;

export const ErrorInfo = z.object({ code: errorCode, message: z.string().max(8000) });
export type ErrorInfo = { code: ErrorCode; message: string };

/** A workflow carried inside its job's offer (see `JobOffer.inline`) and handed on to the executor. */
export const InlineWorkflow = z
  .object({
    source: z.string().max(128 * 1024),
    format: z.enum(['yaml', 'json']),
    /** The server's cap of one stored step log stream (what a fetch answers as `limits.stepLogBytes`). */
    stepLogBytes: z.number().int().positive(),
  })
  .strict();
export type InlineWorkflow = z.infer<typeof InlineWorkflow>;

/** What the server asks an agent to run. Carried inside a SignedOffer, never bare. */
export const JobOffer = z
  .object({
    v: z.literal(PROTOCOL_VERSION),
    jobId: id,
    attempt: z.number().int().min(1),
    /** Server user who submitted the job; the agent maps it to an OS account. */
    user: z.string().min(1).max(256),
    workflow: z.object({ name: id, version: z.number().int().min(1), digest: z.string() }),
    params: z.record(z.string(), ParamValue),
    labels: z.array(z.string().max(100)).max(50),
    /** Job-scoped bearer token the executor uses for this job's REST calls (and nothing else). */
    jobToken: z.string().min(16).max(512),
    serverUrl: z.string().url(),
    /** Per-job limits the agent enforces. */
    limits: z.object({ timeoutMs: z.number().int().positive().optional() }).strict(),
    /** Epoch ms after which no agent may start loading this offer (the load timeout). */
    deadline: z.number().int(),
    issuedAt: z.number().int(),
    /**
     * The workflow itself, when it is small and needs nothing else from the server (no assets, no `file`
     * params): the executor then runs it without fetching it. Covered by the offer's signature.
     */
    inline: InlineWorkflow.optional(),
  })
  .strict();
export type JobOffer = z.infer<typeof JobOffer>;

export const SignedOffer = z
  .object({
    v: z.literal(PROTOCOL_VERSION),
    /** The JobOffer as the exact JSON text that was signed. */
    payload: z.string().max(MAX_MESSAGE_BYTES),
    /** Base64 Ed25519 signature over `payload`. */
    signature: z.string().max(200),
    keyId: z.string().max(100),
  })
  .strict();
export type SignedOffer = z.infer<typeof SignedOffer>;

export const ExecutorIdentity = z.object({
  pid: z.number().int(),
  osUser: z.string(),
  uid: z.number().int(),
  gid: z.number().int(),
  groups: z.array(z.number().int()),
  /** The executor's resource limits and how they are enforced (`none`: recorded, not enforced). */
  limits: z
    .object({
      memoryBytes: z.number().int().positive(),
      cpus: z.number().positive(),
      cgroup: z.enum(['v1', 'v2', 'none']),
      /** Most processes and threads of the executor and its steps, when the pids controller enforces it. */
      pids: z.number().int().positive().optional(),
    })
    .optional(),
});
export type ExecutorIdentity = z.infer<typeof ExecutorIdentity>;

/** A step-level event as the engine emits it. */
export const StepEvent = z.object({
  stepId: id,
  state: StepState,
  time: z.number().int(),
  /** 0..1 where the step kind can tell. */
  progress: z.number().min(0).max(1).optional(),
  rows: z.number().int().nonnegative().optional(),
  durationMs: z.number().nonnegative().optional(),
  message: z.string().max(8000).optional(),
  error: ErrorInfo.optional(),
});
export type StepEvent = z.infer<typeof StepEvent>;

const eventBase = {
  v: z.literal(PROTOCOL_VERSION),
  jobId: id,
  attempt: z.number().int().min(1),
  /** Per (jobId, attempt), increasing from 1; the server applies each (jobId, attempt, seq) once. */
  seq: z.number().int().min(1),
  time: z.number().int(),
  agentId: id,
};

export const JobStateEvent = z
  .object({
    ...eventBase,
    type: z.literal('state'),
    state: JobState,
    error: ErrorInfo.optional(),
    executor: ExecutorIdentity.optional(),
  })
  .strict();
export type JobStateEvent = z.infer<typeof JobStateEvent>;

export const JobStepEvent = z.object({ ...eventBase, type: z.literal('step'), step: StepEvent }).strict();
export type JobStepEvent = z.infer<typeof JobStepEvent>;

export const ExecutorInfo = z.object({
  user: z.string(),
  uid: z.number().int(),
  pid: z.number().int(),
  jobs: z.number().int(),
  idleSinceMs: z.number().int().nullable(),
  rssBytes: z.number().int().nullable(),
});
export type ExecutorInfo = z.infer<typeof ExecutorInfo>;

export const Heartbeat = z
  .object({
    v: z.literal(PROTOCOL_VERSION),
    type: z.literal('heartbeat'),
    agentId: id,
    time: z.number().int(),
    labels: z.array(z.string()),
    capacity: z.object({ slots: z.number().int(), free: z.number().int() }),
    executors: z.array(ExecutorInfo),
    isolation: z.enum(['per-user', 'single-user']),
    /** Drained by an administrator (a `drain` control): takes no new jobs. */
    draining: z.boolean(),
    /**
     * `sha256:<hex>` of each offer-signing public key the agent trusts (see `keyFingerprint`), so the server
     * can tell an agent that would refuse its offers. Optional: a heartbeat without it still parses (the
     * cluster check then says the agent does not report its key).
     */
    keyFingerprints: z.array(z.string().max(200)).max(16).optional(),
    /**
     * The agent's last probe of the server's URL (`GET <url>/api/health`), which its executors need.
     * Optional, like `keyFingerprints`; absent until the agent knows a URL.
     */
    serverProbe: z
      .object({ url: z.string().max(2048), ok: z.boolean(), error: z.string().max(500).optional() })
      .strict()
      .optional(),
  })
  .strict();
export type Heartbeat = z.infer<typeof Heartbeat>;

/** Most job events an agent puts in one message. */
export const MAX_BATCH_EVENTS = 128;

/**
 * Several job events of one agent in one message, in the order they happened: an agent sends what is ready
 * together (one broker publish and confirm, one delivery for the server) instead of one message each. The
 * server applies them as it would the same events sent one by one (idempotently, by job, attempt and seq).
 */
export const EventBatch = z
  .object({
    v: z.literal(PROTOCOL_VERSION),
    type: z.literal('events'),
    agentId: id,
    events: z
      .array(z.discriminatedUnion('type', [JobStateEvent, JobStepEvent]))
      .min(1)
      .max(MAX_BATCH_EVENTS),
  })
  .strict()
  .refine((batch) => batch.events.every((event) => event.agentId === batch.agentId), {
    message: 'every event of a batch must name the agent that sent the batch',
    path: ['events'],
  });
export type EventBatch = z.infer<typeof EventBatch>;

/** What agents publish to the events queue (heartbeats have a queue of their own). */
export const AgentMessage = z.discriminatedUnion('type', [JobStateEvent, JobStepEvent, EventBatch]);
export type AgentMessage = z.infer<typeof AgentMessage>;
export type JobEvent = JobStateEvent | JobStepEvent;

export const Control = z.discriminatedUnion('type', [
  z
    .object({
      v: z.literal(PROTOCOL_VERSION),
      type: z.literal('cancel'),
      jobId: id,
      attempt: z.number().int(),
    })
    .strict(),
  // Stop taking new jobs (offers parked here go back to the queue); jobs already taken run to their end.
  z.object({ v: z.literal(PROTOCOL_VERSION), type: z.literal('drain') }).strict(),
  // Take jobs again after a drain.
  z.object({ v: z.literal(PROTOCOL_VERSION), type: z.literal('resume') }).strict(),
]);
export type Control = z.infer<typeof Control>;

// ---------------------------------------------------------------------------------------------------------
// Agent ↔ executor pipe. The executor is started before it knows its user (see docs/architecture.md); the
// agent assigns the identity once, then sends jobs. Secrets never travel in argv or environment.

export const AgentToExecutor = z.discriminatedUnion('type', [
  z
    .object({
      type: z.literal('assume'),
      osUser: z.string(),
      uid: z.number().int(),
      gid: z.number().int(),
      home: z.string(),
      shell: z.string(),
      tempDir: z.string(),
      workspaceDir: z.string(),
      /** Per-job DuckDB limits, set explicitly (see docs/admin-guide.md). */
      duckdb: z.object({ memoryLimit: z.string(), threads: z.number().int().positive() }),
      keepJobDirs: z.boolean(),
      /** Interpreter of `python` steps (the agent's `python`); absent: `python3` from PATH. */
      python: z.string().max(4096).optional(),
      /** Address the job's Dask schedulers listen on (the agent's `dask.schedulerHost`). */
      daskSchedulerHost: z.string().max(253).optional(),
      /** How often the executor pings the agent on the pipe (a missed ping marks it stopped or hung). */
      heartbeatMs: z.number().int().positive().optional(),
      /**
       * The executor's own `cgroup.procs` in the hierarchy of job cgroups, writable by its user: it steps
       * back here after starting a step inside a job's cgroup. Absent when jobs get no cgroups.
       */
      cgroupProcs: z.string().optional(),
    })
    .strict(),
  z
    .object({
      type: z.literal('job'),
      jobId: id,
      attempt: z.number().int(),
      serverUrl: z.string(),
      jobToken: z.string(),
      /** The agent placing the job: the executor claims the attempt for it when fetching the workflow. */
      agentId: AgentId,
      /**
       * How the attempt is claimed. `event`: the agent's `loading` event of a first delivery was confirmed by
       * the broker before this message, and claims the attempt when the server applies it; the executor's
       * fetch claims nothing. `await-event`: the same event claims it, but another agent may hold it (a
       * redelivered offer): the fetch checks the claim is this agent's before anything runs. Absent: the
       * fetch claims it (agents of earlier versions).
       */
      claim: z.enum(['event', 'await-event']).optional(),
      /** The workflow, when its offer carried it and the claim needs no check: no fetch then. */
      workflow: InlineWorkflow.optional(),
      params: z.record(z.string(), ParamValue),
      timeoutMs: z.number().int().positive().optional(),
      /**
       * The job's `cgroup.procs` (made by the agent, writable by the user): every step of the job starts
       * inside it, so the agent can kill all of the job's processes at its end. Absent without cgroups.
       */
      cgroupProcs: z.string().optional(),
    })
    .strict(),
  z.object({ type: z.literal('cancel'), jobId: id }).strict(),
  z.object({ type: z.literal('shutdown') }).strict(),
  /**
   * Remove the job directories (`tmp/<name>`, `work/jobs/<name>`, name `<job>-<attempt>`) of jobs the agent
   * ended after killing this user's previous executor, which could not remove them itself.
   */
  z
    .object({
      type: z.literal('remove-job-dirs'),
      names: z.array(z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,250}$/)).max(1000),
    })
    .strict(),
]);
export type AgentToExecutor = z.infer<typeof AgentToExecutor>;

export const ExecutorToAgent = z.discriminatedUnion('type', [
  z.object({ type: z.literal('ready'), pid: z.number().int() }).strict(),
  z
    .object({
      type: z.literal('assumed'),
      uid: z.number().int(),
      gid: z.number().int(),
      groups: z.array(z.number().int()),
    })
    .strict(),
  z.object({ type: z.literal('assume-failed'), message: z.string() }).strict(),
  /** The executor is alive and its event loop turns (sent every `heartbeatMs` once it has a user). */
  z.object({ type: z.literal('ping') }).strict(),
  /** The workflow was fetched and validated: the agent may now ack the offer. */
  z.object({ type: z.literal('loaded'), jobId: id }).strict(),
  z.object({ type: z.literal('step'), jobId: id, step: StepEvent }).strict(),
  z.object({ type: z.literal('finished'), jobId: id, state: JobState, error: ErrorInfo.optional() }).strict(),
]);
export type ExecutorToAgent = z.infer<typeof ExecutorToAgent>;

/** Most messages one `batch` frame carries (a job of many steps failing skips them all in one turn). */
export const MAX_EXECUTOR_BATCH = 512;

/**
 * What travels on the executor's pipe: one message, or the messages made in one turn of its event loop, in
 * order (a short job's `loaded` and first step, or its last step and `finished`: one wake-up of the agent
 * instead of two).
 */
export const ExecutorFrame = z.union([
  ExecutorToAgent,
  z
    .object({
      type: z.literal('batch'),
      messages: z.array(ExecutorToAgent).min(1).max(MAX_EXECUTOR_BATCH),
    })
    .strict(),
]);
export type ExecutorFrame = z.infer<typeof ExecutorFrame>;

/** The agent's config (`AgentConfig`) and its compiled form, with limits and capacity derived. */
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { AgentId, Duration, StewardError } from '../protocol/index.js';
import { BusConfig, compileBus, type CompiledBusConfig } from './bus.js';
import { compileIdentityPolicy, IdentityPolicyConfig, type CompiledIdentityPolicy } from './identity.js';
import { parseOrThrow, readSecretFile } from './read.js';
import { ByteSize, parseByteSize } from './sizes.js';

/** The idle budget when none is set: a quarter of the machine's memory (see `capacity.idleMemory`). */
export function defaultIdleMemory(totalBytes: number): number {
  return Math.floor(totalBytes / 4);
}

/** MemAvailable's floor when none is set: a tenth of the machine's memory. */
export function defaultMinAvailableMemory(totalBytes: number): number {
  return Math.floor(totalBytes / 10);
}

/**
 * The per-user cap when none is set: it must fit the slots (the former default, `maxJobsPerExecutor` = 4,
 * let one user fill a 2-slot machine), and leave one slot to others where there is more than one.
 */
export function defaultMaxJobsPerUser(slots: number, maxJobsPerExecutor: number): number {
  return Math.max(1, Math.min(maxJobsPerExecutor, slots - 1));
}

export const AgentConfig = z
  .object({
    /**
     * Unique agent id. Default: the `STEWARD_AGENT_ID` environment variable when set, else the host name.
     * One agent per id runs on a host at a time (see `lockDir`): give a second agent on the same host an id
     * of its own.
     */
    id: AgentId.optional(),
    /**
     * Host-wide directory for the agent id lock that keeps a second agent with the same id from starting on
     * this host. Must be owned by the agent's user and writable by nobody else. Default `/run/steward` as
     * root, else `<os tmp dir>/steward-<uid>`.
     */
    lockDir: z.string().optional(),
    /** Capabilities offers may require (`gpu`, `python3.11`, `knime`). */
    labels: z.array(z.string().regex(/^[a-zA-Z0-9_.:-]{1,100}$/)).default([]),
    /** Jobs this machine runs at once. Default: the number of cores. */
    slots: z.number().int().min(1).max(10_000).optional(),
    /** Root-owned parent of per-user workspace and temp dirs. Default `<dataDir>/workspaces`. */
    workspaceRoot: z.string().optional(),
    /**
     * A group given read access (ACL) to every user's workspace and temp files, for audits. Default none.
     */
    auditorsGroup: z
      .string()
      .regex(/^[a-z_][a-z0-9_-]{0,31}$/)
      .optional(),
    /** Root-owned parent of per-user executor logs. Default `<dataDir>/logs`. */
    logDir: z.string().optional(),
    /** Server user → OS user, for server-local users with no OS account of their own name. */
    userMap: z.record(z.string(), z.string()).default({}),
    /** Identity policy: name pattern, minUid, allowed/banned users, allowed groups. Defaults as documented there. */
    identity: IdentityPolicyConfig.optional(),
    /** An executor with no job for this long exits. Default `30m`. */
    idleTimeout: Duration.default(30 * 60_000),
    /** Wait after SIGTERM before SIGKILL when stopping an executor. Default `10s`. */
    stopTimeout: Duration.default(10_000),
    /**
     * How long the agent lets an executor overrun a job's time limit, or take to honour a cancel, before it
     * ends the job itself: it kills every process of the job (and the executor, when that does not answer),
     * reports the job `failed` or `canceled` with `STEWARD_AGENT_ENDED_JOB`, and frees the slot.
     * Default `5s`.
     */
    deadlineGrace: Duration.default(5_000),
    /**
     * The executor → agent ping on the IPC pipe. An executor silent for `interval × misses` (stopped with
     * SIGSTOP, or stuck) is killed with all its processes, and its jobs end with `STEWARD_AGENT_ENDED_JOB`.
     * Defaults: interval `1s`, misses 5.
     */
    executorHeartbeat: z
      .object({
        interval: Duration.optional(),
        misses: z.number().int().min(2).max(1000).optional(),
      })
      .strict()
      .default({}),
    /**
     * On SIGTERM/SIGINT the agent first drains (takes no new jobs) and waits up to this long for its running
     * jobs to end; a second signal stops it at once. Default `0s`: stop at once (running jobs end with
     * their executors).
     */
    stopGrace: Duration.default(0),
    /** Jobs one executor runs at once. Default 4. */
    maxJobsPerExecutor: z.number().int().min(1).max(1000).default(4),
    /**
     * Per-executor limits, enforced with cgroups (v2, or v1 memory + cpu) when the agent runs as root: the
     * executor and every process it starts share them. Defaults: memory 50% of RAM, cpus all cores.
     */
    limits: z
      .object({
        /** Memory for one user's executor and its steps, like `512MiB` or `4GiB`. */
        memory: ByteSize.optional(),
        /** CPU share in cores (`0.5`, `2`). */
        cpus: z.number().min(0.01).max(1024).optional(),
        /**
         * Most processes and threads of one executor and all its steps together (cgroup pids controller):
         * a fork loop stops there. The executor itself uses a few dozen (Node and DuckDB threads).
         * Default 1024.
         */
        pids: z.number().int().min(64).max(4_194_304).optional(),
      })
      .strict()
      .default({}),
    /**
     * This machine's budget. Slots bound the jobs running at once; an offer that would exceed the budget is
     * held, then handed back (another machine takes it), never started and failed. An executor running jobs
     * counts `duckdb.threads / 2` core tokens and `limits.memory` (its ceiling) against `tokens` and
     * `memory`; an idle one reserves nothing and counts what it really uses against `idleMemory`.
     */
    capacity: z
      .object({
        /**
         * Core tokens of the executors running jobs. Default: enough for one executor per slot
         * (`slots × duckdb.threads / 2`), so only `slots` binds unless a budget is set.
         */
        tokens: z.number().min(0.5).max(100_000).optional(),
        /**
         * Memory of the executors running jobs, each counted at `limits.memory`, like `20GiB`. Default
         * `slots × limits.memory`, so only `slots` binds unless a budget is set.
         */
        memory: ByteSize.optional(),
        /**
         * Resident memory (measured) that idle executors and pre-started spares may use together, like
         * `6GiB`. Past it, the least recently used idle executors stop. Default: a quarter of the machine's
         * memory (6 GiB on a 24 GiB machine: about 70 idle executors of 85 MiB).
         */
        idleMemory: ByteSize.optional(),
        /**
         * When the machine's available memory (MemAvailable) falls below this, idle executors stop, least
         * recently used first, until it is back above it. Default: a tenth of the machine's memory.
         */
        minAvailableMemory: ByteSize.optional(),
        /**
         * Jobs one user runs at once on this machine. Default `slots − 1` (at least 1, at most
         * `maxJobsPerExecutor`): one user alone never holds every slot, so another user's job always finds
         * one (with 2 slots, 1 each).
         */
        maxJobsPerUser: z.number().int().min(1).max(10_000).optional(),
      })
      .strict()
      .default({}),
    /**
     * Per-job DuckDB limits. Defaults: memoryLimit 60% of the executor's memory limit (DuckDB must stay
     * below the cgroup limit: it exceeds its own limit while spilling), threads = the executor's cpus
     * rounded up.
     */
    duckdb: z
      .object({
        memoryLimit: ByteSize.optional(),
        threads: z.number().int().min(1).optional(),
      })
      .strict()
      .default({}),
    /** Keep job directories after the job ends (for debugging). Default false. */
    keepJobDirs: z.boolean().default(false),
    /**
     * Dask steps (issue 17). `schedulerHost`: the address a step's Dask scheduler listens on when its job
     * runs on this agent, which the cluster's other agents must reach for their workers. Default: this
     * machine's first non-loopback IPv4 address (127.0.0.1 when it has none, and with an embedded bus,
     * where every worker runs on this machine).
     */
    dask: z
      .object({
        schedulerHost: z
          .string()
          .regex(/^[A-Za-z0-9_.:-]{1,253}$/)
          .optional(),
      })
      .strict()
      .default({}),
    /** Interpreter for python steps. Default `python3` from the executor's PATH. */
    python: z.string().default('python3'),
    /**
     * Spares: executors started ahead of need, waiting to take on a new user's identity (root only). One
     * taken is replaced at once, so a new user, or one whose executor was stopped, finds one ready. Default 2.
     */
    warmExecutors: z.number().int().min(0).max(64).default(2),
    /** Days per-user executor logs and the agent's daily logs are kept. Default 90. */
    logRetentionDays: z.number().int().min(1).max(36_500).default(90),
    /**
     * Scheduled cleanup in the agent: every `every`, delete job dirs and temp files older than `olderThan`
     * (as `steward cleanup` does) and logs past the retention. Default: off (logs are still pruned daily).
     */
    cleanup: z
      .object({ olderThan: Duration, every: Duration.default(86_400_000) })
      .strict()
      .optional(),
    /** How often the agent reports itself. Default `5s`. */
    heartbeatInterval: Duration.default(5_000),
    /** How long a found OS account (NSS lookup) is reused before looking it up again. Default `30s`. */
    accountCacheTtl: Duration.default(30_000),
    /** Longest wait for one NSS account lookup (`getent`) before the job is refused. Default `10s`. */
    accountLookupTimeout: Duration.default(10_000),
    /** `steward agent` only: the bus to the server (RabbitMQ). */
    bus: BusConfig.optional(),
    /**
     * `steward agent` only: the server's offer-signing public key (PEM), as the server writes it to
     * `<dataDir>/keys/offer-signing.pub`. Offers not signed by it never run.
     */
    serverPublicKeyFile: z.string().optional(),
    /**
     * `steward agent` only: the server's offer-signing public key (PEM) inline, as `steward cluster
     * agent-config` prints it. Give this or `serverPublicKeyFile`, not both.
     */
    serverPublicKey: z
      .string()
      .regex(/-----BEGIN PUBLIC KEY-----[\s\S]+-----END PUBLIC KEY-----/, 'expected a PEM public key')
      .optional(),
    /**
     * The server's URL as this machine reaches it (its `server.publicUrl`). The agent probes it and reports
     * the answer in its heartbeats (`steward cluster check` fails when it does not answer), and `steward
     * doctor` probes it too (`GET /api/health`). Executors use the URL each offer carries. Default: the URL
     * the last offer named (doctor: not probed).
     */
    serverUrl: z.string().url().optional(),
  })
  .strict();
export type AgentConfig = z.input<typeof AgentConfig>;

export interface CompiledAgentConfig {
  readonly id: string;
  readonly labels: readonly string[];
  readonly slots: number;
  readonly workspaceRoot: string;
  readonly logDir: string;
  readonly auditorsGroup: string | undefined;
  readonly userMap: Readonly<Record<string, string>>;
  readonly identity: CompiledIdentityPolicy;
  readonly idleTimeoutMs: number;
  readonly stopTimeoutMs: number;
  readonly stopGraceMs: number;
  readonly maxJobsPerExecutor: number;
  readonly limits: { readonly memoryBytes: number; readonly cpus: number; readonly pids: number };
  readonly lockDir: string;
  readonly deadlineGraceMs: number;
  readonly executorHeartbeat: { readonly intervalMs: number; readonly misses: number };
  readonly capacity: {
    readonly tokens: number;
    readonly memoryBytes: number;
    readonly maxJobsPerUser: number;
    /** Core tokens one user's executor takes: duckdb.threads / 2. */
    readonly tokensPerExecutor: number;
    /** Resident memory idle executors and spares may use together (`capacity.idleMemory`). */
    readonly idleMemoryBytes: number;
    /** MemAvailable's floor, below which idle executors stop (`capacity.minAvailableMemory`). */
    readonly minAvailableBytes: number;
  };
  readonly duckdb: { readonly memoryLimit: string; readonly threads: number };
  readonly keepJobDirs: boolean;
  /** Where Dask schedulers of jobs run here listen (see `AgentConfig.dask`); undefined: the default. */
  readonly daskSchedulerHost: string | undefined;
  readonly python: string;
  readonly warmExecutors: number;
  readonly heartbeatIntervalMs: number;
  readonly logRetentionDays: number;
  readonly cleanup: { readonly olderThanMs: number; readonly everyMs: number } | undefined;
  readonly accountCacheTtlMs: number;
  readonly accountLookupTimeoutMs: number;
  readonly bus: CompiledBusConfig;
  /** The server's public key (PEM): `serverPublicKey`, or the contents of `serverPublicKeyFile`. */
  readonly serverPublicKey: string | undefined;
  /** The server URL the agent probes (see `AgentConfig.serverUrl`). */
  readonly serverUrl: string | undefined;
}

export function compileAgentConfig(input: unknown, defaults: { dataDir: string }): CompiledAgentConfig {
  const c = parseOrThrow(AgentConfig, input, 'agent config');
  return Object.freeze({
    ...compileResources(c),
    id: c.id ?? agentIdFromEnvironment() ?? os.hostname(),
    lockDir: path.resolve(
      c.lockDir ??
        (process.getuid?.() === 0
          ? '/run/steward'
          : path.join(os.tmpdir(), `steward-${process.getuid?.() ?? 0}`)),
    ),
    deadlineGraceMs: c.deadlineGrace,
    executorHeartbeat: Object.freeze({
      intervalMs: c.executorHeartbeat.interval ?? 1_000,
      misses: c.executorHeartbeat.misses ?? 5,
    }),
    labels: Object.freeze([...c.labels]),
    slots: c.slots ?? os.availableParallelism(),
    workspaceRoot: path.resolve(c.workspaceRoot ?? path.join(defaults.dataDir, 'workspaces')),
    logDir: path.resolve(c.logDir ?? path.join(defaults.dataDir, 'logs')),
    auditorsGroup: c.auditorsGroup,
    userMap: Object.freeze({ ...c.userMap }),
    identity: compileIdentityPolicy(c.identity ?? {}),
    idleTimeoutMs: c.idleTimeout,
    stopTimeoutMs: c.stopTimeout,
    stopGraceMs: c.stopGrace,
    maxJobsPerExecutor: c.maxJobsPerExecutor,
    keepJobDirs: c.keepJobDirs,
    daskSchedulerHost: c.dask.schedulerHost,
    python: c.python,
    warmExecutors: c.warmExecutors,
    heartbeatIntervalMs: c.heartbeatInterval,
    logRetentionDays: c.logRetentionDays,
    cleanup: c.cleanup
      ? Object.freeze({ olderThanMs: c.cleanup.olderThan, everyMs: c.cleanup.every })
      : undefined,
    accountCacheTtlMs: c.accountCacheTtl,
    accountLookupTimeoutMs: c.accountLookupTimeout,
    bus: compileBus(c.bus, 'agent'),
    serverPublicKey: serverPublicKeyOf(c),
    serverUrl: c.serverUrl,
  });
}

function serverPublicKeyOf(c: z.output<typeof AgentConfig>): string | undefined {
  if (c.serverPublicKey !== undefined && c.serverPublicKeyFile !== undefined)
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      'agent config: give serverPublicKey or serverPublicKeyFile, not both',
    );
  if (c.serverPublicKey !== undefined) return c.serverPublicKey;
  return c.serverPublicKeyFile !== undefined
    ? readSecretFile(c.serverPublicKeyFile, 'agent.serverPublicKeyFile')
    : undefined;
}

/**
 * Per-executor limits, DuckDB's settings below them, and the machine's capacity in executors of that size:
 * each derived from the ones before it.
 */
function compileResources(
  c: z.output<typeof AgentConfig>,
): Pick<CompiledAgentConfig, 'limits' | 'duckdb' | 'capacity'> {
  const cores = os.availableParallelism();
  const limits = {
    memoryBytes: c.limits.memory ? parseByteSize(c.limits.memory) : Math.floor(os.totalmem() / 2),
    cpus: c.limits.cpus ?? cores,
    pids: c.limits.pids ?? 1024,
  };
  if (limits.memoryBytes < 64 * 1024 ** 2)
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      `agent config limits.memory: at least 64MiB, got ${c.limits.memory}`,
    );
  const duckdbBytes = c.duckdb.memoryLimit
    ? parseByteSize(c.duckdb.memoryLimit)
    : Math.max(32 * 1024 ** 2, Math.floor(limits.memoryBytes * 0.6));
  if (duckdbBytes >= limits.memoryBytes) {
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      `agent config duckdb.memoryLimit: must be below limits.memory (${c.duckdb.memoryLimit} >= ${c.limits.memory ?? 'half of RAM'}); DuckDB exceeds its limit while spilling and the executor would be OOM-killed`,
    );
  }
  const duckdbThreads = c.duckdb.threads ?? Math.max(1, Math.ceil(limits.cpus));
  return {
    limits: Object.freeze(limits),
    capacity: Object.freeze({
      tokens: c.capacity.tokens ?? (c.slots ?? cores) * (duckdbThreads / 2),
      memoryBytes: c.capacity.memory
        ? parseByteSize(c.capacity.memory)
        : (c.slots ?? cores) * limits.memoryBytes,
      maxJobsPerUser:
        c.capacity.maxJobsPerUser ?? defaultMaxJobsPerUser(c.slots ?? cores, c.maxJobsPerExecutor),
      tokensPerExecutor: duckdbThreads / 2,
      idleMemoryBytes: c.capacity.idleMemory
        ? parseByteSize(c.capacity.idleMemory)
        : defaultIdleMemory(os.totalmem()),
      minAvailableBytes: c.capacity.minAvailableMemory
        ? parseByteSize(c.capacity.minAvailableMemory)
        : defaultMinAvailableMemory(os.totalmem()),
    }),
    duckdb: Object.freeze({
      memoryLimit: `${Math.floor(duckdbBytes / 1024 ** 2)}MiB`,
      threads: duckdbThreads,
    }),
  };
}

/** `STEWARD_AGENT_ID`, checked like `agent.id`; undefined when unset or empty. */
function agentIdFromEnvironment(): string | undefined {
  const value = process.env.STEWARD_AGENT_ID;
  if (!value) return undefined;
  const parsed = AgentId.safeParse(value);
  if (!parsed.success)
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      `STEWARD_AGENT_ID: ${parsed.error.issues[0]?.message ?? 'invalid'} (got ${JSON.stringify(value.slice(0, 100))})`,
    );
  return parsed.data;
}

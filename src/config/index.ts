/**
 * Configuration: what people write (`ServerConfig`, `AgentConfig`, durations like "30m") is compiled once at
 * the boundary into frozen `Compiled*` objects with every default filled in. Internals take only those.
 * Unknown keys are errors, never silently ignored.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { AgentId, Duration, MAX_RETRIES, StewardError } from '../protocol/index.js';
import {
  compileLdapConfig,
  LdapConfig,
  LoginThrottleConfig,
  type CompiledLdapConfig,
  type CompiledLoginThrottle,
} from './ldap.js';

export {
  LdapConfig,
  LoginThrottleConfig,
  normalizeDn,
  type CompiledLdapConfig,
  type CompiledLoginThrottle,
} from './ldap.js';

export const StoreConfig = z.discriminatedUnion('kind', [
  z
    .object({ kind: z.literal('sqlite'), /** Default `<dataDir>/steward.db`. */ path: z.string().optional() })
    .strict(),
  z
    .object({
      kind: z.literal('postgres'),
      url: z.string().min(1),
      schema: z
        .string()
        .regex(/^[a-z_][a-z0-9_]*$/)
        .optional(),
    })
    .strict(),
]);
export type StoreConfig = z.infer<typeof StoreConfig>;

/** How server and agents talk: in-process (`steward up`) or through RabbitMQ (distributed). */
export const BusConfig = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('embedded') }).strict(),
  z
    .object({
      kind: z.literal('amqp'),
      /** Broker URLs (`amqp://host:5672`, `amqps://host:5671`), tried in order: failover. */
      urls: z.array(z.string().regex(/^amqps?:\/\/[^\s]+$/, 'expected an amqp:// or amqps:// URL')).min(1),
      /** Virtual host. Default: the one in the URL, else `/`. */
      vhost: z.string().min(1).optional(),
      /** User name. Default: the one in the URL, else `guest`. */
      user: z.string().min(1).optional(),
      /** Password (prefer `passwordFile`). Default: the one in the URL, else `guest`. */
      password: z.string().optional(),
      /** File holding the password (trailing newline ignored). */
      passwordFile: z.string().optional(),
      /** PEM files for amqps: CA certificate, and client certificate + key for mutual TLS. */
      ca: z.string().optional(),
      cert: z.string().optional(),
      key: z.string().optional(),
      /**
       * Deliveries after which an offer nobody takes is dead-lettered. Default 20. Counted by the broker on
       * quorum queues, by Steward on classic ones.
       */
      deliveryLimit: z.number().int().min(1).max(1000).default(20),
      /**
       * Queue type: `quorum`, `classic` (for brokers without quorum queues; Steward counts offers' deliveries
       * itself there), or `auto` (quorum when the broker has them, RabbitMQ ≥ 3.8). Classic queues have
       * their own names (`steward.v1.classic.*`). Default `auto`.
       */
      queueType: z.enum(['auto', 'quorum', 'classic']).default('auto'),
    })
    .strict(),
]);
export type BusConfig = z.input<typeof BusConfig>;

export type CompiledBusConfig =
  | { readonly kind: 'embedded' }
  | {
      readonly kind: 'amqp';
      readonly urls: readonly string[];
      readonly vhost: string | undefined;
      readonly user: string | undefined;
      readonly password: string | undefined;
      readonly ca: string | undefined;
      readonly cert: string | undefined;
      readonly key: string | undefined;
      readonly deliveryLimit: number;
      readonly queueType: 'auto' | 'quorum' | 'classic';
    };

function readSecretFile(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      `${what}: cannot read ${file}: ${(error as Error).message}`,
    );
  }
}

/** Reads the files a bus config names (password, certificates) once, here at the boundary. */
function compileBus(bus: z.output<typeof BusConfig> | undefined, what: string): CompiledBusConfig {
  if (!bus || bus.kind === 'embedded') return Object.freeze({ kind: 'embedded' as const });
  if (bus.password !== undefined && bus.passwordFile !== undefined) {
    throw new StewardError('STEWARD_CONFIG_INVALID', `${what}.bus: give password or passwordFile, not both`);
  }
  if ((bus.cert === undefined) !== (bus.key === undefined)) {
    throw new StewardError('STEWARD_CONFIG_INVALID', `${what}.bus: cert and key go together`);
  }
  const password =
    bus.passwordFile !== undefined
      ? readSecretFile(bus.passwordFile, `${what}.bus.passwordFile`).replace(/\r?\n$/, '')
      : bus.password;
  return Object.freeze({
    kind: 'amqp' as const,
    urls: Object.freeze([...bus.urls]),
    vhost: bus.vhost,
    user: bus.user,
    password,
    ca: bus.ca !== undefined ? readSecretFile(bus.ca, `${what}.bus.ca`) : undefined,
    cert: bus.cert !== undefined ? readSecretFile(bus.cert, `${what}.bus.cert`) : undefined,
    key: bus.key !== undefined ? readSecretFile(bus.key, `${what}.bus.key`) : undefined,
    deliveryLimit: bus.deliveryLimit,
    queueType: bus.queueType,
  });
}

const RetryCount = z
  .number({ error: 'expected a whole number of retries' })
  .int('expected a whole number of retries')
  .min(0, 'expected 0 or more retries')
  .max(MAX_RETRIES, `expected at most ${MAX_RETRIES} retries`);

export const RetriesConfig = z
  .object({
    /** Retries of a job that had started a step. Default 0. */
    ran: RetryCount.default(0),
    /** Retries of a job that had not started any step. Default 2. */
    notStarted: RetryCount.default(2),
  })
  .strict();

export const ServerConfig = z
  .object({
    /** Interface to listen on. Default `127.0.0.1`. */
    host: z.string().default('127.0.0.1'),
    /** TCP port. Default 8080; 0 picks a free one. */
    port: z.number().int().min(0).max(65535).default(8080),
    /** Where the store (embedded), results, assets, logs and keys live. Default `./.steward`. */
    dataDir: z.string().default('.steward'),
    /**
     * Results, job logs and workflow assets. With several servers (HA) it must be one directory all of them
     * mount (NFS or similar), since any server may take an upload or a download. Default `dataDir`.
     */
    sharedDir: z.string().min(1).optional(),
    /**
     * The Ed25519 private key that signs job offers (PEM, mode 0600). With several servers it must be one
     * file all of them read: agents trust a fixed public key. Created by the first server if missing.
     * Default `<dataDir>/keys/offer-signing.pem`.
     */
    signingKeyFile: z.string().min(1).optional(),
    /**
     * URL executors use to reach this server. Default `http://HOST:PORT` (with the bound port). With
     * several servers, the load balancer's URL: a job must reach a live server even if the one that
     * submitted it died.
     */
    publicUrl: z.string().url().optional(),
    store: StoreConfig.optional(),
    /** How long an offer may wait for an executor to load it. Default `2m`. */
    loadTimeout: Duration.default(120_000),
    /**
     * An agent silent (no heartbeat) for this long loses its running jobs: they end `lost`. Default `30s`;
     * keep it several times the agents' heartbeat interval.
     */
    agentLease: Duration.default(30_000),
    /** Lifetime of login tokens. Default `7d`. */
    sessionTtl: Duration.default(7 * 86_400_000),
    /**
     * Browser sessions of the web portal (`POST /api/auth/session`, an HttpOnly cookie). `ttl`: how long a
     * session lasts from sign-in, fixed (use does not extend it). Default `12h`.
     */
    session: z
      .object({ ttl: Duration.default(12 * 3_600_000) })
      .strict()
      .default({ ttl: 12 * 3_600_000 }),
    /** Largest accepted request body (workflow pushes with assets, result uploads are streamed). Default 64 MiB. */
    bodyLimitBytes: z
      .number()
      .int()
      .positive()
      .default(64 * 1024 * 1024),
    /** Largest accepted result upload. Default 10 GiB. */
    resultLimitBytes: z
      .number()
      .int()
      .positive()
      .default(10 * 1024 ** 3),
    /**
     * Cap of one stored step log stream (a step's stdout or its stderr). A longer stream keeps its first and
     * last half of this with a marker line between, which says how many bytes were dropped. Executors cap
     * while the step writes (they learn the value with their job); the server caps every upload again, since
     * it cannot trust an executor. Default 32 MiB; at least 1 KiB.
     */
    stepLogLimitBytes: z
      .number()
      .int()
      .min(1024)
      .default(32 * 1024 * 1024),
    /**
     * Result previews (`GET /api/jobs/:id/results/:name/preview`): `cellBytes` caps one value (a longer one
     * is cut and listed in `truncatedCells`), `responseBytes` caps the rows of one response (rows past it
     * are left out and counted in `omittedRows`). Defaults 8 KiB and 1 MiB.
     */
    preview: z
      .object({
        cellBytes: z
          .number()
          .int()
          .min(16)
          .max(16 * 1024 * 1024)
          .default(8 * 1024),
        responseBytes: z
          .number()
          .int()
          .min(1024)
          .max(256 * 1024 * 1024)
          .default(1024 * 1024),
      })
      .strict()
      .default({ cellBytes: 8 * 1024, responseBytes: 1024 * 1024 }),
    /**
     * Files uploaded for `file` params (`POST /api/uploads`): `maxBytes` caps one file (default 1 GiB), `ttl`
     * is how long an upload no job has used is kept (default `24h`).
     */
    uploads: z
      .object({
        maxBytes: z
          .number()
          .int()
          .positive()
          .default(1024 ** 3),
        ttl: Duration.default(86_400_000),
      })
      .strict()
      .default({ maxBytes: 1024 ** 3, ttl: 86_400_000 }),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    /** LDAP authentication beside local users. Default: off (local users only). */
    ldap: LdapConfig.optional(),
    /**
     * Which proxies in front of the server to believe about the client's address (`X-Forwarded-For`): a
     * list of addresses or CIDR ranges (or `loopback`, `linklocal`, `uniquelocal`). The address is what the login throttle counts and the audit log records; behind a proxy that
     * is not trusted every client looks like the proxy. Never trust more than your own proxies: whoever
     * reaches the server directly could then claim any address. Default `false`: the TCP peer is the client.
     */
    trustProxy: z
      .union([
        z.literal(false),
        z
          .array(
            z
              .string()
              .refine(
                isProxyAddress,
                'expected an IP address, a CIDR range, loopback, linklocal or uniquelocal',
              ),
          )
          .min(1),
      ])
      .default(false),
    /**
     * Refusal of further logins after repeated failures. Defaults: 5 per user and address, 50 per user, in
     * 15m; no per-address bound.
     */
    loginThrottle: LoginThrottleConfig.default({
      maxFailuresPerUserAndSource: 5,
      maxFailuresPerUser: 50,
      window: 15 * 60_000,
    }),
    /** The bus to agents. Default `{kind: embedded}` (`steward up`); `steward server` needs `amqp`. */
    bus: BusConfig.optional(),
    /**
     * How many times a job whose attempt ended `lost` or with a crashed executor is run again, as a new
     * attempt. `ran`: at least one step had started (it may have had side effects), default 0.
     * `notStarted`: no step had started, default 2. A job's own `retries` overrides both.
     */
    retries: RetriesConfig.default({ ran: 0, notStarted: 2 }),
  })
  .strict();
export type ServerConfig = z.input<typeof ServerConfig>;

export interface CompiledServerConfig {
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  /** Results, logs and assets (absolute). */
  readonly sharedDir: string;
  /** The offer-signing private key file (absolute). */
  readonly signingKeyFile: string;
  readonly publicUrl: string | undefined;
  readonly store: StoreConfig;
  readonly loadTimeoutMs: number;
  readonly agentLeaseMs: number;
  readonly sessionTtlMs: number;
  /** Portal browser sessions (see `ServerConfig.session`). */
  readonly session: { readonly ttlMs: number };
  readonly bodyLimitBytes: number;
  readonly resultLimitBytes: number;
  /** Cap of one stored step log stream (see `ServerConfig.stepLogLimitBytes`). */
  readonly stepLogLimitBytes: number;
  /** Preview caps (see `ServerConfig.preview`). */
  readonly preview: { readonly cellBytes: number; readonly responseBytes: number };
  /** Upload caps (see `ServerConfig.uploads`). */
  readonly uploads: { readonly maxBytes: number; readonly ttlMs: number };
  readonly logLevel: string;
  readonly ldap: CompiledLdapConfig | undefined;
  readonly loginThrottle: CompiledLoginThrottle;
  /** Fastify's `trustProxy`: false, or the trusted proxies' addresses and ranges. */
  readonly trustProxy: false | readonly string[];
  readonly bus: CompiledBusConfig;
  /** Retry budgets by whether a step had started (see `ServerConfig.retries`). */
  readonly retries: { readonly ran: number; readonly notStarted: number };
}

export function compileServerConfig(input: unknown): CompiledServerConfig {
  const c = parseOrThrow(ServerConfig, input, 'server config');
  const dataDir = path.resolve(c.dataDir);
  return Object.freeze({
    host: c.host,
    port: c.port,
    dataDir,
    sharedDir: c.sharedDir === undefined ? dataDir : path.resolve(c.sharedDir),
    signingKeyFile:
      c.signingKeyFile === undefined
        ? path.join(dataDir, 'keys', 'offer-signing.pem')
        : path.resolve(c.signingKeyFile),
    publicUrl: c.publicUrl,
    store:
      c.store === undefined || (c.store.kind === 'sqlite' && c.store.path === undefined)
        ? { kind: 'sqlite' as const, path: path.join(dataDir, 'steward.db') }
        : c.store,
    loadTimeoutMs: c.loadTimeout,
    agentLeaseMs: c.agentLease,
    sessionTtlMs: c.sessionTtl,
    session: Object.freeze({ ttlMs: c.session.ttl }),
    bodyLimitBytes: c.bodyLimitBytes,
    resultLimitBytes: c.resultLimitBytes,
    stepLogLimitBytes: c.stepLogLimitBytes,
    preview: Object.freeze({ cellBytes: c.preview.cellBytes, responseBytes: c.preview.responseBytes }),
    uploads: Object.freeze({ maxBytes: c.uploads.maxBytes, ttlMs: c.uploads.ttl }),
    logLevel: c.logLevel,
    ldap: c.ldap === undefined ? undefined : compileLdapConfig(c.ldap),
    loginThrottle: Object.freeze({
      maxFailuresPerUserAndSource: c.loginThrottle.maxFailuresPerUserAndSource,
      maxFailuresPerUser: c.loginThrottle.maxFailuresPerUser,
      maxFailuresPerSource: c.loginThrottle.maxFailuresPerSource,
      windowMs: c.loginThrottle.window,
    }),
    trustProxy: Array.isArray(c.trustProxy) ? Object.freeze([...c.trustProxy]) : c.trustProxy,
    bus: compileBus(c.bus, 'server'),
    retries: Object.freeze({ ran: c.retries.ran, notStarted: c.retries.notStarted }),
  });
}

/**
 * The per-user cap when none is set: it must fit the slots (the former default, `maxJobsPerExecutor` = 4,
 * let one user fill a 2-slot machine), and leave one slot to others where there is more than one.
 */
export function defaultMaxJobsPerUser(slots: number, maxJobsPerExecutor: number): number {
  return Math.max(1, Math.min(maxJobsPerExecutor, slots - 1));
}

/** What proxy-addr (Fastify's trustProxy) accepts in a list: an address, a CIDR range, or a named range. */
function isProxyAddress(value: string): boolean {
  if (['loopback', 'linklocal', 'uniquelocal'].includes(value)) return true;
  const [address, bits, ...rest] = value.split('/');
  if (rest.length > 0 || address === undefined) return false;
  const family = isIP(address);
  if (family === 0) return false;
  if (bits === undefined) return true;
  if (!/^\d{1,3}$/.test(bits)) return false;
  return Number(bits) <= (family === 4 ? 32 : 128);
}

const BYTE_SIZE = /^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$/;
const BYTE_UNITS: Record<string, number> = {
  B: 1,
  KB: 1e3,
  MB: 1e6,
  GB: 1e9,
  TB: 1e12,
  KiB: 1024,
  MiB: 1024 ** 2,
  GiB: 1024 ** 3,
  TiB: 1024 ** 4,
};
/** A size like `512MiB`, `4GiB`, `1.5GB`. */
const ByteSize = z.string().regex(BYTE_SIZE, 'expected a size like 512MiB or 4GiB');

/** Bytes in a size string (validated by ByteSize). */
export function parseByteSize(text: string): number {
  const match = BYTE_SIZE.exec(text.trim());
  if (!match) throw new StewardError('STEWARD_CONFIG_INVALID', `expected a size like 512MiB, got ${text}`);
  return Math.floor(Number(match[1]) * BYTE_UNITS[match[2]!]!);
}

/** Who may run jobs on an agent (see docs/admin-guide.md, "Identity policy"). */
export const IdentityPolicyConfig = z
  .object({
    /**
     * Pattern an OS user name must match in full (anchors are added). Default: POSIX portable names,
     * lowercase, not starting with a digit or "-": `[a-z_][a-z0-9_-]*`. Names longer than 32 characters,
     * all-digit names and names with "/", "..", spaces or shell characters are refused whatever it says.
     */
    nameRegex: z.string().min(1).max(200).default('[a-z_][a-z0-9_-]*'),
    /** Accounts with a lower uid are refused unless listed in `allowedSystemUsers`. Default 1000. */
    minUid: z
      .number()
      .int()
      .min(1)
      .max(2 ** 31)
      .default(1000),
    /** System accounts (uid below `minUid`) that may still run jobs. Default none. Never root. */
    allowedSystemUsers: z.array(z.string().min(1).max(64)).default([]),
    /**
     * Accounts that never run jobs. Default: root, bin, daemon, sys, sync, nobody and the usual service
     * accounts (postgres, rabbitmq, www-data, mysql, sshd, messagebus, systemd-*). Setting it replaces the
     * default list; root is refused in any case.
     */
    bannedUsers: z.array(z.string().min(1).max(64)).optional(),
    /** When set, only accounts in at least one of these groups (primary or supplementary) run jobs. */
    allowedGroups: z.array(z.string().min(1).max(64)).optional(),
  })
  .strict();
export type IdentityPolicyConfig = z.input<typeof IdentityPolicyConfig>;

/** Service accounts refused by default (the agent never runs user code as them). */
export const defaultBannedUsers: readonly string[] = Object.freeze([
  'root',
  'bin',
  'daemon',
  'sys',
  'sync',
  'games',
  'man',
  'lp',
  'mail',
  'news',
  'uucp',
  'proxy',
  'backup',
  'list',
  'irc',
  'nobody',
  'postgres',
  'rabbitmq',
  'www-data',
  'mysql',
  'sshd',
  'messagebus',
  '_apt',
  'systemd-network',
  'systemd-resolve',
  'systemd-timesync',
  'steward',
]);

export interface CompiledIdentityPolicy {
  readonly namePattern: RegExp;
  readonly minUid: number;
  readonly allowedSystemUsers: ReadonlySet<string>;
  readonly bannedUsers: ReadonlySet<string>;
  /** Undefined when every group is allowed. */
  readonly allowedGroups: ReadonlySet<string> | undefined;
}

export function compileIdentityPolicy(input: unknown): CompiledIdentityPolicy {
  const c = parseOrThrow(IdentityPolicyConfig, input, 'agent config identity');
  let namePattern: RegExp;
  try {
    namePattern = new RegExp(`^(?:${c.nameRegex})$`, 'u');
  } catch (error) {
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      `agent config identity.nameRegex: not a valid regular expression: ${(error as Error).message}`,
    );
  }
  if (c.allowedSystemUsers.includes('root')) {
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      'agent config identity.allowedSystemUsers: root can never run jobs, remove it',
    );
  }
  if (c.allowedGroups && c.allowedGroups.length === 0) {
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      'agent config identity.allowedGroups: an empty list would refuse everyone; omit it to allow all groups',
    );
  }
  return Object.freeze({
    namePattern,
    minUid: c.minUid,
    allowedSystemUsers: new Set(c.allowedSystemUsers),
    bannedUsers: new Set(['root', ...(c.bannedUsers ?? defaultBannedUsers)]),
    allowedGroups: c.allowedGroups ? new Set(c.allowedGroups) : undefined,
  });
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
     * This machine's budget. An offer that would exceed it is handed back (another machine takes it), never
     * started and failed. A new user's executor costs `duckdb.threads / 2` core tokens and `limits.memory`.
     */
    capacity: z
      .object({
        /**
         * Core tokens. Default: enough for one executor per slot (`slots × duckdb.threads / 2`), so only
         * `slots` binds unless a budget is set.
         */
        tokens: z.number().min(0.5).max(100_000).optional(),
        /** Memory shared by all executors, like `20GiB`. Default `slots × limits.memory` (limits are ceilings). */
        memory: ByteSize.optional(),
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
    /** Interpreter for python steps. Default `python3` from the executor's PATH. */
    python: z.string().default('python3'),
    /** Executors started ahead of need, waiting to take on a user's identity. Default 1 (root only). */
    warmExecutors: z.number().int().min(0).max(64).default(1),
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
  };
  readonly duckdb: { readonly memoryLimit: string; readonly threads: number };
  readonly keepJobDirs: boolean;
  readonly python: string;
  readonly warmExecutors: number;
  readonly heartbeatIntervalMs: number;
  readonly logRetentionDays: number;
  readonly cleanup: { readonly olderThanMs: number; readonly everyMs: number } | undefined;
  readonly accountCacheTtlMs: number;
  readonly accountLookupTimeoutMs: number;
  readonly bus: CompiledBusConfig;
  /** PEM contents of `serverPublicKeyFile`, when given. */
  readonly serverPublicKey: string | undefined;
}

export function compileAgentConfig(input: unknown, defaults: { dataDir: string }): CompiledAgentConfig {
  const c = parseOrThrow(AgentConfig, input, 'agent config');
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
  return Object.freeze({
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
    slots: c.slots ?? cores,
    workspaceRoot: path.resolve(c.workspaceRoot ?? path.join(defaults.dataDir, 'workspaces')),
    logDir: path.resolve(c.logDir ?? path.join(defaults.dataDir, 'logs')),
    auditorsGroup: c.auditorsGroup,
    userMap: Object.freeze({ ...c.userMap }),
    identity: compileIdentityPolicy(c.identity ?? {}),
    idleTimeoutMs: c.idleTimeout,
    stopTimeoutMs: c.stopTimeout,
    stopGraceMs: c.stopGrace,
    maxJobsPerExecutor: c.maxJobsPerExecutor,
    limits: Object.freeze(limits),
    capacity: Object.freeze({
      tokens: c.capacity.tokens ?? (c.slots ?? cores) * (duckdbThreads / 2),
      memoryBytes: c.capacity.memory
        ? parseByteSize(c.capacity.memory)
        : (c.slots ?? cores) * limits.memoryBytes,
      maxJobsPerUser:
        c.capacity.maxJobsPerUser ?? defaultMaxJobsPerUser(c.slots ?? cores, c.maxJobsPerExecutor),
      tokensPerExecutor: duckdbThreads / 2,
    }),
    duckdb: Object.freeze({
      memoryLimit: `${Math.floor(duckdbBytes / 1024 ** 2)}MiB`,
      threads: duckdbThreads,
    }),
    keepJobDirs: c.keepJobDirs,
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
    serverPublicKey:
      c.serverPublicKeyFile !== undefined
        ? readSecretFile(c.serverPublicKeyFile, 'agent.serverPublicKeyFile')
        : undefined,
  });
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

/** Reads a YAML or JSON config file; `{}` when `file` is undefined. */
export function readConfigFile(file: string | undefined): unknown {
  if (!file) return {};
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      `cannot read config file ${file}: ${(error as Error).message}`,
    );
  }
  try {
    return parseYaml(text) ?? {};
  } catch (error) {
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      `config file ${file} is not valid YAML/JSON: ${(error as Error).message}`,
    );
  }
}

function parseOrThrow<T extends z.ZodType>(schema: T, input: unknown, what: string): z.output<T> {
  const result = schema.safeParse(input ?? {});
  if (result.success) return result.data;
  const first = result.error.issues
    .map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`)
    .join('; ');
  throw new StewardError('STEWARD_CONFIG_INVALID', `${what}: ${first}`);
}

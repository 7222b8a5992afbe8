/** The server's config (`ServerConfig`) and its compiled form. */
import { isIP } from 'node:net';
import path from 'node:path';
import { z } from 'zod';
import { Duration, MAX_RETRIES } from '../protocol/index.js';
import { compileBus, BusConfig, type CompiledBusConfig } from './bus.js';
import { ClustersConfig, compileClustersConfig, type CompiledClustersConfig } from './clusters.js';
import {
  compileLdapConfig,
  LdapConfig,
  LoginThrottleConfig,
  type CompiledLdapConfig,
  type CompiledLoginThrottle,
} from './ldap.js';
import {
  compileNotificationsConfig,
  defaultNotificationsConfig,
  NotificationsConfig,
  type CompiledNotificationsConfig,
} from './notifications.js';
import { compileMetricsConfig, MetricsConfig, type CompiledMetricsConfig } from './metrics.js';
import { parseOrThrow } from './read.js';
import { compileRetentionConfig, RetentionConfig, type CompiledRetentionConfig } from './retention.js';
import { StoreConfig, compileStoreConfig, type CompiledStoreConfig } from './store.js';

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

/** A whole number of bytes within bounds, with its default. */
function byteCount(min: number, max: number, fallback: number) {
  return z.number().int().min(min).max(max).default(fallback);
}

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
     * Largest workflow source sent inside its job's signed offer, so the executor need not fetch it over
     * HTTP. Only a workflow with no assets and no `file` params travels so; larger ones, and any when this is
     * 0, are fetched as before. Agents older than this option refuse offers that carry a workflow: set 0
     * until every agent is upgraded. Default 64 KiB; at most 128 KiB (an offer must stay under the bus's
     * 256 KiB message limit).
     */
    offerWorkflowMaxBytes: z
      .number()
      .int()
      .min(0)
      .max(128 * 1024)
      .default(64 * 1024),
    /**
     * Result previews (`GET /api/jobs/:id/results/:name/preview`): `cellBytes` caps one value (a longer one
     * is cut and listed in `truncatedCells`), `responseBytes` caps the rows of one response (rows past it
     * are left out and counted in `omittedRows`). Defaults 8 KiB and 1 MiB.
     */
    preview: z
      .object({
        cellBytes: byteCount(16, 16 * 1024 * 1024, 8 * 1024),
        responseBytes: byteCount(1024, 256 * 1024 * 1024, 1024 * 1024),
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
    /**
     * Job-end notifications: `smtp` for email rules, the rules' limit per user, delivery retries. Default:
     * webhooks only, 20 rules per user, 10 attempts from 30s apart up to 1h.
     */
    notifications: NotificationsConfig.default(defaultNotificationsConfig),
    /**
     * Clusters (`steward cluster …`): the default cluster of jobs that name none (default `local`, the
     * server's own bus), the clock skew the attach checks allow, and how long they listen for heartbeats.
     */
    clusters: ClustersConfig.default({ default: 'local', maxClockSkew: 30_000, heartbeatWait: 6_000 }),
    /** The Prometheus endpoint `/metrics` (see config/metrics.ts). Default: off. */
    metrics: MetricsConfig.optional(),
    /** How long ended jobs' files and records are kept (see config/retention.ts). Default: forever. */
    retention: RetentionConfig.optional(),
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
  readonly store: CompiledStoreConfig;
  readonly loadTimeoutMs: number;
  readonly agentLeaseMs: number;
  readonly sessionTtlMs: number;
  /** Portal browser sessions (see `ServerConfig.session`). */
  readonly session: { readonly ttlMs: number };
  readonly bodyLimitBytes: number;
  readonly resultLimitBytes: number;
  /** Cap of one stored step log stream (see `ServerConfig.stepLogLimitBytes`). */
  readonly stepLogLimitBytes: number;
  /** Largest workflow sent inside its offer (see `ServerConfig.offerWorkflowMaxBytes`); 0: never. */
  readonly offerWorkflowMaxBytes: number;
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
  /** Job-end notifications (see `ServerConfig.notifications`). */
  readonly notifications: CompiledNotificationsConfig;
  /** Cluster settings (see `ServerConfig.clusters`). */
  readonly clusters: CompiledClustersConfig;
  /** The Prometheus endpoint; undefined when off. */
  readonly metrics: CompiledMetricsConfig | undefined;
  /** Retention of ended jobs; undefined: everything is kept. */
  readonly retention: CompiledRetentionConfig | undefined;
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
        : compileStoreConfig(c.store, 'server'),
    loadTimeoutMs: c.loadTimeout,
    agentLeaseMs: c.agentLease,
    sessionTtlMs: c.sessionTtl,
    session: Object.freeze({ ttlMs: c.session.ttl }),
    bodyLimitBytes: c.bodyLimitBytes,
    resultLimitBytes: c.resultLimitBytes,
    stepLogLimitBytes: c.stepLogLimitBytes,
    offerWorkflowMaxBytes: c.offerWorkflowMaxBytes,
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
    notifications: compileNotificationsConfig(c.notifications),
    clusters: compileClustersConfig(c.clusters),
    metrics: compileMetricsConfig(c.metrics),
    retention: compileRetentionConfig(c.retention),
  });
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

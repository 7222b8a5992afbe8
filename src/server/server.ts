/**
 * createServer wires the store, the bus and the HTTP API. Everything durable lives in the store and the
 * data directory, so a restarted server (or a second one on the same PostgreSQL and shared directory)
 * continues where the last one stopped.
 */
import { DaskWorkers } from './dask/workers.js';
import { mkdirSync } from 'node:fs';
import fastifyCookie from '@fastify/cookie';
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import type { Bus } from '../bus/index.js';
import type { CompiledServerConfig } from '../config/index.js';
import {
  coerceError,
  createOfferSigner,
  createOfferVerifier,
  MAX_URL_PARAM_LENGTH,
  publicKeyFingerprint,
  StewardError,
  type OfferVerifier,
} from '../protocol/index.js';
import { openStore, type Clock, type Store } from '../store/index.js';
import { AuditLog } from './audit.js';
import { Authenticator } from './auth.js';
import { ClusterRegistry } from './clusters/registry.js';
import { ClusterService } from './clusters/service.js';
import type { ServerContext } from './context.js';
import { EventConsumer } from './events.js';
import { JobService, type SweepCounts } from './jobs/index.js';
import { Scheduler, ScheduleService, type FireCounts } from './schedules/index.js';
import { NotificationChannels, NotificationDispatcher, NotificationService } from './notifications/index.js';
import { UserAdmin } from './users.js';
import { loadOrCreateSigningKey } from './keys.js';
import { buildOpenApiDocument } from './openapi.js';
import { defaultPortalDir, registerPortal, registerSecurityHeaders } from './portal.js';
import { RemoteChanges } from './remote.js';
import { PortalSessions } from './sessions.js';
import { claimSqliteFile } from './sqlite-guard.js';
import { LiveLogs } from './live-logs.js';
import { countingBus, MetricsListener, registerMetricsRoute, ServerMetrics } from './metrics/index.js';
import { RetentionService } from './retention.js';
import { ResultFiles } from './results.js';
import { UploadService } from './uploads.js';
import { buildHandlers, registerRoutes } from './routes.js';
import { STEWARD_VERSION } from './version.js';
import { JobWatch } from './watch.js';
import { SpaceService } from './spaces.js';
import { WorkflowRepository } from './workflows.js';

export interface CreateServerOptions {
  config: CompiledServerConfig;
  bus: Bus;
  /** Default: a pino logger at `config.logLevel` on stderr. */
  logger?: Logger;
  /** Password of the `admin` user created on first start. Default: generated, see `generatedAdminPassword`. */
  adminPassword?: string | undefined;
  /** How often overdue offers are expired. Default: a quarter of the load timeout, between 1 s and 15 s. */
  sweepIntervalMs?: number;
  /** The built web portal served at `/`. Default `dist/web` beside the server's own code. */
  portalDir?: string;
  /**
   * The clock (epoch ms) token and session expiry are judged by, and the store's clock. Default `Date.now`;
   * tests inject their own to move time instead of waiting for it.
   */
  clock?: Clock;
  /**
   * The Prometheus metrics this server reports. Default: its own. The daemon passes one it also gives the
   * bus's connection events to, so failures before the server exists count too.
   */
  metrics?: ServerMetrics;
  /**
   * The schedule firing loop. `enabled: false` runs no loop (tests call `fireSchedules`); `misfireGraceMs`:
   * how late a tick may be found and still fire as on time (default 60 s).
   */
  scheduler?: { enabled?: boolean; misfireGraceMs?: number };
}

export interface StewardServer {
  readonly app: FastifyInstance;
  readonly store: Store;
  /** PEM of the public key agents use to verify job offers. */
  readonly publicKeyPem: string;
  /** Set on first start when no admin password was given: print it once. */
  readonly generatedAdminPassword: string | undefined;
  /** Starts listening on config.host:config.port (0 = any free port). */
  listen(): Promise<{ url: string }>;
  /** This server's metrics (`GET /metrics`). */
  readonly metrics: ServerMetrics;
  /** Pins and the retention sweep (`server.retention`). */
  readonly retention: RetentionService;
  /** Where the separate metrics listener (`server.metrics.listen`) serves `/metrics`, once listening. */
  readonly metricsUrl: string | undefined;
  /** Runs every recovery sweep once now (expiry, lost agents, adoption); returns what each did. */
  sweep(now?: number): Promise<SweepCounts>;
  /** Handles every schedule tick due at `now` once (what the firing loop does on each pass). */
  fireSchedules(now?: number): Promise<FireCounts>;
  /** Stops consuming, closes HTTP, DuckDB and the store. Does not close the bus (the caller owns it). */
  close(): Promise<void>;
}

export async function createServer(options: CreateServerOptions): Promise<StewardServer> {
  const { config } = options;
  const logger = options.logger ?? pino({ level: config.logLevel });
  mkdirSync(config.dataDir, { recursive: true });
  mkdirSync(config.sharedDir, { recursive: true });
  const claim =
    config.store.kind === 'sqlite' && config.store.path !== undefined
      ? claimSqliteFile(config.store.path)
      : undefined;
  const metrics = options.metrics ?? new ServerMetrics();
  let store: Store;
  try {
    store = await openStore(config.store, {
      ...(options.clock ? { clock: options.clock } : {}),
      onError: (kind) => metrics.countStoreError(kind),
    });
  } catch (error) {
    claim?.release();
    throw error;
  }
  try {
    const server = await assemble({ ...options, metrics }, store, logger);
    const close = server.close.bind(server);
    let closing: Promise<void> | undefined;
    // Replaced in place, not spread into a copy: the server has getters (metricsUrl).
    server.close = () => {
      closing ??= close().finally(() => claim?.release());
      return closing;
    };
    return server;
  } catch (error) {
    await store.close();
    claim?.release();
    throw error;
  }
}

type AssembleOptions = CreateServerOptions & { metrics: ServerMetrics };

async function assemble(options: AssembleOptions, store: Store, logger: Logger): Promise<StewardServer> {
  const { config, metrics } = options;
  metrics.readFrom({ store, agentLeaseMs: config.agentLeaseMs, clock: options.clock ?? Date.now });
  const keys = loadOrCreateSigningKey(config.signingKeyFile);
  const verifier = createOfferVerifier([keys.publicKeyPem]);
  const { ctx, generatedAdminPassword, serverUrl, channels } = await buildContext(
    options,
    store,
    logger,
    keys,
    verifier,
  );
  const app = await buildApp(ctx, options.portalDir ?? defaultPortalDir());
  registerMetricsRoute(app, metrics, config.metrics);
  const background = await startBackground(ctx, { channels, serverUrl, metrics }, options);
  const metricsConfig = config.metrics;
  const metricsListener =
    metricsConfig?.listen === undefined
      ? undefined
      : new MetricsListener(metrics, { ...metricsConfig, listen: metricsConfig.listen }, logger);
  let metricsUrl: string | undefined;

  let closing: Promise<void> | undefined;
  return {
    app,
    store,
    publicKeyPem: keys.publicKeyPem,
    generatedAdminPassword,
    metrics,
    retention: ctx.retention,
    get metricsUrl() {
      return metricsUrl;
    },
    async listen() {
      if (metricsListener && metricsUrl === undefined) metricsUrl = await metricsListener.start();
      const address = await app.listen({ host: config.host, port: config.port });
      if (!config.publicUrl) {
        const bound = app.server.address();
        const port = bound && typeof bound === 'object' ? bound.port : config.port;
        serverUrl.current = localUrl(config.host, port);
      }
      return { url: config.publicUrl ?? (address.startsWith('http') ? serverUrl.current : address) };
    },
    sweep: (now) => ctx.jobs.sweep(now),
    fireSchedules: (now) => background.scheduler.runOnce(now),
    close() {
      closing ??= (async () => {
        await background.stop();
        await metricsListener?.stop();
        await app.close();
        await ctx.results.close();
        await store.close();
      })();
      return closing;
    },
  };
}

/** What `buildContext` gives `assemble`. */
interface BuiltContext {
  ctx: ServerContext;
  generatedAdminPassword: string | undefined;
  serverUrl: { current: string };
  channels: NotificationChannels;
}

/**
 * The server's services over one store and bus, and the `admin` user on first start. `serverUrl` is what
 * local executors are told to call: set once the listening port is known (when no publicUrl is configured).
 */
async function buildContext(
  options: AssembleOptions,
  store: Store,
  logger: Logger,
  keys: { privateKeyPem: string; publicKeyPem: string },
  verifier: OfferVerifier,
): Promise<BuiltContext> {
  const { config, metrics } = options;
  const bus = countingBus(options.bus, metrics);
  const observeTransition = metrics.observeTransition.bind(metrics);
  const clock = options.clock ?? Date.now;
  const audit = meteredAudit(store, logger, metrics);
  const auth = new Authenticator(store, audit, config, options.clock);
  const generatedAdminPassword = await auth.bootstrapAdmin(options.adminPassword);
  const watch = new JobWatch(logger);
  const spaces = new SpaceService(store, audit);
  const workflows = new WorkflowRepository(store, config.sharedDir, audit, spaces);
  const { results, uploads, liveLogs } = sharedFiles(config, store, logger, watch);
  const serverUrl = { current: config.publicUrl ?? localUrl(config.host, config.port) };
  const { registry, clusters, jobs } = wireJobs({
    config,
    store,
    logger,
    bus,
    keys,
    verifier,
    audit,
    watch,
    workflows,
    uploads,
    serverUrl,
    observeTransition,
  });
  const retention = new RetentionService({
    store,
    sharedDir: config.sharedDir,
    config: config.retention,
    audit,
    jobs,
    metrics,
    logger,
    clock,
  });
  const schedules = new ScheduleService({ store, workflows, spaces, audit, clock });
  const channels = new NotificationChannels(config.notifications, `Steward/${STEWARD_VERSION}`);
  let openApi: Record<string, unknown> | undefined;
  const ctx: ServerContext = {
    config,
    store,
    bus,
    clusters: { registry, service: clusters },
    logger,
    audit,
    auth,
    sessions: new PortalSessions(auth, store, audit, config, options.clock),
    workflows,
    spaces,
    jobs,
    schedules,
    users: new UserAdmin({ store, audit, jobs, schedules }),
    results,
    uploads,
    liveLogs,
    watch,
    dask: new DaskWorkers({
      store,
      clusters: registry,
      signer: createOfferSigner(keys.privateKeyPem),
      logger,
      serverUrl: () => serverUrl.current,
      loadTimeoutMs: config.loadTimeoutMs,
    }),
    notifications: new NotificationService({
      store,
      audit,
      channels,
      maxRulesPerUser: config.notifications.maxRulesPerUser,
    }),
    retention,
    version: STEWARD_VERSION,
    openApiDocument: () => (openApi ??= buildOpenApiDocument(STEWARD_VERSION)),
  };
  return { ctx, generatedAdminPassword, serverUrl, channels };
}

/** The audit log, counting failed and throttled logins in the metrics. */
function meteredAudit(store: Store, logger: Logger, metrics: ServerMetrics): AuditLog {
  return new AuditLog(store, logger, (event) => {
    if (event.action === 'login.failed') metrics.countLoginFailure('rejected');
    else if (event.action === 'login.throttled') metrics.countLoginFailure('throttled');
  });
}

/** Results, logs and uploads live in the shared directory: any server may take an upload or a download. */
function sharedFiles(
  config: CompiledServerConfig,
  store: Store,
  logger: Logger,
  watch: JobWatch,
): { results: ResultFiles; uploads: UploadService; liveLogs: LiveLogs } {
  const results = new ResultFiles(store, config.sharedDir, config.resultLimitBytes, logger, {
    stepLogBytes: config.stepLogLimitBytes,
    previewCellBytes: config.preview.cellBytes,
    previewBytes: config.preview.responseBytes,
  });
  const uploads = new UploadService(store, config.sharedDir, config.uploads, logger);
  const liveLogs = new LiveLogs(store, config.sharedDir, watch, config.stepLogLimitBytes, logger);
  return { results, uploads, liveLogs };
}

/** What `wireJobs` builds the job service, the cluster registry and the cluster service over. */
interface JobWiring {
  config: CompiledServerConfig;
  store: Store;
  logger: Logger;
  bus: Bus;
  keys: { privateKeyPem: string; publicKeyPem: string };
  verifier: OfferVerifier;
  audit: AuditLog;
  watch: JobWatch;
  workflows: WorkflowRepository;
  uploads: UploadService;
  serverUrl: { current: string };
  observeTransition: ServerMetrics['observeTransition'];
}

/**
 * The job service, the cluster registry and the cluster service, which refer to one another: the registry's
 * event consumers and the cluster service reach the job service (built last) through closures.
 */
function wireJobs(wiring: JobWiring): {
  registry: ClusterRegistry;
  clusters: ClusterService;
  jobs: JobService;
} {
  const { config, store, logger, bus, keys, verifier, audit, watch, workflows, uploads, serverUrl } = wiring;
  const { observeTransition } = wiring;
  const signer = createOfferSigner(keys.privateKeyPem);
  // One consumer per attached cluster's bus (`local`: the server's own); offers go to the job's cluster.
  const registry: ClusterRegistry = new ClusterRegistry({
    store,
    logger,
    localBus: bus,
    consumerFor: (cluster, clusterBus) =>
      new EventConsumer({
        bus: clusterBus,
        store,
        jobs,
        watch,
        logger,
        verifier,
        cluster,
        observeTransition,
      }),
  });
  const clusters = new ClusterService({
    store,
    config,
    logger,
    audit,
    registry,
    keyFingerprint: publicKeyFingerprint(keys.publicKeyPem),
    publicKeyPem: keys.publicKeyPem,
    serverUrl: () => serverUrl.current,
    transition: () => jobs.transition,
  });
  const jobs: JobService = new JobService({
    store,
    clusters: registry,
    admit: (cluster, labels) => clusters.admit(cluster, labels),
    signer,
    workflows,
    audit,
    watch,
    config,
    logger,
    serverUrl: () => serverUrl.current,
    uploads,
    observeTransition,
  });
  return { registry, clusters, jobs };
}

/** The HTTP side: Fastify with the error handler, raw uploads, the portal, durable writes and every route. */
async function buildApp(ctx: ServerContext, portalDir: string): Promise<FastifyInstance> {
  const { config, store } = ctx;
  const fastifyLogger: FastifyBaseLogger = ctx.logger;
  const app: FastifyInstance = Fastify({
    loggerInstance: fastifyLogger,
    bodyLimit: config.bodyLimitBytes,
    // A result name of 255 bytes percent-encoded is up to 765 characters (Fastify's default is 100: a long
    // name's upload got 414 after all the job's steps had succeeded).
    routerOptions: { maxParamLength: MAX_URL_PARAM_LENGTH },
    // Behind the admin's own proxies only: see ServerConfig.trustProxy.
    trustProxy: config.trustProxy === false ? false : [...config.trustProxy],
  });
  // Uploads arrive as raw streams; handlers stream them to disk (with their own size limit).
  app.removeContentTypeParser('text/plain');
  app.addContentTypeParser(['application/octet-stream', 'text/plain'], (_request, payload, done) =>
    done(null, payload),
  );
  app.setErrorHandler((error: FastifyError, request, reply) => {
    const failure = toStewardError(error);
    if (failure.status >= 500) request.log.error({ err: error }, failure.message);
    else request.log.debug({ err: error, code: failure.code }, failure.message);
    void reply.code(failure.status).send(failure.toJSON());
  });
  registerSecurityHeaders(app);
  await app.register(fastifyCookie);
  await registerPortal(app, portalDir);
  // A request that may have written is answered only once its writes are on disk (the store flushes commits
  // in groups; see Store.durable). Reads are answered at once.
  app.addHook('onSend', async (request, _reply, payload) => {
    if (request.method !== 'GET' && request.method !== 'HEAD') await store.durable();
    return payload;
  });
  registerRoutes(app, ctx, buildHandlers(ctx));
  return app;
}

/**
 * What runs beside the HTTP API: other servers' changes (RemoteChanges), the agents' events on every
 * attached cluster's bus, the recovery sweep with the clusters' reconcile, the upload janitor and the
 * notification dispatcher. `stop()` ends them in order.
 */
async function startBackground(
  ctx: ServerContext,
  {
    channels,
    serverUrl,
    metrics,
  }: { channels: NotificationChannels; serverUrl: { current: string }; metrics: ServerMetrics },
  options: Pick<CreateServerOptions, 'sweepIntervalMs' | 'scheduler' | 'clock'>,
): Promise<{ scheduler: Scheduler; stop(): Promise<void> }> {
  const { config, store, jobs, watch, logger, liveLogs, uploads } = ctx;
  const { registry } = ctx.clusters;
  const remote = new RemoteChanges(
    store,
    watch,
    logger,
    (jobId, log) => liveLogs.read(jobId, log),
    () => metrics.countStoreError('connection'),
  );
  await remote.start();
  try {
    await registry.start();
  } catch (error) {
    await remote.stop();
    throw error;
  }
  const sweepIntervalMs =
    options.sweepIntervalMs ??
    Math.min(15_000, Math.max(1000, Math.floor(Math.min(config.loadTimeoutMs, config.agentLeaseMs) / 4)));
  const sweeper = setInterval(() => {
    jobs.sweep().catch((error: unknown) => logger.error({ err: error }, 'recovery sweep failed'));
    registry.reconcile().catch((error: unknown) => logger.error({ err: error }, 'cluster reconcile failed'));
  }, sweepIntervalMs);
  sweeper.unref();
  uploads.start();
  ctx.retention.start();
  const dispatcher = new NotificationDispatcher({
    store,
    config: config.notifications,
    channels,
    logger,
    baseUrl: () => serverUrl.current,
  });
  dispatcher.start();
  const scheduler = new Scheduler({
    store,
    jobs,
    audit: ctx.audit,
    logger,
    clock: options.clock ?? Date.now,
    ...(options.scheduler?.misfireGraceMs !== undefined
      ? { misfireGraceMs: options.scheduler.misfireGraceMs }
      : {}),
  });
  if (options.scheduler?.enabled !== false) scheduler.start();
  return {
    scheduler,
    async stop() {
      clearInterval(sweeper);
      await scheduler.stop();
      uploads.stop();
      ctx.retention.stop();
      await dispatcher.stop();
      channels.close();
      await registry.close();
      await remote.stop();
    },
  };
}

/** Fastify's own errors (body too large, bad JSON, wrong content type) mapped onto the catalogue. */
function toStewardError(error: FastifyError): StewardError {
  if (error instanceof StewardError) return error;
  const status = error.statusCode;
  if (status === 413)
    return new StewardError('STEWARD_PAYLOAD_TOO_LARGE', 'request body exceeds the configured limit');
  if (status !== undefined && status >= 400 && status < 500) {
    return new StewardError('STEWARD_BAD_REQUEST', error.message, { details: { rule: error.code } });
  }
  return coerceError(error);
}

/**
 * The URL local executors use when no publicUrl is configured. A wildcard bind address is not a
 * destination, so it becomes the loopback address of the same family.
 */
function localUrl(host: string, port: number): string {
  const target = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `http://${target.includes(':') ? `[${target}]` : target}:${port}`;
}

/**
 * Long-running entry points behind `steward up`, `steward server` and `steward agent`. `up` is the whole
 * single-machine system in one process: server + embedded bus + local agent, the same code paths as the
 * distributed deployment with the bus swapped.
 */
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino, type Logger } from 'pino';
import {
  createAgent,
  type Agent,
  DailyLogFile,
  planCleanup,
  runCleanup,
  type CleanupItem,
} from '../agent/index.js';
import { AmqpBus, amqpBusOptions, EmbeddedBus, brokerAddress, type Bus } from '../bus/index.js';
import {
  compileAgentConfig,
  compileServerConfig,
  readConfigFile,
  type CompiledAgentConfig,
  type CompiledBusConfig,
  type CompiledServerConfig,
} from '../config/index.js';
import { fatalAgentChecks } from '../doctor/index.js';
import { StewardError, isErrorCode, parseDuration } from '../protocol/index.js';
import { createServer, ServerMetrics } from '../server/index.js';
import { secureDataDir, sqliteFiles } from './data-dir.js';

export interface UpOptions {
  host?: string;
  port?: number;
  dataDir?: string;
  config?: string;
  debug?: boolean;
}
export type ServerOptions = UpOptions;
export interface AgentOptions {
  config?: string;
  dataDir?: string;
  debug?: boolean;
}

interface FileConfig {
  server?: Record<string, unknown>;
  agent?: Record<string, unknown>;
}

export function loadFileConfig(file: string | undefined): FileConfig {
  const raw = readConfigFile(file);
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      `config file ${file}: expected a mapping with "server" and/or "agent"`,
    );
  }
  const unknown = Object.keys(raw).filter((key) => key !== 'server' && key !== 'agent');
  if (unknown.length > 0)
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      `config file ${file}: unknown key(s) ${unknown.join(', ')}`,
    );
  return raw;
}

function makeLogger(dataDir: string, level: string, debug: boolean, retentionDays = 90): Logger {
  const logDir = path.join(dataDir, 'logs');
  mkdirSync(logDir, { recursive: true, mode: 0o700 });
  // logs/steward-DATE.log, a new file each day, kept `retentionDays`; logs/steward.log links to today's.
  const streams: pino.StreamEntry[] = [
    { level: level as pino.Level, stream: new DailyLogFile(logDir, 'steward', retentionDays) },
  ];
  if (debug) streams.push({ level: 'debug', stream: process.stderr });
  return pino(
    { level: debug ? 'debug' : level, base: { pid: process.pid, host: os.hostname() } },
    pino.multistream(streams),
  );
}

const isRoot = process.getuid?.() === 0;

/**
 * Everything a daemon creates is private from its first byte (the store, its -wal and -shm, keys, logs,
 * results): the process umask is 077. Directories users must reach are given their mode explicitly
 * (workspaces.ts); executors set their own umask 077 anyway.
 */
function privateUmask(): void {
  process.umask(0o077);
}

/** The server's private files: the SQLite store (with its companions) and the signing key. */
function serverPrivateFiles(config: CompiledServerConfig): string[] {
  return [
    ...(config.store.kind === 'sqlite' && config.store.path !== undefined
      ? sqliteFiles(config.store.path)
      : []),
    config.signingKeyFile,
  ];
}

/**
 * Stops on SIGINT/SIGTERM. `stop` gets a signal that a second SIGINT/SIGTERM aborts: an agent draining for
 * `agent.stopGrace` stops waiting then.
 */
function onShutdown(stop: (interrupt: AbortSignal) => Promise<void>): void {
  let interrupt: AbortController | undefined;
  const handler = (signal: string): void => {
    if (interrupt) {
      if (!interrupt.signal.aborted) {
        process.stdout.write(`steward: ${signal} received again, stopping now…\n`);
        interrupt.abort();
      }
      return;
    }
    interrupt = new AbortController();
    process.stdout.write(`\nsteward: ${signal} received, stopping…\n`);
    stop(interrupt.signal)
      .catch((error: unknown) => process.stderr.write(`steward: error while stopping: ${String(error)}\n`))
      .finally(() => process.exit(0));
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  watchNpmLauncher(() => handler('SIGTERM (npx stopped)'));
}

/** The parent at start: read before the daemon starts, since npx may be stopped while it does. */
const launcherPid = process.ppid;

/**
 * `npx steward up` runs `npm exec`, which starts `sh -c steward …`, which starts this process. A SIGTERM to
 * npm is forwarded to that shell only: the shell exits and this process, orphaned, went on serving. So
 * under `npx steward` (npm sets `npm_command=exec` and `npm_lifecycle_script=steward`), the launcher going away counts as a SIGTERM: when the parent
 * changes (this process was re-parented), stop as on the signal. Started any other way (systemd, nohup, a
 * shell's `&`) nothing is watched: a daemon outliving the shell that started it is expected there.
 */
function watchNpmLauncher(stop: () => void): void {
  // npm exec names the command it ran; a daemon that merely inherited npm's environment (say, started by a
  // test run under `npx vitest`) is not watched.
  const command = process.env.npm_lifecycle_script
    ?.trim()
    .split(/\s+/)[0]
    ?.replace(/^['"]|['"]$/g, '');
  if (process.env.npm_command !== 'exec' || command !== 'steward') return;
  const timer = setInterval(() => {
    if (process.ppid === launcherPid) return;
    clearInterval(timer);
    stop();
  }, 500);
  timer.unref();
}

export async function runUp(options: UpOptions): Promise<void> {
  const file = loadFileConfig(options.config);
  const serverConfig = compileServerConfig({
    ...file.server,
    ...(options.host !== undefined ? { host: options.host } : {}),
    ...(options.port !== undefined ? { port: options.port } : {}),
    ...(options.dataDir !== undefined ? { dataDir: options.dataDir } : {}),
  });
  privateUmask();
  const agentConfig = compileAgentConfig(file.agent ?? {}, { dataDir: serverConfig.dataDir });
  if (serverConfig.bus.kind !== 'embedded' || file.agent?.bus !== undefined) {
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      '`steward up` runs its agent in-process on the embedded bus: remove "bus" from the config, or run `steward server` and `steward agent` for RabbitMQ',
    );
  }
  secureDataDir({
    dataDir: serverConfig.dataDir,
    reachableWorkspaceRoot: isRoot ? agentConfig.workspaceRoot : undefined,
    privateFiles: serverPrivateFiles(serverConfig),
  });
  await refuseOnFatalChecks(agentConfig, 'up');
  const logger = makeLogger(
    serverConfig.dataDir,
    serverConfig.logLevel,
    options.debug ?? false,
    agentConfig.logRetentionDays,
  );
  const metrics = new ServerMetrics();
  const bus = new EmbeddedBus({
    onHandlerError: (error, queue) => {
      metrics.countBusError('handler');
      logger.error({ err: error, queue }, 'bus handler failed');
    },
  });
  const server = await createServer({
    config: serverConfig,
    bus,
    logger,
    adminPassword: process.env.STEWARD_ADMIN_PASSWORD,
    metrics,
  });
  const { url } = await server.listen();
  const agent = createAgent({ config: agentConfig, bus, publicKeys: [server.publicKeyPem], logger });
  try {
    await agent.start();
  } catch (error) {
    await server.close();
    throw error;
  }
  onShutdown(async (interrupt) => {
    await agent.stop({ graceMs: agentConfig.stopGraceMs, interrupt });
    await server.close();
    await bus.close();
  });
  logger.info({ event: 'daemon.up', role: 'up', url, agentId: agentConfig.id }, 'Steward is up');
  const out = process.stdout;
  out.write(`Steward is up at ${url}\n`);
  out.write(`  data dir:   ${serverConfig.dataDir}\n`);
  out.write(`  store:      ${serverConfig.store.kind}\n`);
  out.write(`  bus:        embedded (single machine)\n`);
  out.write(
    `  agent:      ${agentConfig.id}, ${agentConfig.slots} slots, workspaces in ${agentConfig.workspaceRoot}\n`,
  );
  out.write(`  limits:     ${describeLimits(agent)}\n`);
  if (agent.isolation === 'per-user') {
    out.write(`  isolation:  per-user (jobs run as the submitting user's OS account)\n`);
  } else {
    const me = os.userInfo().username;
    out.write(
      `  isolation:  OFF — not running as root, so every job runs as ${me}. Start as root for per-user isolation.\n`,
    );
  }
  if (server.generatedAdminPassword) {
    out.write(
      `\nFirst start: created user "admin" with password\n\n    ${server.generatedAdminPassword}\n\n(shown once; set STEWARD_ADMIN_PASSWORD before the first start to choose it)\n`,
    );
  }
  out.write(`\nTry: steward login --server ${url} --user admin\n`);
}

/**
 * The agent checks without which jobs cannot run safely (`fatalAgentChecks`: the ACL tools, the workspace
 * root, the server's key): the first failure stops the start with one line, `steward doctor` shows them all.
 */
async function refuseOnFatalChecks(
  config: CompiledAgentConfig,
  role: 'agent' | 'up',
  serverPublicKeyFile?: string,
): Promise<void> {
  const failed = (await fatalAgentChecks(config, role, serverPublicKeyFile)).find(
    (check) => check.status === 'fail',
  );
  if (!failed) return;
  throw new StewardError(
    isErrorCode(failed.code) ? failed.code : 'STEWARD_CONFIG_INVALID',
    `${failed.id}: ${failed.detail}${failed.fix ? ` (fix: ${failed.fix})` : ''}; run \`steward doctor\` for every check`,
  );
}

function describeLimits(agent: Agent): string {
  const { memoryBytes, cpus } = agent.limits;
  const what = `${Math.round(memoryBytes / 1024 ** 2)} MiB memory, ${cpus} cpu per executor`;
  const { version, detail } = agent.cgroups;
  return version === 'none'
    ? `${what} — NOT enforced (no cgroups: ${detail})`
    : `${what}, enforced by cgroup ${version}`;
}

/** `amqp://host:5672 (vhost steward, user steward-agent)`, without credentials. */
function describeBus(bus: CompiledBusConfig): string {
  if (bus.kind !== 'amqp') return 'embedded';
  const urls = bus.urls.map(brokerAddress).join(', ');
  return `${urls} (vhost ${bus.vhost ?? 'from the URL'}, user ${bus.user ?? 'from the URL'})`;
}

/** The RabbitMQ bus from a compiled config, connected (with retries across the URLs). */
async function connectAmqp(
  config: CompiledBusConfig,
  logger: Logger,
  role: string,
  metrics?: ServerMetrics,
): Promise<Bus> {
  if (config.kind !== 'amqp') throw new Error('not an amqp bus config');
  const log = logger.child({ component: 'bus', role });
  const bus = new AmqpBus({
    ...amqpBusOptions(config),
    onHandlerError: (error, queue) => {
      metrics?.countBusError('handler');
      log.error({ err: error, queue }, 'bus handler failed');
    },
    onConnectionEvent: (event) => {
      // Never log a URL's credentials.
      const url = event.url?.replace(/\/\/[^@/]*@/, '//');
      // `event` names the record for tooling and tests; the message is for people and may change.
      if (event.type === 'connected')
        log.info({ event: 'bus.connected', url, queueType: bus.queueType }, 'connected to the broker');
      else {
        metrics?.countBusError('connection');
        if (event.type === 'dropped')
          log.warn({ event: 'bus.dropped' }, 'broker connection dropped; reconnecting');
        else if (event.type === 'refused') {
          log.error({ event: 'bus.refused', url, err: event.error }, 'the broker refused access');
          // At start the refusal reaches the caller of connect(), which reports it; on a reconnect nobody
          // waits for it, and retrying would loop on the same answer: say it once and stop.
          if (connectedOnce) stopOnRefusal(event.error);
        } else log.warn({ event: 'bus.failed', url, err: event.error }, 'broker connection failed');
      }
    },
  });
  let connectedOnce = false;
  await bus.connect();
  connectedOnce = true;
  return bus;
}

/** One line on stderr and exit 1: a broker refusal seen after start (credentials or permissions changed). */
function stopOnRefusal(error: unknown): never {
  const code = error instanceof StewardError ? error.code : 'STEWARD_BROKER_ACCESS_REFUSED';
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`steward: ${code}: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
  process.exit(1);
}

export async function runServer(options: ServerOptions): Promise<void> {
  const file = loadFileConfig(options.config);
  if (file.agent)
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      '`steward server` takes no "agent" section; use `steward up` for server + agent',
    );
  const config = compileServerConfig({
    ...file.server,
    ...(options.host !== undefined ? { host: options.host } : {}),
    ...(options.port !== undefined ? { port: options.port } : {}),
    ...(options.dataDir !== undefined ? { dataDir: options.dataDir } : {}),
  });
  if (config.bus.kind !== 'amqp') {
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      '`steward server` reaches agents through RabbitMQ: set server.bus to {kind: amqp, urls: [...]} in the config, or use `steward up` (server + embedded bus + local agent)',
    );
  }
  privateUmask();
  secureDataDir({ dataDir: config.dataDir, privateFiles: serverPrivateFiles(config) });
  const logger = makeLogger(config.dataDir, config.logLevel, options.debug ?? false);
  const metrics = new ServerMetrics();
  const bus = await connectAmqp(config.bus, logger, 'server', metrics);
  let server;
  try {
    server = await createServer({
      config,
      bus,
      logger,
      adminPassword: process.env.STEWARD_ADMIN_PASSWORD,
      metrics,
    });
  } catch (error) {
    await bus.close();
    throw error;
  }
  // Agents verify offers with this key; they get it as a file (copied to their machines).
  const publicKeyFile = path.join(config.dataDir, 'keys', 'offer-signing.pub');
  mkdirSync(path.dirname(publicKeyFile), { recursive: true, mode: 0o700 });
  writeFileSync(publicKeyFile, server.publicKeyPem, { mode: 0o644 });
  // The public half is no secret (the keys dir is 0700 anyway); the umask must not narrow what admins copy.
  chmodSync(publicKeyFile, 0o644);
  const { url } = await server.listen();
  if (server.metricsUrl)
    logger.info({ event: 'metrics.listen', url: server.metricsUrl }, 'metrics listener is up');
  const running = server;
  onShutdown(async () => {
    await running.close();
    await bus.close();
  });
  logger.info({ event: 'daemon.up', role: 'server', url }, 'Steward server is up');
  const out = process.stdout;
  out.write(`Steward server is up at ${url}\n`);
  out.write(`  data dir:   ${config.dataDir}\n`);
  out.write(`  store:      ${config.store.kind}\n`);
  if (config.sharedDir !== config.dataDir) out.write(`  shared dir: ${config.sharedDir}\n`);
  out.write(`  bus:        amqp ${describeBus(config.bus)}\n`);
  out.write(`  offer key:  ${publicKeyFile} (give it to agents as serverPublicKeyFile)\n`);
  if (server.generatedAdminPassword) {
    out.write(
      `\nFirst start: created user "admin" with password\n\n    ${server.generatedAdminPassword}\n\n(shown once; set STEWARD_ADMIN_PASSWORD before the first start to choose it)\n`,
    );
  }
}

export interface CleanupOptions {
  config?: string;
  dataDir?: string;
  olderThan: string;
  dryRun?: boolean;
  json?: boolean;
}

/** `steward cleanup`: deletes (or with --dry-run lists) old job dirs and temp files in users' workspaces. */
export async function runCleanupCommand(options: CleanupOptions): Promise<number> {
  const file = loadFileConfig(options.config);
  const dataDir = path.resolve(
    options.dataDir ?? (typeof file.server?.dataDir === 'string' ? file.server.dataDir : '.steward'),
  );
  const agentConfig = compileAgentConfig(file.agent ?? {}, { dataDir });
  let olderThanMs: number;
  try {
    olderThanMs = parseDuration(options.olderThan);
  } catch (error) {
    throw new StewardError('STEWARD_BAD_REQUEST', `--older-than: ${(error as Error).message}`);
  }
  const items = await planCleanup(agentConfig.workspaceRoot, olderThanMs);
  const out = process.stdout;
  const line = (verb: string, item: CleanupItem): string =>
    `${verb}  ${item.kind.padEnd(7)}  ${item.user}  ${item.path}  (modified ${item.modifiedAt.toISOString()})\n`;
  if (options.dryRun) {
    if (options.json) out.write(`${JSON.stringify({ dryRun: true, items }, null, 2)}\n`);
    else {
      for (const item of items) out.write(line('would remove', item));
      out.write(
        `${items.length} entr${items.length === 1 ? 'y' : 'ies'} older than ${options.olderThan} in ${agentConfig.workspaceRoot} (dry run: nothing removed)\n`,
      );
    }
    return 0;
  }
  const report = await runCleanup(items);
  if (options.json) out.write(`${JSON.stringify(report, null, 2)}\n`);
  else {
    for (const item of report.removed) out.write(line('removed', item));
    for (const { item, error } of report.failed)
      process.stderr.write(`steward: could not remove ${item.path}: ${error}\n`);
    out.write(
      `removed ${report.removed.length}, failed ${report.failed.length}, in ${agentConfig.workspaceRoot}\n`,
    );
  }
  return report.failed.length > 0 ? 1 : 0;
}

export async function runAgent(options: AgentOptions): Promise<void> {
  const file = loadFileConfig(options.config);
  if (file.server)
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      '`steward agent` takes no "server" section; use `steward up` for server + agent',
    );
  const dataDir = path.resolve(options.dataDir ?? '.steward-agent');
  const config = compileAgentConfig(file.agent ?? {}, { dataDir });
  if (config.bus.kind !== 'amqp') {
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      '`steward agent` connects to the server through RabbitMQ: set agent.bus to {kind: amqp, urls: [...]} in the config',
    );
  }
  if (!config.serverPublicKey) {
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      "`steward agent` needs agent.serverPublicKey (inline, as `steward cluster agent-config` prints it) or agent.serverPublicKeyFile (the server's <dataDir>/keys/offer-signing.pub)",
    );
  }
  privateUmask();
  secureDataDir({
    dataDir,
    reachableWorkspaceRoot: isRoot ? config.workspaceRoot : undefined,
    privateFiles: [],
  });
  const keyFile = file.agent?.serverPublicKeyFile;
  await refuseOnFatalChecks(config, 'agent', typeof keyFile === 'string' ? keyFile : undefined);
  const logger = makeLogger(dataDir, 'info', options.debug ?? false, config.logRetentionDays);
  const bus = await connectAmqp(config.bus, logger, 'agent');
  const agent = createAgent({ config, bus, publicKeys: [config.serverPublicKey], logger });
  try {
    await agent.start();
  } catch (error) {
    await bus.close();
    throw error;
  }
  onShutdown(async (interrupt) => {
    await agent.stop({ graceMs: config.stopGraceMs, interrupt });
    await bus.close();
  });
  logger.info({ event: 'daemon.up', role: 'agent', agentId: config.id }, 'Steward agent is up');
  const out = process.stdout;
  out.write(`Steward agent ${config.id} is up\n`);
  out.write(`  bus:        amqp ${describeBus(config.bus)}\n`);
  out.write(`  slots:      ${config.slots}, labels: ${config.labels.join(', ') || '(none)'}\n`);
  out.write(`  workspaces: ${config.workspaceRoot}\n`);
  out.write(`  isolation:  ${agent.isolation}\n`);
  out.write(`  limits:     ${describeLimits(agent)}\n`);
}

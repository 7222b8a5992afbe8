/**
 * Long-running entry points behind `steward up`, `steward server` and `steward agent`. `up` is the whole
 * single-machine system in one process: server + embedded bus + local agent, the same code paths as the
 * distributed deployment with the bus swapped.
 */
import { mkdirSync, chmodSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino, type Logger } from 'pino';
import { Agent } from '../agent/index.js';
import { EmbeddedBus } from '../bus/index.js';
import { compileAgentConfig, compileServerConfig, readConfigFile } from '../config/index.js';
import { StewardError } from '../protocol/index.js';
import { createServer } from '../server/index.js';

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

function loadFileConfig(file: string | undefined): FileConfig {
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

function makeLogger(dataDir: string, level: string, debug: boolean): Logger {
  const logDir = path.join(dataDir, 'logs');
  mkdirSync(logDir, { recursive: true, mode: 0o700 });
  const streams: pino.StreamEntry[] = [
    {
      level: level as pino.Level,
      stream: pino.destination({ dest: path.join(logDir, 'steward.log'), mkdir: true, sync: false }),
    },
  ];
  if (debug) streams.push({ level: 'debug', stream: process.stderr });
  return pino(
    { level: debug ? 'debug' : level, base: { pid: process.pid, host: os.hostname() } },
    pino.multistream(streams),
  );
}

function prepareDataDir(dataDir: string): void {
  mkdirSync(dataDir, { recursive: true, mode: 0o755 });
  // Users' executors traverse it to reach their workspaces; everything sensitive inside is 0700.
  if (process.getuid?.() === 0) chmodSync(dataDir, 0o755);
}

function onShutdown(stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`\nsteward: ${signal} received, stopping…\n`);
    stop()
      .catch((error: unknown) => process.stderr.write(`steward: error while stopping: ${String(error)}\n`))
      .finally(() => process.exit(0));
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}

export async function runUp(options: UpOptions): Promise<void> {
  const file = loadFileConfig(options.config);
  const serverConfig = compileServerConfig({
    ...file.server,
    ...(options.host !== undefined ? { host: options.host } : {}),
    ...(options.port !== undefined ? { port: options.port } : {}),
    ...(options.dataDir !== undefined ? { dataDir: options.dataDir } : {}),
  });
  prepareDataDir(serverConfig.dataDir);
  const agentConfig = compileAgentConfig(file.agent ?? {}, { dataDir: serverConfig.dataDir });
  const logger = makeLogger(serverConfig.dataDir, serverConfig.logLevel, options.debug ?? false);
  const bus = new EmbeddedBus({
    onHandlerError: (error, queue) => logger.error({ err: error, queue }, 'bus handler failed'),
  });
  const server = await createServer({
    config: serverConfig,
    bus,
    logger,
    adminPassword: process.env.STEWARD_ADMIN_PASSWORD,
  });
  const { url } = await server.listen();
  const agent = new Agent({ config: agentConfig, bus, publicKeys: [server.publicKeyPem], logger });
  try {
    await agent.start();
  } catch (error) {
    await server.close();
    throw error;
  }
  onShutdown(async () => {
    await agent.stop();
    await server.close();
    await bus.close();
  });
  const out = process.stdout;
  out.write(`Steward is up at ${url}\n`);
  out.write(`  data dir:   ${serverConfig.dataDir}\n`);
  out.write(`  store:      ${serverConfig.store.kind}\n`);
  out.write(`  bus:        embedded (single machine)\n`);
  out.write(
    `  agent:      ${agentConfig.id}, ${agentConfig.slots} slots, workspaces in ${agentConfig.workspaceRoot}\n`,
  );
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

export async function runServer(options: ServerOptions): Promise<void> {
  const file = loadFileConfig(options.config);
  if (file.agent)
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      '`steward server` takes no "agent" section; use `steward up` for server + agent',
    );
  throw new StewardError(
    'STEWARD_CONFIG_INVALID',
    '`steward server` needs a RabbitMQ bus to reach agents on other machines, which is not available yet; use `steward up` (server + embedded bus + local agent)',
  );
}

export async function runAgent(_options: AgentOptions): Promise<void> {
  throw new StewardError(
    'STEWARD_CONFIG_INVALID',
    '`steward agent` connects to a server through RabbitMQ, which is not available yet; `steward up` runs a local agent with the embedded bus',
  );
}

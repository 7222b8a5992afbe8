/**
 * Test harness: a real `steward up` process on a free port with its own data dir, and the real CLI as child
 * processes with their own credentials dirs.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, chmod, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseLogRecords, readLogRecords, type LogRecord } from './logs.js';
import { until } from './wait.js';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const stewardBin = path.join(repoRoot, 'bin', 'steward.js');
export const isRoot = process.getuid?.() === 0;

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** A temp dir other users can traverse (executors reach their workspaces through it). */
export async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `steward-${prefix}-`));
  await chmod(dir, 0o755);
  return dir;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export class StewardInstance {
  child: ChildProcess | undefined;
  /** stdout and stderr together, for failure messages. */
  output = '';
  /** stderr only: with `--debug` in extraArgs, the daemon's pino records as JSON lines. */
  logText = '';
  url: string;
  /** The agent id this instance runs under unless its config names one (STEWARD_AGENT_ID). */
  readonly agentId = `up-${randomBytes(4).toString('hex')}`;

  constructor(
    readonly dataDir: string,
    readonly port: number,
    readonly adminPassword: string,
    readonly extraArgs: string[] = [],
    /** A command that runs `node steward up …` for us (e.g. inside a private mount namespace). */
    readonly launcher: string[] = [],
  ) {
    this.url = `http://127.0.0.1:${port}`;
  }

  static async start(
    options: { adminPassword?: string; extraArgs?: string[]; dataDir?: string; launcher?: string[] } = {},
  ): Promise<StewardInstance> {
    const instance = new StewardInstance(
      options.dataDir ?? (await tempDir('data')),
      await freePort(),
      options.adminPassword ?? 'admin-password-for-tests',
      options.extraArgs ?? [],
      options.launcher ?? [],
    );
    await instance.up();
    return instance;
  }

  async up(): Promise<void> {
    this.output = '';
    this.logText = '';
    const command = [
      process.execPath,
      stewardBin,
      'up',
      '--port',
      String(this.port),
      '--data-dir',
      this.dataDir,
      ...this.extraArgs,
    ];
    const [program, ...args] = [...this.launcher, ...command];
    const since = Date.now();
    const child = spawn(program!, args, {
      // One agent per id per host: each instance gets an id of its own (a config's agent.id still wins).
      env: { ...process.env, STEWARD_ADMIN_PASSWORD: this.adminPassword, STEWARD_AGENT_ID: this.agentId },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    child.stdout.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => {
      this.output += chunk.toString();
      this.logText += chunk.toString();
    });
    // Up: it answers, and its log has the `daemon.up` record of this start (written once agent and server run).
    await until(
      () => `steward up to answer within 30 s:\n${this.output}`,
      async () => {
        if (child.exitCode !== null)
          throw new Error(`steward up exited with ${child.exitCode}:\n${this.output}`);
        const health = await fetch(`${this.url}/api/health`).catch(() => undefined);
        if (!health?.ok) return false;
        const records = await readLogRecords(this.dataDir);
        return records.some((record) => record.event === 'daemon.up' && record.time >= since);
      },
      30_000,
      100,
    );
  }

  /** The structured records logged so far (started with `--debug`, which sends them to stderr). */
  logRecords(): LogRecord[] {
    return parseLogRecords(this.logText);
  }

  /** Waits for a record matching `match` and returns it. */
  waitForLog(what: string, match: (record: LogRecord) => boolean, timeoutMs = 30_000): Promise<LogRecord> {
    return until(`a log record: ${what}`, () => this.logRecords().find(match), timeoutMs);
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }

  async destroy(): Promise<void> {
    await this.stop();
    await rm(this.dataDir, { recursive: true, force: true });
  }
}

/** A CLI user: its own XDG config dir, so credentials never mix between users. */
export class CliUser {
  private constructor(
    readonly name: string,
    readonly configDir: string,
    private readonly server: string,
  ) {}

  static async create(name: string, server: string): Promise<CliUser> {
    return new CliUser(name, await mkdtemp(path.join(os.tmpdir(), `steward-cli-${name}-`)), server);
  }

  run(
    args: string[],
    options: { input?: string; env?: Record<string, string>; timeoutMs?: number; cwd?: string } = {},
  ): Promise<CliResult> {
    return new Promise((resolve) => {
      const child = execFile(
        process.execPath,
        [stewardBin, ...args],
        {
          cwd: options.cwd ?? repoRoot,
          env: {
            PATH: process.env.PATH ?? '/usr/bin:/bin',
            HOME: this.configDir,
            XDG_CONFIG_HOME: this.configDir,
            ...options.env,
          },
          timeout: options.timeoutMs ?? 120_000,
          maxBuffer: 64 * 1024 * 1024,
        },
        (error, stdout, stderr) => {
          const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
          resolve({ code, stdout: String(stdout), stderr: String(stderr) });
        },
      );
      if (options.input !== undefined) child.stdin!.end(options.input);
      else child.stdin!.end();
    });
  }

  async login(password: string): Promise<void> {
    const result = await this.run(
      ['login', '--server', this.server, '--user', this.name, '--password-stdin'],
      { input: password },
    );
    if (result.code !== 0) throw new Error(`login as ${this.name} failed: ${result.stderr}`);
  }

  async cleanup(): Promise<void> {
    await rm(this.configDir, { recursive: true, force: true });
  }
}

export function run(command: string, args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(command, args, (error, stdout, stderr) => {
      resolve({
        code: error ? (typeof error.code === 'number' ? error.code : 1) : 0,
        stdout: String(stdout),
        stderr: String(stderr),
      });
    });
  });
}

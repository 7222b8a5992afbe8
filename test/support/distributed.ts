/**
 * Distributed Steward for tests: a real `steward server` and real `steward agent` processes talking through
 * RabbitMQ (a fresh vhost on the machine's broker), each with its own config file, data dir and port.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { Job, JobDetail, LoginResponse } from '../../src/protocol/index.js';
import { brokerUrl, deleteVhost } from './rabbitmq.js';
import { freePort, stewardBin, tempDir } from './steward.js';
import { readLogRecords } from './logs.js';
import { until } from './wait.js';

export class Daemon {
  output = '';
  /** The agent id it runs under (agents only). */
  id = '';
  constructor(readonly child: ChildProcess) {
    child.stdout?.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
  }

  static start(args: string[], env: Record<string, string> = {}): Daemon {
    const child = spawn(process.execPath, [stewardBin, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new Daemon(child);
  }

  /** Waits for the daemon's `daemon.up` record (in DATA_DIR/logs) written since `since`. */
  async waitUntilUp(dataDir: string, since: number, timeoutMs = 30_000): Promise<void> {
    await until(
      () => `the daemon to be up within ${timeoutMs} ms:\n${this.output}`,
      async () => {
        if (this.child.exitCode !== null)
          throw new Error(`exited with ${this.child.exitCode}:\n${this.output}`);
        const records = await readLogRecords(dataDir);
        return records.some((record) => record.event === 'daemon.up' && record.time >= since);
      },
      timeoutMs,
    );
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }
}

export interface ClusterOptions {
  vhost: string;
  /** Broker URL; default the machine's broker. */
  url?: string;
  /** More bus settings for server and agents (`ca`, `cert`, `key`, `queueType`, …). */
  bus?: Record<string, unknown>;
  server?: Record<string, unknown>;
  adminPassword?: string;
}

export class Cluster {
  /** Agents by the name the test gave them (their ids carry this cluster's run tag). */
  readonly agents = new Map<string, Daemon>();
  /**
   * Makes agent ids unique per run: agents name their cgroups after their id, so two agents with one id on
   * this machine (a test's previous run, another engineer's) would kill each other's executors.
   */
  readonly runTag = randomBytes(3).toString('hex');
  server!: Daemon;
  url = '';
  token = '';
  private readonly dirs: string[] = [];

  private constructor(
    readonly options: ClusterOptions,
    readonly root: string,
  ) {}

  static async start(options: ClusterOptions): Promise<Cluster> {
    const cluster = new Cluster(options, await tempDir('cluster'));
    await cluster.startServer();
    return cluster;
  }

  get bus(): Record<string, unknown> {
    return {
      kind: 'amqp',
      urls: [this.options.url ?? brokerUrl],
      vhost: this.options.vhost,
      ...this.options.bus,
    };
  }

  get dataDir(): string {
    return path.join(this.root, 'server');
  }

  private async startServer(): Promise<void> {
    const port = await freePort();
    const config = path.join(this.root, 'server.yaml');
    await writeFile(config, stringify({ server: { bus: this.bus, ...this.options.server } }));
    const password = this.options.adminPassword ?? 'admin-password-for-tests';
    const since = Date.now();
    this.server = Daemon.start(
      ['server', '--config', config, '--port', String(port), '--data-dir', this.dataDir],
      { STEWARD_ADMIN_PASSWORD: password },
    );
    await this.server.waitUntilUp(this.dataDir, since);
    this.url = `http://127.0.0.1:${port}`;
    const login = await this.request('POST', '/api/auth/login', { user: 'admin', password });
    if (login.status !== 200) throw new Error(`login failed: ${JSON.stringify(login.json)}`);
    this.token = LoginResponse.parse(login.json).token;
  }

  /** The id an agent started as `name` runs under. */
  agentId(name: string): string {
    return `${name}-${this.runTag}`;
  }

  /** The directory of the agent started as `name` (its data dir: logs/, workspaces/). */
  agentDir(name: string): string {
    return path.join(this.root, `agent-${name}`);
  }

  async startAgent(name: string, agent: Record<string, unknown>): Promise<Daemon> {
    const id = this.agentId(name);
    const dir = this.agentDir(name);
    const config = path.join(this.root, `agent-${name}.yaml`);
    await writeFile(
      config,
      stringify({
        agent: {
          id,
          bus: this.bus,
          serverPublicKeyFile: path.join(this.dataDir, 'keys', 'offer-signing.pub'),
          workspaceRoot: path.join(dir, 'workspaces'),
          heartbeatInterval: '1s',
          ...agent,
        },
      }),
    );
    const since = Date.now();
    const daemon = Daemon.start(['agent', '--config', config, '--data-dir', dir]);
    daemon.id = id;
    this.agents.set(name, daemon);
    await daemon.waitUntilUp(dir, since);
    return daemon;
  }

  /** A request as the admin; the body is left for the caller to check (or parse with a protocol schema). */
  async request(method: string, url: string, body?: unknown): Promise<{ status: number; json: unknown }> {
    const response = await fetch(`${this.url}${url}`, {
      method,
      headers: {
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const text = await response.text();
    return { status: response.status, json: text ? JSON.parse(text) : undefined };
  }

  /** Pushes a workflow as the admin; throws with the server's answer unless it was stored (201). */
  async pushWorkflow(source: string): Promise<void> {
    const pushed = await this.request('POST', '/api/workflows', { source });
    if (pushed.status !== 201)
      throw new Error(`pushing a workflow: ${pushed.status} ${JSON.stringify(pushed.json)}`);
  }

  async submit(workflow: string, labels: string[] = []): Promise<string> {
    const response = await this.request('POST', '/api/jobs', { workflow, labels });
    if (response.status !== 201 && response.status !== 200)
      throw new Error(`submit failed: ${response.status} ${JSON.stringify(response.json)}`);
    return Job.parse(response.json).id;
  }

  /** The job's detail, parsed with the protocol's schema. */
  async job(id: string): Promise<JobDetail> {
    const response = await this.request('GET', `/api/jobs/${id}`);
    if (response.status !== 200)
      throw new Error(`job ${id}: ${response.status} ${JSON.stringify(response.json)}`);
    return JobDetail.parse(response.json);
  }

  /** Waits until the job satisfies `check` (its detail as the API gives it); returns that detail. */
  async waitForJob(
    id: string,
    what: string,
    check: (job: JobDetail) => boolean,
    timeoutMs = 30_000,
  ): Promise<JobDetail> {
    let job: JobDetail | undefined;
    return until(
      () => `${what}: ${JSON.stringify(job)}`,
      async () => {
        const current = await this.job(id);
        job = current;
        return check(current) && current;
      },
      timeoutMs,
    );
  }

  /** Waits until one of the jobs satisfies `check`; returns it. */
  async waitForAnyJob(
    ids: string[],
    what: string,
    check: (job: JobDetail) => boolean,
    timeoutMs = 30_000,
  ): Promise<JobDetail> {
    return until(
      what,
      async () => (await Promise.all(ids.map((id) => this.job(id)))).find(check),
      timeoutMs,
      20,
    );
  }

  /** Waits until every job is in a terminal state; returns them. */
  /** Waits until the job is in a terminal state; returns it. */
  async settleOne(id: string, timeoutMs = 60_000): Promise<JobDetail> {
    const [job] = await this.settle([id], timeoutMs);
    return job!;
  }

  async settle(ids: string[], timeoutMs = 60_000): Promise<JobDetail[]> {
    const terminal = new Set(['succeeded', 'failed', 'canceled', 'expired', 'lost']);
    let jobs: JobDetail[] = [];
    const pending = () =>
      jobs.filter((job) => !terminal.has(job.state)).map((job) => `${job.id}:${job.state}`);
    return until(
      () => `jobs to settle: ${pending().slice(0, 10).join(' ')}`,
      async () => {
        jobs = await Promise.all(ids.map((id) => this.job(id)));
        return jobs.every((job) => terminal.has(job.state)) && jobs;
      },
      timeoutMs,
      200,
    );
  }

  async destroy(): Promise<void> {
    for (const agent of this.agents.values()) await agent.stop();
    await this.server?.stop();
    for (const dir of [this.root, ...this.dirs]) await rm(dir, { recursive: true, force: true });
  }
}

/** The end of a distributed test file: its cluster's processes and directories, OS users, and vhost. */
export async function tearDownCluster(
  cluster: Cluster | undefined,
  osUsers: { cleanup(): Promise<void> },
  vhost: string,
): Promise<void> {
  await cluster?.destroy();
  await osUsers.cleanup();
  if (vhost) await deleteVhost(vhost);
}

/**
 * A private RabbitMQ node for fault tests: its own node name, ports, data (mnesia), logs, config and plugins
 * file in a temp dir, started in the foreground so the test can kill -9 it and start it again on the same
 * data. It shares the machine's epmd and root's Erlang cookie, with a node name of its own. With `tls`, it
 * also listens for amqps on a port of its own, and (by default) requires a client certificate.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import path from 'node:path';
import { freePort, tempDir } from './steward.js';
import { until } from './wait.js';

/** Debian's server script (the /usr/sbin wrapper switches to the rabbitmq user; this one runs as us). */
function serverScript(): string {
  const debian = '/usr/lib/rabbitmq/bin/rabbitmq-server';
  return process.env.STEWARD_TEST_RABBITMQ_SERVER ?? (existsSync(debian) ? debian : 'rabbitmq-server');
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export interface BrokerTls {
  /** PEM file paths: the CA that signs client certificates, and the broker's own certificate and key. */
  ca: string;
  cert: string;
  key: string;
  /** Refuse clients without a certificate signed by `ca`. Default true. */
  requireClientCertificate?: boolean;
}

export class PrivateBroker {
  child: ChildProcess | undefined;
  output = '';
  /** The amqps port when started with `tls`. */
  tlsPort: number | undefined;

  private constructor(
    readonly dir: string,
    readonly port: number,
    readonly distPort: number,
    readonly nodeName: string,
  ) {}

  get url(): string {
    return `amqp://guest:guest@127.0.0.1:${this.port}`;
  }

  get tlsUrl(): string {
    if (this.tlsPort === undefined) throw new Error('this broker has no TLS listener');
    return `amqps://guest:guest@127.0.0.1:${this.tlsPort}`;
  }

  static async create(options: { tls?: BrokerTls } = {}): Promise<PrivateBroker> {
    const dir = await tempDir('rabbit');
    const broker = new PrivateBroker(
      dir,
      await freePort(),
      await freePort(),
      `steward-test-${randomBytes(3).toString('hex')}@localhost`,
    );
    await mkdir(path.join(dir, 'log'));
    await writeFile(path.join(dir, 'enabled_plugins'), '[].\n');
    await writeFile(path.join(dir, 'env.conf'), '');
    const conf = [`listeners.tcp.default = 127.0.0.1:${broker.port}`, 'loopback_users = none'];
    if (options.tls) {
      broker.tlsPort = await freePort();
      const verify = options.tls.requireClientCertificate ?? true;
      conf.push(
        `listeners.ssl.default = 127.0.0.1:${broker.tlsPort}`,
        `ssl_options.cacertfile = ${options.tls.ca}`,
        `ssl_options.certfile = ${options.tls.cert}`,
        `ssl_options.keyfile = ${options.tls.key}`,
        `ssl_options.verify = ${verify ? 'verify_peer' : 'verify_none'}`,
        `ssl_options.fail_if_no_peer_cert = ${verify ? 'true' : 'false'}`,
      );
    }
    await writeFile(path.join(dir, 'rabbitmq.conf'), `${conf.join('\n')}\n`);
    return broker;
  }

  async start(timeoutMs = 60_000): Promise<void> {
    const dir = this.dir;
    this.output = '';
    const child = spawn(serverScript(), [], {
      cwd: dir,
      env: {
        ...process.env,
        RABBITMQ_NODENAME: this.nodeName,
        RABBITMQ_NODE_PORT: String(this.port),
        RABBITMQ_DIST_PORT: String(this.distPort),
        RABBITMQ_MNESIA_BASE: path.join(dir, 'mnesia'),
        RABBITMQ_LOG_BASE: path.join(dir, 'log'),
        RABBITMQ_ENABLED_PLUGINS_FILE: path.join(dir, 'enabled_plugins'),
        RABBITMQ_CONFIG_FILE: path.join(dir, 'rabbitmq.conf'),
        RABBITMQ_CONF_ENV_FILE: path.join(dir, 'env.conf'),
        RABBITMQ_PID_FILE: path.join(dir, 'pid'),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: whatever the start script leaves running (the Erlang VM, epmd's children)
      // goes down with the group in kill().
      detached: true,
    });
    this.child = child;
    child.stdout.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    await until(
      () => `the broker to listen within ${timeoutMs} ms:\n${this.output}`,
      async () => {
        if (child.exitCode !== null) throw new Error(`broker exited with ${child.exitCode}:\n${this.output}`);
        return (await portOpen(this.port)) && (this.tlsPort === undefined || (await portOpen(this.tlsPort)));
      },
      timeoutMs,
      100,
    );
  }

  /**
   * kill -9 of the node: the start script's whole process group, and the VM named in the pid file (the
   * script does not always exec into the VM; a VM left behind would keep running after the test).
   */
  async kill(): Promise<void> {
    const child = this.child;
    const vm = Number(await readFile(path.join(this.dir, 'pid'), 'utf8').catch(() => ''));
    // Only while that pid is still this node's VM (a pid is reused once its process is gone).
    const cmdline =
      Number.isInteger(vm) && vm > 1 ? await readFile(`/proc/${vm}/cmdline`, 'utf8').catch(() => '') : '';
    if (cmdline.includes(this.nodeName.split('@')[0]!)) {
      try {
        process.kill(vm, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      child.kill('SIGKILL');
    }
    await exited;
  }

  async destroy(): Promise<void> {
    await this.kill();
    await rm(this.dir, { recursive: true, force: true });
  }
}

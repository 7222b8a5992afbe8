/**
 * The broker connection: failover over the configured URLs, jittered backoff, TLS, and one confirm channel
 * for publishing. Each connection in use has a generation number; a drop of generation n is acted on once,
 * and whatever was sent on it (publishes, consumers) is redone on the next one through `ConnectionHooks`.
 */
import amqp from 'amqplib';
import type { ChannelModel, ConfirmChannel, Options } from 'amqplib';
import { StewardError } from '../../protocol/index.js';

/** How to reach the broker (part of `AmqpBusOptions`). */
export interface ConnectionSettings {
  /** Broker URLs (`amqp://` or `amqps://`), tried in order on every (re)connect: failover. */
  urls: string[];
  /** Virtual host; overrides the one in the URLs when set. */
  vhost?: string;
  /** Credentials; override the ones in the URLs when set. */
  user?: string;
  password?: string;
  /** TLS (amqps): PEM contents of the CA certificate, client certificate and key. */
  ca?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Reconnect backoff: first delay and cap, in ms. Defaults 100 and 5000. */
  reconnectDelayMs?: number;
  reconnectMaxDelayMs?: number;
  /**
   * Connection events for the log: connected, dropped, failed (retried), and refused — the broker refused
   * the credentials, the vhost or the topology, which is not retried (see `brokerRefusal`).
   */
  onConnectionEvent?: (event: {
    type: 'connected' | 'dropped' | 'failed' | 'refused';
    url?: string;
    error?: unknown;
  }) => void;
}

/** What the bus does at each turn of a connection's life. */
export interface ConnectionHooks {
  /** A fresh connection, before it is used: learn the queue type and declare the topology. */
  prepare(connection: ChannelModel): Promise<void>;
  /** The connection is in use: send what waits, consume again. */
  opened(connection: ChannelModel, generation: number): Promise<void>;
  /** The connection in use is gone; the broker took back every unsettled delivery. */
  dropped(): void;
  /** The bus closed. */
  closed(): void;
}

const UNTRUSTED_CERTIFICATE = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
]);

/**
 * A connection failure as an admin can act on it: TLS trust and name problems say which setting to look at;
 * anything else is passed on unchanged. Never includes the URL's credentials.
 */
export function describeConnectError(url: string, error: unknown): unknown {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return error;
  let where = url;
  try {
    const parsed = new URL(url);
    where = `${parsed.protocol}//${parsed.host}`;
  } catch {
    // keep the URL as given
  }
  const detail = `${code}: ${(error as Error).message}`;
  let message: string | undefined;
  if (UNTRUSTED_CERTIFICATE.has(code))
    message = `TLS: the broker at ${where} presented a certificate that the configured CA (bus.ca) did not sign (${detail})`;
  else if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID')
    message = `TLS: the broker at ${where} presented a certificate outside its validity period (${detail})`;
  else if (code === 'ERR_TLS_CERT_ALTNAME_INVALID')
    message = `TLS: the broker's certificate does not name the host in ${where} (${detail})`;
  else if (/^ERR_SSL_.*ALERT/.test(code))
    message = `TLS: the broker at ${where} refused the handshake; does it require a client certificate (bus.cert, bus.key) signed by a CA it trusts? (${detail})`;
  if (!message) return error;
  return Object.assign(new Error(message, { cause: error }), { code });
}

/**
 * amqplib hands the socket one frame (or one small message) per write, each its own system call even when a
 * dozen are ready at once — a burst's publishes and acks, a batch of events. Its multiplexer writes out
 * everything ready in one synchronous pass: corking the socket around that pass makes it one `writev`.
 * Looked up defensively on amqplib's connection; if its internals change, writes simply stay as they were.
 */
function coalesceWrites(model: ChannelModel): void {
  const connection = (model as unknown as { connection?: { muxer?: unknown; stream?: unknown } }).connection;
  const muxer = connection?.muxer as { _readIncoming?: () => void } | undefined;
  const socket = connection?.stream as { cork?: () => void; uncork?: () => void } | undefined;
  const pass = muxer?._readIncoming;
  if (!muxer || typeof pass !== 'function' || typeof socket?.cork !== 'function' || !socket.uncork) return;
  muxer._readIncoming = function corked(this: unknown): void {
    socket.cork!();
    try {
      pass.call(this);
    } finally {
      socket.uncork!();
    }
  };
}

export function connectOptions(settings: ConnectionSettings, url: string): string | Options.Connect {
  const { vhost, user, password } = settings;
  if (vhost === undefined && user === undefined && password === undefined) return url;
  const parsed = new URL(url);
  return {
    protocol: parsed.protocol.replace(':', ''),
    hostname: parsed.hostname,
    port: parsed.port ? Number(parsed.port) : parsed.protocol === 'amqps:' ? 5671 : 5672,
    username: user ?? (decodeURIComponent(parsed.username) || 'guest'),
    password: password ?? (decodeURIComponent(parsed.password) || 'guest'),
    vhost: vhost ?? (decodeURIComponent(parsed.pathname.slice(1)) || '/'),
    heartbeat: 10,
  };
}

export function socketOptions(settings: ConnectionSettings): Record<string, unknown> {
  const { ca, cert, key } = settings;
  // Nagle's algorithm would hold a small frame (a publish, an ack) back until the previous one is
  // acknowledged: tens of ms added to every round trip of a request/confirm protocol.
  const tls: Record<string, unknown> = { noDelay: true };
  if (ca) tls.ca = [ca];
  if (cert) tls.cert = cert;
  if (key) tls.key = key;
  return tls;
}

export class BrokerConnection {
  /** The connection in use and its confirm channel; both undefined while (re)connecting. */
  model: ChannelModel | undefined;
  publisher: ConfirmChannel | undefined;
  /** Generation of the connection in use (or of the last one). */
  generation = 0;
  closed = false;
  private connecting: Promise<void> | undefined;
  private urlIndex = 0;
  /** Wake-ups of a backoff in progress (run by close()). */
  private waiters: Array<() => void> = [];

  constructor(
    private readonly settings: ConnectionSettings,
    private readonly hooks: ConnectionHooks,
  ) {
    if (settings.urls.length === 0) throw new Error('AmqpBus: at least one broker URL is required');
  }

  ensureConnected(): Promise<void> {
    if (this.closed) return Promise.reject(new Error('bus is closed'));
    if (this.model) return Promise.resolve();
    this.connecting ??= this.connectLoop().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const waiter of this.waiters.splice(0)) waiter();
    this.hooks.closed();
    const model = this.model;
    this.model = undefined;
    this.publisher = undefined;
    if (model) await model.close().catch(() => {});
  }

  private async connectLoop(): Promise<void> {
    const { urls } = this.settings;
    const cap = this.settings.reconnectMaxDelayMs ?? 5000;
    let delay = this.settings.reconnectDelayMs ?? 100;
    for (;;) {
      if (this.closed) throw new Error('bus is closed');
      const url = urls[this.urlIndex % urls.length]!;
      try {
        await this.open(url);
        return;
      } catch (error) {
        // A refusal is a configuration problem: retrying would loop forever, silently, on the same answer.
        const refusal = brokerRefusal(error);
        if (refusal !== undefined) {
          const refused = new StewardError(
            'STEWARD_BROKER_ACCESS_REFUSED',
            `the broker at ${brokerAddress(url)} ${refusal}`,
            { cause: error },
          );
          this.settings.onConnectionEvent?.({ type: 'refused', url, error: refused });
          throw refused;
        }
        this.settings.onConnectionEvent?.({ type: 'failed', url, error: describeConnectError(url, error) });
        this.urlIndex += 1;
        // A full round over the URLs failed: back off (jittered) before the next round.
        if (this.urlIndex % urls.length === 0) {
          await this.backOff(delay);
          delay = Math.min(cap, delay * 2);
        }
      }
    }
  }

  private backOff(delay: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, delay * (0.8 + Math.random() * 0.4));
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private async open(url: string): Promise<void> {
    const connection = await amqp.connect(connectOptions(this.settings, url), socketOptions(this.settings));
    coalesceWrites(connection);
    let ready = false;
    try {
      connection.on('error', () => {});
      await this.hooks.prepare(connection);
      const publisher = await connection.createConfirmChannel();
      publisher.on('error', () => {});
      if (this.closed) throw new Error('bus is closed');
      this.generation += 1;
      const generation = this.generation;
      this.model = connection;
      this.publisher = publisher;
      connection.on('close', () => this.onDrop(generation));
      // A publish the user's permissions refuse (the write regex missing the default exchange) closes the
      // publisher channel with 403, and reconnecting cannot help: say so once per connection.
      publisher.on('error', (error: unknown) => {
        const refusal = brokerRefusal(error);
        if (refusal === undefined || this.generation !== generation) return;
        const refused = new StewardError(
          'STEWARD_BROKER_ACCESS_REFUSED',
          `the broker at ${brokerAddress(url)} ${refusal}`,
          { cause: error },
        );
        this.settings.onConnectionEvent?.({ type: 'refused', url, error: refused });
      });
      publisher.on('close', () => {
        // The publisher channel alone can fail (e.g. a publish to an exchange that vanished): reconnect.
        if (this.generation === generation && this.model) void this.model.close().catch(() => {});
      });
      ready = true;
      this.settings.onConnectionEvent?.({ type: 'connected', url });
      await this.hooks.opened(connection, generation);
    } finally {
      if (!ready) await connection.close().catch(() => {});
    }
  }

  private onDrop(generation: number): void {
    if (generation !== this.generation) return;
    this.model = undefined;
    this.publisher = undefined;
    this.hooks.dropped();
    if (this.closed) return;
    this.settings.onConnectionEvent?.({ type: 'dropped' });
    void this.ensureConnected().catch(() => {});
  }
}

/** `amqp://host:port` of a broker URL, without its credentials. */
export function brokerAddress(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}`;
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//');
  }
}

/**
 * What the broker refused, when `error` is a refusal rather than a network failure: the login (AMQP 403
 * ACCESS_REFUSED in the handshake), the vhost (the broker closes the connection instead of opening the
 * vhost: no such vhost, or no permissions there), or an operation the topology needs (403 on a channel while
 * declaring). Undefined for anything else (refused connection, timeout, TLS), which is worth retrying.
 */
export function brokerRefusal(error: unknown): string | undefined {
  const message = error instanceof Error ? error.message : '';
  if (/Handshake terminated by server: 403/.test(message) || /Login was refused/.test(message))
    return 'refused the login: wrong user or password (bus.user, bus.passwordFile)';
  if (/Expected ConnectionOpenOk; got <ConnectionClose/.test(message) || /NOT_ALLOWED/.test(message))
    return 'refused access to the vhost: it does not exist, or the user has no permissions on it (rabbitmqctl set_permissions)';
  const code = (error as { code?: unknown } | null)?.code;
  if (code === 403 || /ACCESS_REFUSED/.test(message)) {
    const said = /ACCESS_REFUSED - (.*?)"?$/.exec(message)?.[1];
    return `refused an operation of the topology (check the user's permission regexes): ${said ?? message}`;
  }
  return undefined;
}

/**
 * Opens one connection to `url` with the configured credentials and closes it again: the broker answers
 * there and accepts the login and the vhost. Throws the connect error (see `brokerRefusal`) otherwise.
 */
export async function tryBrokerLogin(
  settings: ConnectionSettings,
  url: string,
  timeoutMs = 5_000,
): Promise<void> {
  const connection = await amqp.connect(connectOptions(settings, url), {
    ...socketOptions(settings),
    timeout: timeoutMs,
  });
  connection.on('error', () => {});
  await connection.close().catch(() => {});
}

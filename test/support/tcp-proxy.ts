/**
 * A TCP proxy between a client (an agent) and a server (the broker) that a fault test can cut: `cut()`
 * resets every open connection and stops listening, so reconnects are refused as with a dead network path;
 * `restore()` listens again on the same port.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { freePort } from './steward.js';

export class TcpProxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  /** Connections accepted since the proxy started (reconnects show here). */
  accepted = 0;

  private constructor(
    readonly port: number,
    readonly targetHost: string,
    readonly targetPort: number,
  ) {}

  static async start(target: { host?: string; port: number }): Promise<TcpProxy> {
    const proxy = new TcpProxy(await freePort(), target.host ?? '127.0.0.1', target.port);
    await proxy.listen();
    return proxy;
  }

  /** `url` with its host and port replaced by the proxy's. */
  rewrite(url: string): string {
    const parsed = new URL(url);
    parsed.hostname = '127.0.0.1';
    parsed.port = String(this.port);
    return parsed.toString().replace(/\/$/, '');
  }

  get cut(): boolean {
    return this.server === undefined;
  }

  /** Resets every connection through the proxy and refuses new ones until `restore()`. */
  async cutOff(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const socket of this.sockets) socket.resetAndDestroy();
    this.sockets.clear();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  async restore(): Promise<void> {
    if (!this.server) await this.listen();
  }

  async close(): Promise<void> {
    await this.cutOff();
  }

  private listen(): Promise<void> {
    const server = createServer((client) => {
      this.accepted += 1;
      const upstream = connect(this.targetPort, this.targetHost);
      this.sockets.add(client);
      this.sockets.add(upstream);
      const drop = (): void => {
        this.sockets.delete(client);
        this.sockets.delete(upstream);
        client.destroy();
        upstream.destroy();
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    this.server = server;
    return new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
  }
}

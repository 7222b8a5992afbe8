/**
 * A small TCP load balancer for HA tests: each connection goes to the next upstream in turn (so both servers
 * take work), and to another one when the chosen upstream refuses the connection (so a dead server is
 * skipped). When an upstream dies mid-connection the client's connection is cut too, as with a real proxy:
 * clients see a reset and must retry.
 */
import net from 'node:net';

export class FailoverProxy {
  private readonly sockets = new Set<net.Socket>();
  private next = 0;
  /** Connections each upstream took, by index. */
  readonly connections: number[];

  private constructor(
    private readonly server: net.Server,
    readonly upstreams: readonly { host: string; port: number }[],
    readonly port: number,
  ) {
    this.connections = upstreams.map(() => 0);
  }

  static async start(upstreams: { host: string; port: number }[], port = 0): Promise<FailoverProxy> {
    const holder: { proxy?: FailoverProxy } = {};
    const server = net.createServer((client) => holder.proxy?.accept(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    const address = server.address();
    holder.proxy = new FailoverProxy(
      server,
      upstreams,
      typeof address === 'object' && address ? address.port : port,
    );
    return holder.proxy;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private accept(client: net.Socket): void {
    this.track(client);
    client.pause();
    client.on('error', () => undefined);
    const first = this.next++ % this.upstreams.length;
    this.connect(client, first, 0);
  }

  private connect(client: net.Socket, index: number, tried: number): void {
    if (tried >= this.upstreams.length || client.destroyed) {
      client.destroy();
      return;
    }
    const target = this.upstreams[index]!;
    const upstream = net.connect(target.port, target.host);
    this.track(upstream);
    let connected = false;
    upstream.once('connect', () => {
      connected = true;
      this.connections[index] = (this.connections[index] ?? 0) + 1;
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
    upstream.on('error', () => {
      // Refused before anything was sent: the client never knows, try the next upstream.
      if (!connected) this.connect(client, (index + 1) % this.upstreams.length, tried + 1);
      else client.destroy();
    });
    upstream.on('close', () => {
      if (connected) client.destroy();
    });
    client.on('close', () => upstream.destroy());
  }

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }
}

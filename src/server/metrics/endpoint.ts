/**
 * `GET /metrics`: on the API's listener behind a bearer token, or on a listener of its own
 * (`server.metrics.listen`), with the token too when one is set. When metrics are off, or served elsewhere,
 * the API answers `/metrics` with 404 (the portal would otherwise answer it with its page).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { CompiledMetricsConfig } from '../../config/index.js';
import { StewardError } from '../../protocol/index.js';
import type { ServerMetrics } from './registry.js';

export const METRICS_PATH = '/metrics';

/** Whether `authorization` carries the expected bearer token (compared in constant time). */
export function bearerMatches(authorization: string | undefined, token: string): boolean {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
  if (!match) return false;
  const digest = (text: string): Buffer => createHash('sha256').update(text).digest();
  return timingSafeEqual(digest(match[1]!), digest(token));
}

/** Registers `/metrics` on the API's own Fastify instance (served there, or 404). */
export function registerMetricsRoute(
  app: FastifyInstance,
  metrics: ServerMetrics,
  config: CompiledMetricsConfig | undefined,
): void {
  app.get(METRICS_PATH, async (request, reply) => {
    if (config === undefined || config.listen !== undefined || config.token === undefined)
      throw new StewardError(
        'STEWARD_NOT_FOUND',
        config === undefined
          ? 'metrics are off on this server (server.metrics)'
          : 'metrics are served on their own address (server.metrics.listen)',
      );
    if (!bearerMatches(request.headers.authorization, config.token)) {
      void reply.header('www-authenticate', 'Bearer realm="steward-metrics"');
      throw new StewardError('STEWARD_UNAUTHENTICATED', 'metrics need the bearer token of server.metrics');
    }
    const text = await metrics.render();
    return reply.header('content-type', metrics.contentType).header('cache-control', 'no-store').send(text);
  });
}

/** The separate metrics listener (`server.metrics.listen`); answers only `GET /metrics`. */
export class MetricsListener {
  private server: Server | undefined;

  constructor(
    private readonly metrics: ServerMetrics,
    private readonly config: CompiledMetricsConfig & { listen: { host: string; port: number } },
    private readonly logger: Logger,
  ) {}

  /** Starts listening; resolves with the URL of `/metrics`. */
  async start(): Promise<string> {
    const server = createServer((request, response) => {
      this.handle(request, response).catch((error: unknown) => {
        this.logger.error({ err: error }, 'metrics scrape failed');
        if (!response.headersSent) response.writeHead(500, { 'content-type': 'text/plain' });
        response.end('metrics unavailable\n');
      });
    });
    this.server = server;
    const { host, port } = this.config.listen;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address();
    const bound = address && typeof address === 'object' ? address.port : port;
    return `http://${host.includes(':') ? `[${host}]` : host}:${bound}${METRICS_PATH}`;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://metrics');
    if (url.pathname !== METRICS_PATH || (request.method !== 'GET' && request.method !== 'HEAD')) {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('not found: only GET /metrics\n');
      return;
    }
    const { token } = this.config;
    if (token !== undefined && !bearerMatches(request.headers.authorization, token)) {
      response
        .writeHead(401, {
          'content-type': 'text/plain',
          'www-authenticate': 'Bearer realm="steward-metrics"',
        })
        .end('metrics need the bearer token of server.metrics\n');
      return;
    }
    const text = await this.metrics.render();
    response.writeHead(200, { 'content-type': this.metrics.contentType, 'cache-control': 'no-store' });
    response.end(request.method === 'HEAD' ? undefined : text);
  }
}

/**
 * The CLI's only way to the server: `fetch` against the REST API described in src/protocol/api.ts.
 * `call('listJobs', …)` takes method, path and response schema from the route table (`apiRoutes`), so a
 * command names the route it uses ("go to definition" reaches the table and, from there, the handler) and
 * never spells a path. Responses are checked against the same zod schemas the server validates with, so
 * contract drift shows up as a clear error instead of `undefined` in a table. Every failure becomes a
 * `CliError` with a catalogue code.
 */
import { Readable } from 'node:stream';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import type { z } from 'zod';
import {
  apiRoutes,
  ErrorResponse,
  errorCatalogue,
  isErrorCode,
  type ApiRoute,
  type ApiRoutes,
  type ErrorCode,
  type RouteName,
} from '../protocol/index.js';
import { CliError } from './failures.js';
import { stripControl } from './output.js';

export interface ClientOptions {
  server: string;
  token: string | null;
  /** Writes request/response lines to stderr. */
  debug?: boolean;
}

export interface RequestOptions {
  body?: unknown;
  query?: Record<string, string | number | undefined>;
  /** Send without credentials (login). */
  anonymous?: boolean;
  signal?: AbortSignal;
  accept?: string;
  /**
   * Only for requests that are safe to send again (an idempotent submit): connection failures and gateway
   * errors (502, 504 — a load balancer whose server died) are retried with backoff for up to this long.
   * Reads are retried without it (see READ_RETRY_MS).
   */
  retryForMs?: number;
  /** A raw body (a file upload), sent as application/octet-stream with its length; not with `body`. */
  rawBody?: { open: () => Readable; length: number };
}

/** Gateway answers: the request may never have reached a Steward server. */
const GATEWAY_STATUSES: ReadonlySet<number> = new Set([502, 504]);

/**
 * Reads (GET, HEAD) change nothing, so they are sent again without being asked to when the answer says
 * another server may give a better one: a load balancer's 502/503/504 (its server died or none is ready), or
 * a connection that broke under the request. A refused or unresolvable connection fails at once: nothing is
 * there to take over.
 */
const READ_RETRY_MS = 10_000;
const READ_RETRY_STATUSES: ReadonlySet<number> = new Set([502, 503, 504]);
const BROKEN_CONNECTION: ReadonlySet<string> = new Set(['ECONNRESET', 'UND_ERR_SOCKET', 'EPIPE']);

/** The `:name` segments of a route path. */
type PathParamNames<Path extends string> = Path extends `${string}:${infer Param}/${infer Rest}`
  ? Param | PathParamNames<`/${Rest}`>
  : Path extends `${string}:${infer Param}`
    ? Param
    : never;

type RouteOf<N extends RouteName> = ApiRoutes[N];
type QueryValue = string | number | boolean | undefined;

/** What a call of route `N` takes: its path parameters, query and body, typed from the route table. */
export type CallOptions<N extends RouteName> = Omit<RequestOptions, 'body' | 'query'> &
  ([PathParamNames<RouteOf<N>['path']>] extends [never]
    ? { params?: never }
    : { params: Record<PathParamNames<RouteOf<N>['path']>, string> }) &
  (RouteOf<N> extends { query: infer Q extends z.ZodType }
    ? { query?: { [K in keyof z.input<Q>]?: QueryValue } }
    : { query?: never }) &
  (RouteOf<N> extends { body: infer B extends z.ZodType } ? { body: z.input<B> } : { body?: never });

/** A route with a JSON response schema answers with the parsed body; any other with the raw `Response`. */
export type CallResult<N extends RouteName> =
  RouteOf<N> extends { response: infer R extends z.ZodType } ? z.infer<R> : Response;

/** Arguments after the route name: optional when the route needs no path parameter and no body. */
type CallArgs<N extends RouteName> =
  object extends CallOptions<N> ? [options?: CallOptions<N>] : [options: CallOptions<N>];

/** The route's path with its `:name` segments filled in, each percent-encoded. */
export function routePath(route: Pick<ApiRoute, 'path'>, params: Record<string, string> = {}): string {
  return route.path.replace(/:(\w+)/g, (_match, name: string) => {
    const value = params[name];
    if (value === undefined) throw new Error(`route ${route.path}: no value for :${name}`);
    return encodeURIComponent(value);
  });
}

export class ApiClient {
  constructor(readonly options: ClientOptions) {}

  get server(): string {
    return this.options.server;
  }

  /** Calls the route `name` of the route table; a JSON response is parsed with the route's schema. */
  async call<N extends RouteName>(name: N, ...[options]: CallArgs<N>): Promise<CallResult<N>> {
    const route: ApiRoute = apiRoutes[name];
    const { params, query, ...rest } = (options ?? {}) as CallOptions<N> & {
      params?: Record<string, string>;
      query?: Record<string, QueryValue>;
    };
    const path = routePath(route, params);
    const request: RequestOptions = { ...rest, ...(query ? { query: queryStrings(query) } : {}) };
    if (route.response)
      return (await this.json(route.method, path, route.response, request)) as CallResult<N>;
    return (await this.send(route.method, path, request)) as CallResult<N>;
  }

  /** A JSON request whose success body must match `schema`. */
  async json<T extends z.ZodType>(
    method: string,
    path: string,
    schema: T,
    options: RequestOptions = {},
  ): Promise<z.infer<T>> {
    const response = await this.send(method, path, options);
    const text = await response.text();
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (error) {
      throw new CliError(
        'STEWARD_INTERNAL',
        `unexpected response from the server for ${method} ${path}: not JSON`,
        { cause: error },
      );
    }
    const result = schema.safeParse(body);
    if (!result.success) {
      const issue = result.error.issues[0];
      const where = issue ? `${issue.path.join('.') || '(body)'}: ${issue.message}` : 'schema mismatch';
      throw new CliError(
        'STEWARD_INTERNAL',
        `unexpected response from the server for ${method} ${path}: ${where}`,
        { cause: result.error },
      );
    }
    return result.data;
  }

  /** A request whose success body is not read here (downloads, event streams, 204s). */
  async send(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
    const read = method === 'GET' || method === 'HEAD';
    const deadline = Date.now() + (options.retryForMs ?? (read ? READ_RETRY_MS : 0));
    for (let delayMs = 200; ; delayMs = Math.min(delayMs * 2, 2000)) {
      try {
        return await this.sendOnce(method, path, options);
      } catch (error) {
        const retryable =
          error instanceof CliError &&
          (options.retryForMs !== undefined
            ? error.code === 'STEWARD_SERVER_UNREACHABLE' ||
              (error.httpStatus !== undefined && GATEWAY_STATUSES.has(error.httpStatus))
            : read &&
              ((error.code === 'STEWARD_SERVER_UNREACHABLE' &&
                BROKEN_CONNECTION.has(networkCode(error.cause) ?? '')) ||
                (error.httpStatus !== undefined && READ_RETRY_STATUSES.has(error.httpStatus))));
        const pause = delayMs * (0.5 + Math.random() / 2);
        if (!retryable || options.signal?.aborted || Date.now() + pause > deadline) throw error;
        this.debug(`! ${(error as Error).message}; retrying in ${Math.round(pause)} ms`);
        await new Promise((resolve) => setTimeout(resolve, pause));
      }
    }
  }

  private async sendOnce(method: string, path: string, options: RequestOptions): Promise<Response> {
    const url = new URL(this.options.server + path);
    for (const [key, value] of Object.entries(options.query ?? {})) {
      if (value !== undefined) url.searchParams.set(key, String(value));
    }
    const headers: Record<string, string> = { accept: options.accept ?? 'application/json' };
    if (!options.anonymous && this.options.token) headers.authorization = `Bearer ${this.options.token}`;
    if (options.body !== undefined) headers['content-type'] = 'application/json';
    if (options.rawBody !== undefined) {
      headers['content-type'] = 'application/octet-stream';
      headers['content-length'] = String(options.rawBody.length);
    }
    this.debug(`> ${method} ${url.toString()}`);
    let response: Response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body:
          options.rawBody !== undefined
            ? (Readable.toWeb(options.rawBody.open()) as ReadableStream<Uint8Array>)
            : options.body === undefined
              ? null
              : JSON.stringify(options.body),
        ...(options.rawBody !== undefined ? { duplex: 'half' } : {}),
        signal: options.signal ?? null,
      });
    } catch (error) {
      if (options.signal?.aborted) throw error;
      throw unreachable(this.options.server, error);
    }
    this.debug(`< ${response.status} ${response.statusText}`);
    if (!response.ok) throw await failureFrom(response, method, path, options.anonymous === true);
    return response;
  }

  /** Streams a response body (already checked to be 2xx) as a Node stream. */
  static bodyStream(response: Response): Readable {
    if (!response.body) return Readable.from([]);
    return Readable.fromWeb(response.body as NodeReadableStream<Uint8Array>);
  }

  private debug(line: string): void {
    if (this.options.debug) process.stderr.write(`${stripControl(line)}\n`);
  }
}

function queryStrings(query: Record<string, QueryValue>): Record<string, string | number | undefined> {
  return Object.fromEntries(
    Object.entries(query).map(([key, value]) => [key, typeof value === 'boolean' ? String(value) : value]),
  );
}

/** Network failures from undici hide the reason in `cause` (sometimes an AggregateError for IPv4+IPv6). */
export function unreachable(server: string, error: unknown): CliError {
  const code = networkCode(error);
  const reasons: Record<string, string> = {
    ECONNREFUSED: 'connection refused',
    ENOTFOUND: 'host not found',
    EAI_AGAIN: 'host name lookup failed',
    ETIMEDOUT: 'connection timed out',
    UND_ERR_CONNECT_TIMEOUT: 'connection timed out',
    ECONNRESET: 'connection reset',
    UND_ERR_SOCKET: 'connection closed',
    EHOSTUNREACH: 'host unreachable',
    ENETUNREACH: 'network unreachable',
    CERT_HAS_EXPIRED: 'TLS certificate expired',
    DEPTH_ZERO_SELF_SIGNED_CERT: 'self-signed TLS certificate',
    UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'TLS certificate not trusted',
  };
  const reason = code ? (reasons[code] ?? code) : innermostMessage(error);
  return new CliError('STEWARD_SERVER_UNREACHABLE', `cannot reach ${server} (${reason})`, { cause: error });
}

function innermostMessage(error: unknown): string {
  let current = error;
  while (current instanceof Error && current.cause instanceof Error) current = current.cause;
  return current instanceof Error ? current.message : 'network error';
}

function networkCode(error: unknown): string | undefined {
  const seen = new Set<unknown>();
  const queue: unknown[] = [error];
  while (queue.length > 0) {
    const current = queue.shift();
    if (current === null || typeof current !== 'object' || seen.has(current)) continue;
    seen.add(current);
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && code !== 'ERR_INVALID_ARG_TYPE') return code;
    queue.push((current as { cause?: unknown }).cause);
    if (current instanceof AggregateError) queue.push(...(current.errors as unknown[]));
  }
  return undefined;
}

const statusCodes: Partial<Record<number, ErrorCode>> = {
  400: 'STEWARD_BAD_REQUEST',
  401: 'STEWARD_UNAUTHENTICATED',
  403: 'STEWARD_FORBIDDEN',
  404: 'STEWARD_NOT_FOUND',
  409: 'STEWARD_CONFLICT',
  413: 'STEWARD_PAYLOAD_TOO_LARGE',
  503: 'STEWARD_UNAVAILABLE',
};

async function failureFrom(
  response: Response,
  method: string,
  path: string,
  anonymous: boolean,
): Promise<CliError> {
  const text = await response.text().catch(() => '');
  let code: ErrorCode = statusCodes[response.status] ?? 'STEWARD_INTERNAL';
  let message = `${method} ${path} answered HTTP ${response.status} ${response.statusText}`.trim();
  let details: Record<string, unknown> | undefined;
  try {
    const parsed = ErrorResponse.safeParse(JSON.parse(text));
    if (parsed.success) {
      code = parsed.data.error.code;
      message = parsed.data.error.message;
      details = parsed.data.error.details;
    } else {
      // A newer server may send a code this CLI does not know yet: still show it.
      const raw = (JSON.parse(text) as { error?: { code?: unknown; message?: unknown } }).error;
      if (raw && typeof raw.message === 'string') message = raw.message;
      if (raw && isErrorCode(raw.code)) code = raw.code;
    }
  } catch {
    // Not JSON (a proxy's HTML page): keep the status line.
  }
  if (!(code in errorCatalogue)) code = 'STEWARD_INTERNAL';
  const lines: string[] = [];
  if (code === 'STEWARD_UNAUTHENTICATED' && !anonymous) {
    message += ' (run `steward login --server URL --user NAME`, or set STEWARD_TOKEN)';
  }
  // A single issue is often the message itself: do not print it twice.
  for (const issue of validationIssues(details)) if (issue !== message) lines.push(issue);
  return new CliError(code, message, {
    lines,
    httpStatus: response.status,
    ...(details ? { details } : {}),
  });
}

/**
 * `details.issues` of a rejected request, one line each. Workflow problems carry `path` and `line`
 * (`steps.2.sql (line 14): unknown table "salez"`); request-schema problems carry `field` instead.
 */
function validationIssues(details: Record<string, unknown> | undefined): string[] {
  const issues = details?.issues;
  if (!Array.isArray(issues)) return [];
  return issues.map((issue: unknown) => {
    if (typeof issue === 'string') return issue;
    const fields = (issue ?? {}) as { path?: unknown; field?: unknown; line?: unknown; message?: unknown };
    const { line, message } = fields;
    const path = fields.path ?? fields.field;
    const where = [
      typeof path === 'string' && path !== '' ? path : null,
      typeof line === 'number' ? `(line ${line})` : null,
    ]
      .filter((part) => part !== null)
      .join(' ');
    const text = typeof message === 'string' ? message : JSON.stringify(issue);
    return where ? `${where}: ${text}` : text;
  });
}

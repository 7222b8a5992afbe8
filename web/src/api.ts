/**
 * The one way the portal talks to the server: same origin, the session cookie, and the CSRF token on every
 * state-changing request. Every failure becomes an `ApiError` with a code and a sentence, so each page can
 * show it in words; a failure to reach the server at all also flips the connection state that drives the
 * "server unreachable" banner.
 */

/** An error as the API reports it (`{ error: { code, message, details } }`), or one made up for the network. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

export const UNREACHABLE = 'STEWARD_SERVER_UNREACHABLE';

let csrfToken = '';
let onSignedOut: (() => void) | undefined;
/** Called when the server no longer knows the session (expired, revoked): back to the sign-in page. */
export function setSignedOutHandler(handler: () => void): void {
  onSignedOut = handler;
}
export function setCsrfToken(token: string): void {
  csrfToken = token;
}

type Listener = () => void;
const connectionListeners = new Set<Listener>();
let online = true;
let reconnects = 0;
let probe: ReturnType<typeof setTimeout> | undefined;

/** Whether the server answered the last request, and how many times it came back (pages refetch on it). */
export function connectionState(): { online: boolean; reconnects: number } {
  return { online, reconnects };
}
export function onConnectionChange(listener: Listener): () => void {
  connectionListeners.add(listener);
  return () => connectionListeners.delete(listener);
}

function setOnline(value: boolean): void {
  if (online === value) return;
  online = value;
  if (value) reconnects += 1;
  for (const listener of connectionListeners) listener();
  if (!value) scheduleProbe();
}

/** While offline, ask `/api/health` every 2 s; the first answer brings the portal back. */
function scheduleProbe(): void {
  if (probe) return;
  probe = setTimeout(() => {
    probe = undefined;
    fetch('/api/health', { cache: 'no-store' })
      .then((response) => {
        if (response.ok) setOnline(true);
        else scheduleProbe();
      })
      .catch(() => scheduleProbe());
  }, 2000);
}

/** Called by live streams that lost their connection: check whether the server is still there. */
export function reportStreamTrouble(): void {
  fetch('/api/health', { cache: 'no-store' })
    .then((response) => setOnline(response.ok))
    .catch(() => setOnline(false));
}

const unsafe = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export interface RequestOptions {
  method?: string;
  query?: Record<string, string | number | undefined | null>;
  json?: unknown;
  body?: Blob;
  contentType?: string;
}

export function buildUrl(path: string, query?: RequestOptions['query']): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null && value !== '') params.set(key, String(value));
  }
  const search = params.toString();
  return search ? `${path}?${search}` : path;
}

async function send(path: string, options: RequestOptions): Promise<Response> {
  const method = options.method ?? 'GET';
  const headers: Record<string, string> = { accept: 'application/json' };
  if (unsafe.has(method) && csrfToken) headers['x-csrf-token'] = csrfToken;
  let body: BodyInit | undefined;
  if (options.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(options.json);
  } else if (options.body) {
    headers['content-type'] = options.contentType ?? 'application/octet-stream';
    body = options.body;
  }
  let response: Response;
  try {
    response = await fetch(buildUrl(path, options.query), {
      method,
      headers,
      body,
      credentials: 'same-origin',
    });
  } catch {
    setOnline(false);
    throw new ApiError(0, UNREACHABLE, 'The server cannot be reached. Retrying in the background.');
  }
  // A proxy in front of a stopped server answers 502-504: the same thing for the user.
  if (response.status >= 502 && response.status <= 504) {
    setOnline(false);
    throw new ApiError(
      response.status,
      UNREACHABLE,
      `The server cannot be reached (HTTP ${response.status}).`,
    );
  }
  setOnline(true);
  if (response.status === 401 && path !== '/api/auth/session') onSignedOut?.();
  if (!response.ok) throw await toError(response);
  return response;
}

async function toError(response: Response): Promise<ApiError> {
  const text = await response.text().catch(() => '');
  try {
    const parsed = JSON.parse(text) as {
      error?: { code?: string; message?: string; details?: Record<string, unknown> };
    };
    if (parsed.error?.code) {
      return new ApiError(
        response.status,
        parsed.error.code,
        parsed.error.message ?? parsed.error.code,
        parsed.error.details ?? {},
      );
    }
  } catch {
    // not JSON: fall through
  }
  return new ApiError(response.status, `HTTP_${response.status}`, text.slice(0, 300) || response.statusText);
}

/** A JSON request; 204 answers resolve to `undefined`. */
export async function api<T>(path: string, options: RequestOptions = {}): Promise<T> {
  const response = await send(path, options);
  if (response.status === 204) return undefined as T;
  return (await response.json()) as T;
}

/** A request whose answer is text or bytes (logs, inline file results). */
export async function apiRaw(path: string, options: RequestOptions = {}): Promise<Response> {
  return send(path, options);
}

/** Turns anything thrown into words with a code, for display. */
export function describeError(error: unknown): { code: string; message: string } {
  if (error instanceof ApiError) return { code: error.code, message: error.message };
  if (error instanceof Error) return { code: 'STEWARD_PORTAL_ERROR', message: error.message };
  return { code: 'STEWARD_PORTAL_ERROR', message: String(error) };
}

export function encode(segment: string): string {
  return encodeURIComponent(segment);
}

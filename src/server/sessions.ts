/**
 * Portal browser sessions and the CSRF defence that cookies need.
 *
 * A session is a token row of kind `session` (the same table, expiry, revocation and disabled-user checks as
 * every other token): sign-out revokes it, disabling the user or changing the password revokes it, and it
 * ends `session.ttl` after sign-in (fixed, not sliding). Its secret travels only in the `steward_session`
 * cookie: HttpOnly (page scripts, and so an injected script, cannot read it), SameSite=Strict (browsers do
 * not send it with requests started by another site), Secure whenever the request came over https.
 *
 * SameSite is not the whole defence (older browsers, sibling subdomains count as the same site), so every
 * state-changing request authenticated by the cookie must also carry `X-CSRF-Token`, and must not come
 * from another origin. The token is an HMAC of the session secret: bound to the session, never stored, and
 * useless without the cookie; another site's page can neither read it nor set the header without a CORS
 * preflight this server never grants. Bearer tokens (the CLI) are not sent by browsers on their own, so
 * bearer requests need none of this.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { CompiledServerConfig } from '../config/index.js';
import { StewardError, type SessionInfo } from '../protocol/index.js';
import type { Clock, Store } from '../store/index.js';
import type { AuditLog } from './audit.js';
import type { Authenticator, Principal } from './auth.js';
import { iso } from './views.js';

export const SESSION_COOKIE = 'steward_session';
export const CSRF_HEADER = 'x-csrf-token';

const UNSAFE_METHODS: ReadonlySet<string> = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
/** `Sec-Fetch-Site` values of requests a page of this origin (or the user themself) started. */
const OWN_FETCH_SITES: ReadonlySet<string> = new Set(['same-origin', 'none']);

/** The CSRF token of a session: an HMAC keyed by the session secret, so it needs no storage. */
export function csrfTokenFor(secret: string): string {
  return createHmac('sha256', secret).update('steward-csrf-v1').digest('base64url');
}

/** The normalised origin of a URL (default port dropped), or undefined for `null` and non-URLs. */
function originOf(url: string): string | undefined {
  try {
    const origin = new URL(url).origin;
    return origin === 'null' ? undefined : origin;
  } catch {
    return undefined;
  }
}

export class PortalSessions {
  constructor(
    private readonly auth: Authenticator,
    private readonly store: Store,
    private readonly audit: AuditLog,
    private readonly config: CompiledServerConfig,
    private readonly clock: Clock = Date.now,
  ) {}

  /**
   * Resolves the caller of a `user`/`admin` route: a bearer header when present (CLI, scripts), else the
   * session cookie, with the CSRF checks for state-changing methods.
   */
  async authenticateRequest(request: FastifyRequest, source: string): Promise<Principal> {
    const secret = request.cookies[SESSION_COOKIE];
    if (request.headers.authorization !== undefined || !secret)
      return this.auth.authenticate(request.headers.authorization, source);
    const principal = await this.auth.authenticateSecret(secret, ['session'], source);
    if (UNSAFE_METHODS.has(request.method)) await this.checkCsrf(request, secret, principal.user, source);
    return principal;
  }

  /** `POST /api/auth/session`: signs in like `POST /api/auth/login` and sets the session cookie. */
  async signIn(
    request: FastifyRequest,
    reply: FastifyReply,
    credentials: { name: string; password: string },
    source: string,
  ): Promise<SessionInfo> {
    // A forged sign-in would put the victim's browser into the attacker's account ("login CSRF").
    await this.checkOrigin(request, credentials.name, source);
    const issued = await this.auth.login(credentials.name, credentials.password, source, {
      kind: 'session',
      ttlMs: this.config.session.ttlMs,
    });
    void reply.setCookie(SESSION_COOKIE, issued.token, {
      ...this.cookieOptions(request),
      expires: new Date(issued.expiresAt),
    });
    return {
      user: { name: issued.user, role: issued.role },
      csrfToken: csrfTokenFor(issued.token),
      expiresAt: iso(issued.expiresAt),
    };
  }

  /** `GET /api/auth/session`: the page-reload path. A stale cookie is cleared with the 401. */
  async current(request: FastifyRequest, reply: FastifyReply, source: string): Promise<SessionInfo> {
    const secret = request.cookies[SESSION_COOKIE];
    if (!secret) throw new StewardError('STEWARD_UNAUTHENTICATED', 'not signed in');
    let principal: Principal;
    try {
      principal = await this.auth.authenticateSecret(secret, ['session'], source);
    } catch (error) {
      if (error instanceof StewardError && error.code === 'STEWARD_UNAUTHENTICATED')
        void reply.clearCookie(SESSION_COOKIE, this.cookieOptions(request));
      throw error;
    }
    const token = await this.store.getToken(principal.tokenId);
    return {
      user: { name: principal.user, role: principal.role },
      csrfToken: csrfTokenFor(secret),
      expiresAt: iso(token?.expiresAt ?? this.clock()),
    };
  }

  /**
   * `DELETE /api/auth/session`: revokes the cookie's session (CSRF-checked, or any page could sign the user
   * out) and clears the cookie. Without a live session there is nothing to revoke: it only clears.
   */
  async signOut(request: FastifyRequest, reply: FastifyReply, source: string): Promise<void> {
    const secret = request.cookies[SESSION_COOKIE];
    let principal: Principal | undefined;
    if (secret) {
      try {
        principal = await this.auth.authenticateSecret(secret, ['session'], source);
      } catch (error) {
        if (!(error instanceof StewardError && error.code === 'STEWARD_UNAUTHENTICATED')) throw error;
      }
    }
    if (principal && secret) {
      await this.checkCsrf(request, secret, principal.user, source);
      await this.store.revokeToken(principal.user, principal.tokenId);
      await this.audit.record({ actor: principal.user, action: 'logout', target: principal.tokenId, source });
    }
    void reply.clearCookie(SESSION_COOKIE, this.cookieOptions(request));
  }

  private cookieOptions(request: FastifyRequest) {
    return {
      path: '/',
      httpOnly: true,
      sameSite: 'strict' as const,
      secure: request.protocol === 'https' || this.config.publicUrl?.startsWith('https:') === true,
    };
  }

  private async checkCsrf(request: FastifyRequest, secret: string, actor: string, source: string) {
    await this.checkOrigin(request, actor, source);
    const sent = request.headers[CSRF_HEADER];
    const expected = Buffer.from(csrfTokenFor(secret));
    const given = typeof sent === 'string' ? Buffer.from(sent) : undefined;
    if (!given || given.length !== expected.length || !timingSafeEqual(given, expected))
      await this.reject(request, actor, source, given ? 'wrong csrf token' : 'no csrf token');
  }

  /** A request a page of another origin started: its `Origin` (when sent) or `Sec-Fetch-Site` says so. */
  private async checkOrigin(request: FastifyRequest, actor: string, source: string): Promise<void> {
    const site = request.headers['sec-fetch-site'];
    if (typeof site === 'string' && !OWN_FETCH_SITES.has(site))
      await this.reject(request, actor, source, `sec-fetch-site ${site}`);
    const origin = request.headers.origin;
    if (origin !== undefined && !this.ownOrigins(request).has(originOf(origin) ?? ''))
      await this.reject(request, actor, source, 'foreign origin', origin);
  }

  /** This server's origin as the request reached it, and as `publicUrl` names it. */
  private ownOrigins(request: FastifyRequest): Set<string> {
    const origins = new Set<string>();
    for (const url of [`${request.protocol}://${request.host}`, this.config.publicUrl]) {
      const origin = url === undefined ? undefined : originOf(url);
      if (origin !== undefined) origins.add(origin);
    }
    return origins;
  }

  private async reject(
    request: FastifyRequest,
    actor: string,
    source: string,
    reason: string,
    origin?: string,
  ): Promise<never> {
    await this.audit.record({
      actor,
      action: 'csrf.refused',
      target: `${request.method} ${request.url.split('?')[0] ?? ''}`,
      source,
      detail: { reason, ...(origin !== undefined ? { origin: origin.slice(0, 200) } : {}) },
    });
    throw new StewardError(
      'STEWARD_CSRF_REJECTED',
      'refused: a request with the portal session cookie must come from the portal itself, with its X-CSRF-Token header (scripts: use a bearer token)',
    );
  }
}

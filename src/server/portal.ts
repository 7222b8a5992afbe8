/**
 * The web portal, served by the server itself at `/` (same origin as the API, so its session cookie and
 * CSRF token need no CORS), and the security headers every response carries.
 *
 * The portal is built from web/ into `dist/web/` next to the server's own code (`npm run build`). Every path
 * outside `/api/` is a file of that build or, for the portal's client-side routes, its index.html. Without
 * a build, `/` says so in plain text; the API works either way.
 */
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { StewardError } from '../protocol/index.js';

/**
 * The Content-Security-Policy of every response: scripts, styles, fonts and fetches from this origin only,
 * nothing inline, no plugins, no framing. Nothing a user controls can run as script even if it reached
 * the page as HTML.
 */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: blob:",
  "connect-src 'self'",
  "font-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

export const SECURITY_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'content-security-policy': CONTENT_SECURITY_POLICY,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
});

/** Where the built portal lives: `web/` beside this module's folder (`dist/server` → `dist/web`). */
export function defaultPortalDir(): string {
  return fileURLToPath(new URL('../web/', import.meta.url));
}

const NOT_BUILT =
  'The Steward web portal is not built on this server.\n\n' +
  'The REST API works (see /api/openapi.json and the steward CLI). To serve the portal, build it\n' +
  '(`npm run build` in the Steward source tree puts it in dist/web/) and restart the server.\n';

/** Vite puts the hashed (content-addressed) files here: they never change under their name. */
const ASSETS_PREFIX = '/assets/';

function isApiPath(urlPath: string): boolean {
  return urlPath === '/api' || urlPath.startsWith('/api/');
}

/**
 * Sets the security headers on the raw response before anything else runs, so they are on every answer:
 * JSON, errors, static files, and SSE streams that write their own head after `reply.hijack()`.
 */
export function registerSecurityHeaders(app: FastifyInstance): void {
  app.addHook('onRequest', (_request, reply, done) => {
    for (const [name, value] of Object.entries(SECURITY_HEADERS)) reply.raw.setHeader(name, value);
    done();
  });
}

/**
 * Serves the built portal from `dir` and answers everything no route matched: JSON 404 under `/api/`,
 * index.html (or the "not built" text) elsewhere.
 */
export async function registerPortal(app: FastifyInstance, dir: string): Promise<void> {
  const index = path.join(dir, 'index.html');
  const served = existsSync(dir) && statSync(dir).isDirectory();
  if (served) {
    await app.register(fastifyStatic, {
      root: dir,
      prefix: '/',
      wildcard: true,
      index: ['index.html'],
      redirect: false,
      dotfiles: 'ignore',
      cacheControl: false,
      setHeaders(res, filePath) {
        const hashed = path.relative(dir, filePath).startsWith(ASSETS_PREFIX.slice(1));
        res.setHeader('cache-control', hashed ? 'public, max-age=31536000, immutable' : 'no-cache');
      },
    });
  }
  app.setNotFoundHandler((request: FastifyRequest, reply: FastifyReply) => {
    const urlPath = request.url.split('?')[0] ?? '';
    const page = (request.method === 'GET' || request.method === 'HEAD') && !isApiPath(urlPath);
    if (!page) {
      return reply
        .code(404)
        .send(new StewardError('STEWARD_NOT_FOUND', `no route ${request.method} ${urlPath}`).toJSON());
    }
    // A missing hashed file is a 404, not the index page (a stale page asking for an old build's file).
    if (served && existsSync(index) && !urlPath.startsWith(ASSETS_PREFIX))
      return reply.code(200).header('cache-control', 'no-cache').sendFile('index.html');
    return reply
      .code(404)
      .header('cache-control', 'no-cache')
      .type('text/plain; charset=utf-8')
      .send(served && existsSync(index) ? `not found: ${urlPath}\n` : NOT_BUILT);
  });
}

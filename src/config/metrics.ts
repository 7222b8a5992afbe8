/**
 * `server.metrics`: the Prometheus endpoint (`GET /metrics`). Off unless the section is given; when on, it is
 * never open to whoever reaches the API port: it needs a bearer token (`token` or `tokenFile`), or a listener
 * of its own (`listen`, e.g. on a management interface), or both.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { StewardError } from '../protocol/index.js';
import { readSecretFile } from './read.js';

export const MetricsConfig = z
  .object({
    /** Default `true` when the section is present; `false` keeps the settings and turns the endpoint off. */
    enabled: z.boolean().default(true),
    /** The bearer token Prometheus sends (`Authorization: Bearer …`). At least 16 characters. */
    token: z.string().min(16, 'expected at least 16 characters').optional(),
    /** A file holding the token (first line; mode 0600 recommended). Not with `token`. */
    tokenFile: z.string().min(1).optional(),
    /**
     * Serve `/metrics` on this address instead of the API's (which then answers 404 there), e.g. a
     * management interface only the monitoring network reaches. Default: the API's own listener.
     */
    listen: z
      .object({
        host: z.string().refine((value) => isIP(value) !== 0, 'expected an IP address'),
        port: z.number().int().min(0).max(65535),
      })
      .strict()
      .optional(),
  })
  .strict();
export type MetricsConfig = z.input<typeof MetricsConfig>;

export interface CompiledMetricsConfig {
  /** The bearer token required, or undefined when only the separate listener protects the endpoint. */
  readonly token: string | undefined;
  /** The separate listener; undefined: `/metrics` on the API's listener (then `token` is set). */
  readonly listen: { readonly host: string; readonly port: number } | undefined;
}

/** Undefined when metrics are off (no section, or `enabled: false`). Takes the section as parsed. */
export function compileMetricsConfig(
  c: z.output<typeof MetricsConfig> | undefined,
): CompiledMetricsConfig | undefined {
  if (c === undefined || !c.enabled) return undefined;
  if (c.token !== undefined && c.tokenFile !== undefined)
    throw new StewardError('STEWARD_CONFIG_INVALID', 'server.metrics: give token or tokenFile, not both');
  let token = c.token;
  if (c.tokenFile !== undefined) {
    token = readSecretFile(c.tokenFile, 'server.metrics.tokenFile').split('\n')[0]!.trim();
    if (token.length < 16)
      throw new StewardError(
        'STEWARD_CONFIG_INVALID',
        `server.metrics.tokenFile: ${c.tokenFile} must hold a token of at least 16 characters`,
      );
  }
  if (token === undefined && c.listen === undefined)
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      'server.metrics: set token or tokenFile (Prometheus sends it as a bearer token), or listen (an address of its own); the endpoint is never open on the API port',
    );
  return Object.freeze({
    token,
    listen: c.listen === undefined ? undefined : Object.freeze({ host: c.listen.host, port: c.listen.port }),
  });
}

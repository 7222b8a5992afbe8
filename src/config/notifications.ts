/**
 * `server.notifications`: how job-end notifications are sent (SMTP for email, limits and retries for every
 * channel), compiled once. The SMTP password file is read here, so a wrong path fails at start.
 */
import { z } from 'zod';
import { Duration, StewardError } from '../protocol/index.js';
import { readSecretFile } from './read.js';

export const SmtpConfig = z
  .object({
    /** The mail server's host name. Required. */
    host: z.string().min(1),
    /** Default 465 with `secure`, else 587. */
    port: z.number().int().min(1).max(65535).optional(),
    /** TLS from the first byte (SMTPS, usually port 465). Default false. */
    secure: z.boolean().default(false),
    /**
     * Without `secure`: `required` (default) upgrades with STARTTLS or refuses to send; `opportunistic`
     * upgrades when the server offers it; `never` sends in clear (a relay on the same host only).
     */
    starttls: z.enum(['required', 'opportunistic', 'never']).default('required'),
    /** PEM file of the CA that signed the mail server's certificate. Default: Node's CAs. */
    caFile: z.string().min(1).optional(),
    /** The SMTP login; omitted: no authentication. */
    user: z.string().min(1).optional(),
    /** File holding the SMTP password (trailing newline ignored). Required with `user`. */
    passwordFile: z.string().min(1).optional(),
    /** The sender, e.g. `Steward <steward@example.org>`. Required. */
    from: z.string().min(3),
    /** Limit for one message (connect, TLS, login, send). Default `30s`. */
    timeout: Duration.default(30_000),
  })
  .strict();

export const NotificationsConfig = z
  .object({
    /** SMTP for `email` rules. Default: none (email rules are refused). */
    smtp: SmtpConfig.optional(),
    /** Most rules one user may have. Default 20. */
    maxRulesPerUser: z.number().int().min(1).max(100).default(20),
    /** Attempts of one delivery before it is given up (and audited). Default 10. */
    maxAttempts: z.number().int().min(1).max(50).default(10),
    /** Wait after the first failed attempt; doubles each time, with jitter. Default `30s`. */
    initialBackoff: Duration.default(30_000),
    /** Longest wait between attempts. Default `1h`. */
    maxBackoff: Duration.default(3_600_000),
    /** Limit for one webhook request, response included. Default `10s`. */
    webhookTimeout: Duration.default(10_000),
    /** How often each server looks for deliveries due. Default `2s`. */
    pollInterval: Duration.default(2000),
  })
  .strict();
export type NotificationsConfig = z.input<typeof NotificationsConfig>;

export interface CompiledSmtpConfig {
  readonly host: string;
  readonly port: number;
  readonly secure: boolean;
  readonly starttls: 'required' | 'opportunistic' | 'never';
  /** PEM text of `caFile`, if given. */
  readonly ca: string | undefined;
  readonly auth: { readonly user: string; readonly password: string } | undefined;
  readonly from: string;
  readonly timeoutMs: number;
}

export interface CompiledNotificationsConfig {
  readonly smtp: CompiledSmtpConfig | undefined;
  readonly maxRulesPerUser: number;
  readonly maxAttempts: number;
  readonly initialBackoffMs: number;
  readonly maxBackoffMs: number;
  readonly webhookTimeoutMs: number;
  readonly pollIntervalMs: number;
}

export const defaultNotificationsConfig: z.output<typeof NotificationsConfig> = {
  maxRulesPerUser: 20,
  maxAttempts: 10,
  initialBackoff: 30_000,
  maxBackoff: 3_600_000,
  webhookTimeout: 10_000,
  pollInterval: 2000,
};

export function compileNotificationsConfig(
  c: z.output<typeof NotificationsConfig>,
): CompiledNotificationsConfig {
  if (c.maxBackoff < c.initialBackoff)
    fail(`maxBackoff (${c.maxBackoff} ms) is shorter than initialBackoff (${c.initialBackoff} ms)`);
  return Object.freeze({
    smtp: c.smtp === undefined ? undefined : compileSmtp(c.smtp),
    maxRulesPerUser: c.maxRulesPerUser,
    maxAttempts: c.maxAttempts,
    initialBackoffMs: c.initialBackoff,
    maxBackoffMs: c.maxBackoff,
    webhookTimeoutMs: c.webhookTimeout,
    pollIntervalMs: c.pollInterval,
  });
}

function compileSmtp(c: z.output<typeof SmtpConfig>): CompiledSmtpConfig {
  if (c.user !== undefined && c.passwordFile === undefined) fail('smtp.user: needs smtp.passwordFile');
  if (c.user === undefined && c.passwordFile !== undefined) fail('smtp.passwordFile: needs smtp.user');
  if (c.secure && c.starttls !== 'required')
    fail('smtp.starttls: applies without smtp.secure only (secure is TLS from the start)');
  const password =
    c.passwordFile === undefined
      ? undefined
      : readSecretFile(c.passwordFile, 'server.notifications.smtp.passwordFile').replace(/\r?\n$/, '');
  if (password === '') fail(`smtp.passwordFile: ${c.passwordFile} is empty`);
  return Object.freeze({
    host: c.host,
    port: c.port ?? (c.secure ? 465 : 587),
    secure: c.secure,
    starttls: c.starttls,
    ca: c.caFile === undefined ? undefined : readSecretFile(c.caFile, 'server.notifications.smtp.caFile'),
    auth:
      c.user === undefined || password === undefined ? undefined : Object.freeze({ user: c.user, password }),
    from: c.from,
    timeoutMs: c.timeout,
  });
}

function fail(message: string): never {
  throw new StewardError('STEWARD_CONFIG_INVALID', `server config: notifications.${message}`);
}

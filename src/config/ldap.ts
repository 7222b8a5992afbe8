/**
 * `server.ldap` and `server.loginThrottle`: what admins write, compiled once into frozen options. Secrets
 * (the service account's password file) and the CA file are read here, so a wrong path fails at start, not
 * at the first login.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { Duration, StewardError } from '../protocol/index.js';

export const LdapConfig = z
  .object({
    /** `ldap://host:389` or `ldaps://host:636`. Required. */
    url: z.string().regex(/^ldaps?:\/\/[^/]+\/?$/, 'expected ldap://host[:port] or ldaps://host[:port]'),
    /** Upgrade an `ldap://` connection with StartTLS before binding. Default false. */
    startTls: z.boolean().default(false),
    /** PEM file of the CA that signed the directory's certificate (ldaps or StartTLS). Default: Node's CAs. */
    caFile: z.string().optional(),
    /** Whole-operation limit for one login or re-check (connect, binds, searches). Default `5s`. */
    timeout: Duration.default(5000),
    /** Service account for search-then-bind, e.g. `cn=steward,ou=services,dc=example,dc=org`. */
    bindDn: z.string().min(1).optional(),
    /** The service account's password (prefer `bindPasswordFile`). */
    bindPassword: z.string().min(1).optional(),
    /** File holding the service account's password (trailing newline ignored). */
    bindPasswordFile: z.string().min(1).optional(),
    /**
     * Direct bind instead of search-then-bind: the user's DN with `{user}` for the (DN-escaped) login name,
     * e.g. `uid={user},ou=people,dc=example,dc=org`.
     */
    userDnTemplate: z.string().includes('{user}').optional(),
    /** Where users are searched (search-then-bind). Required with `bindDn`. */
    userBase: z.string().min(1).optional(),
    /** Filter finding one user; `{user}` is replaced by the filter-escaped login name. */
    userFilter: z.string().includes('{user}').default('(&(objectClass=posixAccount)(uid={user}))'),
    /** Attribute holding the Steward user name. Default `uid`. */
    userNameAttribute: z.string().min(1).default('uid'),
    groups: z
      .object({
        /**
         * `memberOf`: the user entry's memberOf attribute (OpenLDAP memberof overlay, Active Directory).
         * `search`: groups under `base` matching `filter`. Default `memberOf`.
         */
        mode: z.enum(['memberOf', 'search']).default('memberOf'),
        /** Search base for `search` mode (and nothing else). */
        base: z.string().min(1).optional(),
        /** `{dn}` is the member's DN, `{user}` the login name (both filter-escaped). */
        filter: z.string().default('(|(member={dn})(uniqueMember={dn})(memberUid={user}))'),
        /** Follow groups that are members of groups. Default true. */
        nested: z.boolean().default(true),
        /** How deep nesting is followed. Default 5. */
        maxDepth: z.number().int().min(1).max(20).default(5),
      })
      .strict()
      .default({
        mode: 'memberOf',
        filter: '(|(member={dn})(uniqueMember={dn})(memberUid={user}))',
        nested: true,
        maxDepth: 5,
      }),
    /** Group DNs whose members get the admin role. Default none. */
    adminGroups: z.array(z.string().min(1)).default([]),
    /** Group DNs whose members may use Steward at all. Default: empty = every user the filter finds. */
    allowedGroups: z.array(z.string().min(1)).default([]),
    /** How long a directory answer (exists, allowed, role) is trusted before tokens re-check. Default `5m`. */
    cacheTtl: Duration.default(300_000),
  })
  .strict();
export type LdapConfig = z.input<typeof LdapConfig>;

export interface CompiledLdapConfig {
  readonly url: string;
  readonly startTls: boolean;
  /** PEM text of the CA file, if one was given. */
  readonly ca: string | undefined;
  readonly timeoutMs: number;
  readonly bind: { readonly dn: string; readonly password: string } | undefined;
  readonly userDnTemplate: string | undefined;
  readonly userBase: string | undefined;
  readonly userFilter: string;
  readonly userNameAttribute: string;
  readonly groups: {
    readonly mode: 'memberOf' | 'search';
    readonly base: string | undefined;
    readonly filter: string;
    readonly nested: boolean;
    readonly maxDepth: number;
  };
  /** Normalised DNs (see `normalizeDn`). */
  readonly adminGroups: readonly string[];
  readonly allowedGroups: readonly string[];
  readonly cacheTtlMs: number;
}

/**
 * Failed logins are counted per (name, address) pair, per name, and optionally per address. The pair is the
 * close bound: a burst of wrong passwords locks that name out of that address only, so failures on other
 * names (or from other addresses) never lock out a user who knows their password. The per-name bound is
 * against guessing spread over many addresses; one address adds at most `maxFailuresPerUserAndSource` to it
 * in a window, so it takes several addresses to reach it.
 */
export const LoginThrottleConfig = z
  .object({
    /** Failed logins for one user name from one address within `window`; then that pair waits. Default 5. */
    maxFailuresPerUserAndSource: z.number().int().min(1).default(5),
    /**
     * Failed logins for one user name from all addresses within `window`; then the name waits, from
     * everywhere. Default 50 (ten addresses' worth of the pair bound).
     */
    maxFailuresPerUser: z.number().int().min(1).default(50),
    /**
     * Failed logins from one address over all names within `window`; then the address waits, for every
     * name, including a user with the right password behind the same address (a shared NAT or proxy).
     * Default none: off. Set it only where one address is one person.
     */
    maxFailuresPerSource: z.number().int().min(1).optional(),
    /** The sliding window failures are counted in. Default `15m`. */
    window: Duration.default(15 * 60_000),
  })
  .strict();
export type LoginThrottleConfig = z.input<typeof LoginThrottleConfig>;

export interface CompiledLoginThrottle {
  readonly maxFailuresPerUserAndSource: number;
  readonly maxFailuresPerUser: number;
  /** Undefined: no per-address bound. */
  readonly maxFailuresPerSource: number | undefined;
  readonly windowMs: number;
}

/** Lowercases a DN and drops blanks around `,` and `=`, so configured and returned DNs compare equal. */
export function normalizeDn(dn: string): string {
  return dn
    .trim()
    .replace(/\s*([,=+])\s*/g, '$1')
    .toLowerCase();
}

export function compileLdapConfig(c: z.output<typeof LdapConfig>): CompiledLdapConfig {
  const fail = (message: string): never => {
    throw new StewardError('STEWARD_CONFIG_INVALID', `server config: ldap.${message}`);
  };
  if (c.startTls && c.url.startsWith('ldaps:'))
    fail('startTls: StartTLS is for ldap:// URLs; ldaps:// is TLS already');
  if (c.bindPassword !== undefined && c.bindPasswordFile !== undefined)
    fail('bindPassword: give bindPassword or bindPasswordFile, not both');
  let bind: CompiledLdapConfig['bind'];
  if (c.bindDn !== undefined) {
    let password = c.bindPassword;
    if (c.bindPasswordFile !== undefined) {
      try {
        password = readFileSync(c.bindPasswordFile, 'utf8').replace(/\r?\n$/, '');
      } catch (error) {
        fail(`bindPasswordFile: cannot read ${c.bindPasswordFile}: ${(error as Error).message}`);
      }
    }
    if (!password) fail('bindDn: needs bindPassword or bindPasswordFile');
    bind = Object.freeze({ dn: c.bindDn, password: password! });
  } else if (c.bindPassword !== undefined || c.bindPasswordFile !== undefined) {
    fail('bindPassword: given without bindDn');
  }
  if (c.userDnTemplate === undefined && c.userBase === undefined)
    fail('userBase: needed for search-then-bind (or set userDnTemplate for a direct bind)');
  if (c.groups.mode === 'search' && c.groups.base === undefined)
    fail('groups.base: needed when groups.mode is "search"');
  let ca: string | undefined;
  if (c.caFile !== undefined) {
    try {
      ca = readFileSync(c.caFile, 'utf8');
    } catch (error) {
      fail(`caFile: cannot read ${c.caFile}: ${(error as Error).message}`);
    }
  }
  return Object.freeze({
    url: c.url,
    startTls: c.startTls,
    ca,
    timeoutMs: c.timeout,
    bind,
    userDnTemplate: c.userDnTemplate,
    userBase: c.userBase,
    userFilter: c.userFilter,
    userNameAttribute: c.userNameAttribute,
    groups: Object.freeze({ ...c.groups, base: c.groups.base }),
    adminGroups: Object.freeze(c.adminGroups.map(normalizeDn)),
    allowedGroups: Object.freeze(c.allowedGroups.map(normalizeDn)),
    cacheTtlMs: c.cacheTtl,
  });
}

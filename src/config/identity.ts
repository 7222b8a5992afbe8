/** The agent's identity policy: which OS accounts may run jobs. */
import { z } from 'zod';
import { StewardError } from '../protocol/index.js';
import { parseOrThrow } from './read.js';

/** Who may run jobs on an agent (see docs/admin-guide.md, "Identity policy"). */
export const IdentityPolicyConfig = z
  .object({
    /**
     * Pattern an OS user name must match in full (anchors are added). Default: POSIX portable names,
     * lowercase, not starting with a digit or "-": `[a-z_][a-z0-9_-]*`. Names longer than 32 characters,
     * all-digit names and names with "/", "..", spaces or shell characters are refused whatever it says.
     */
    nameRegex: z.string().min(1).max(200).default('[a-z_][a-z0-9_-]*'),
    /** Accounts with a lower uid are refused unless listed in `allowedSystemUsers`. Default 1000. */
    minUid: z
      .number()
      .int()
      .min(1)
      .max(2 ** 31)
      .default(1000),
    /** System accounts (uid below `minUid`) that may still run jobs. Default none. Never root. */
    allowedSystemUsers: z.array(z.string().min(1).max(64)).default([]),
    /**
     * Accounts that never run jobs. Default: root, bin, daemon, sys, sync, nobody and the usual service
     * accounts (postgres, rabbitmq, www-data, mysql, sshd, messagebus, systemd-*). Setting it replaces the
     * default list; root is refused in any case.
     */
    bannedUsers: z.array(z.string().min(1).max(64)).optional(),
    /** When set, only accounts in at least one of these groups (primary or supplementary) run jobs. */
    allowedGroups: z.array(z.string().min(1).max(64)).optional(),
  })
  .strict();
export type IdentityPolicyConfig = z.input<typeof IdentityPolicyConfig>;

/** Service accounts refused by default (the agent never runs user code as them). */
export const defaultBannedUsers: readonly string[] = Object.freeze([
  'root',
  'bin',
  'daemon',
  'sys',
  'sync',
  'games',
  'man',
  'lp',
  'mail',
  'news',
  'uucp',
  'proxy',
  'backup',
  'list',
  'irc',
  'nobody',
  'postgres',
  'rabbitmq',
  'www-data',
  'mysql',
  'sshd',
  'messagebus',
  '_apt',
  'systemd-network',
  'systemd-resolve',
  'systemd-timesync',
  'steward',
]);

export interface CompiledIdentityPolicy {
  readonly namePattern: RegExp;
  readonly minUid: number;
  readonly allowedSystemUsers: ReadonlySet<string>;
  readonly bannedUsers: ReadonlySet<string>;
  /** Undefined when every group is allowed. */
  readonly allowedGroups: ReadonlySet<string> | undefined;
}

export function compileIdentityPolicy(input: unknown): CompiledIdentityPolicy {
  const c = parseOrThrow(IdentityPolicyConfig, input, 'agent config identity');
  let namePattern: RegExp;
  try {
    namePattern = new RegExp(`^(?:${c.nameRegex})$`, 'u');
  } catch (error) {
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      `agent config identity.nameRegex: not a valid regular expression: ${(error as Error).message}`,
    );
  }
  if (c.allowedSystemUsers.includes('root')) {
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      'agent config identity.allowedSystemUsers: root can never run jobs, remove it',
    );
  }
  if (c.allowedGroups && c.allowedGroups.length === 0) {
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      'agent config identity.allowedGroups: an empty list would refuse everyone; omit it to allow all groups',
    );
  }
  return Object.freeze({
    namePattern,
    minUid: c.minUid,
    allowedSystemUsers: new Set(c.allowedSystemUsers),
    bannedUsers: new Set(['root', ...(c.bannedUsers ?? defaultBannedUsers)]),
    allowedGroups: c.allowedGroups ? new Set(c.allowedGroups) : undefined,
  });
}

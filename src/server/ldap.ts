/**
 * The LDAP directory as an identity source: search-then-bind (service account) or direct bind (DN
 * template), group membership (memberOf or a group search, nested) mapped to a role and to the allowed-users
 * policy. Every value put into a filter or DN is escaped, every operation of one login shares one deadline,
 * and the directory's own messages never reach clients: callers get an outcome, or
 * STEWARD_DIRECTORY_UNAVAILABLE when the directory cannot answer.
 */
import type { ConnectionOptions } from 'node:tls';
import { Client, InvalidCredentialsError, NoSuchObjectError, type Entry } from 'ldapts';
import { normalizeDn, type CompiledLdapConfig } from '../config/index.js';
import { StewardError, UserName, type Role } from '../protocol/index.js';

export interface DirectoryUser {
  /** The Steward user name (the entry's `userNameAttribute`). */
  name: string;
  dn: string;
  /** Normalised DNs of every group the user is in, nested ones included. */
  groups: string[];
  role: Role;
}

export type DirectoryOutcome =
  | { ok: true; user: DirectoryUser }
  | {
      ok: false;
      reason: 'unknown user' | 'bad password' | 'not in an allowed group' | 'ambiguous user' | 'invalid name';
    };

/** RFC 4515: `*`, `(`, `)`, `\` and NUL become `\XX`, so a value can only ever match itself. */
export function escapeFilterValue(value: string): string {
  return Array.from(Buffer.from(value, 'utf8'))
    .map((byte) =>
      byte === 0x2a || byte === 0x28 || byte === 0x29 || byte === 0x5c || byte === 0x00 || byte >= 0x80
        ? `\\${byte.toString(16).padStart(2, '0')}`
        : String.fromCharCode(byte),
    )
    .join('');
}

/** RFC 4514: escapes a value for use as one RDN value. */
export function escapeDnValue(value: string): string {
  let out = value.replace(/[\\,+"<>;=]/g, (c) => `\\${c}`).replace(/\0/g, '\\00');
  if (out.startsWith(' ') || out.startsWith('#')) out = `\\${out}`;
  if (out.endsWith(' ')) out = `${out.slice(0, -1)}\\ `;
  return out;
}

function fill(template: string, values: Record<string, string>): string {
  return template.replace(/\{(user|dn)\}/g, (_match, key: string) => values[key] ?? '');
}

function values(entry: Entry, attribute: string): string[] {
  const key = Object.keys(entry).find((k) => k.toLowerCase() === attribute.toLowerCase());
  if (!key) return [];
  const value = entry[key];
  const list = Array.isArray(value) ? value : [value];
  return list.map((v) => (Buffer.isBuffer(v) ? v.toString('utf8') : String(v)));
}

class DirectoryDown extends Error {}

export class LdapDirectory {
  constructor(private readonly config: CompiledLdapConfig) {}

  /** How long a directory answer is trusted. */
  get cacheTtlMs(): number {
    return this.config.cacheTtlMs;
  }

  /** Checks a login. Never throws for wrong credentials; throws STEWARD_DIRECTORY_UNAVAILABLE when down. */
  authenticate(name: string, password: string): Promise<DirectoryOutcome> {
    // An empty password is an "unauthenticated bind", which LDAP servers answer with success.
    if (password.length === 0) return Promise.resolve({ ok: false, reason: 'bad password' });
    return this.withDeadline(async (open) => {
      const lookup = await open();
      await this.bindService(lookup);
      let entry: Entry | undefined;
      if (this.config.userDnTemplate !== undefined) {
        const dn = fill(this.config.userDnTemplate, { user: escapeDnValue(name) });
        if (!(await this.bindUser(lookup, dn, password))) return { ok: false, reason: 'bad password' };
        entry = await this.readEntry(lookup, dn);
        if (!entry) return { ok: false, reason: 'unknown user' };
      } else {
        const found = await this.findUser(lookup, name);
        if (!found.ok) return found;
        entry = found.entry;
        const userConnection = await open();
        if (!(await this.bindUser(userConnection, entry.dn, password)))
          return { ok: false, reason: 'bad password' };
      }
      return this.authorize(lookup, entry);
    });
  }

  /** Re-checks a user without their password (token use after the cache expired). */
  lookup(name: string): Promise<DirectoryOutcome> {
    return this.withDeadline(async (open) => {
      const client = await open();
      await this.bindService(client);
      let entry: Entry | undefined;
      if (this.config.userDnTemplate !== undefined) {
        entry = await this.readEntry(client, fill(this.config.userDnTemplate, { user: escapeDnValue(name) }));
        if (!entry) return { ok: false, reason: 'unknown user' };
      } else {
        const found = await this.findUser(client, name);
        if (!found.ok) return found;
        entry = found.entry;
      }
      return this.authorize(client, entry);
    });
  }

  /**
   * Runs `work` with connections it opens through `open`, all closed afterwards, within the configured
   * timeout. Connection failures, TLS failures and timeouts become STEWARD_DIRECTORY_UNAVAILABLE.
   */
  private async withDeadline(
    work: (open: () => Promise<Client>) => Promise<DirectoryOutcome>,
  ): Promise<DirectoryOutcome> {
    const clients: Client[] = [];
    let finished = false;
    const open = async (): Promise<Client> => {
      // Work still running after the deadline must not open connections nobody will close.
      if (finished) throw new DirectoryDown('operation already timed out');
      // A fresh options object each time: ldapts writes the socket into the object given to startTLS.
      const tlsOptions = (): ConnectionOptions => ({
        ...(this.config.ca !== undefined ? { ca: this.config.ca } : {}),
        minVersion: 'TLSv1.2',
      });
      const client = new Client({
        url: this.config.url,
        timeout: this.config.timeoutMs,
        connectTimeout: this.config.timeoutMs,
        ...(this.config.url.startsWith('ldaps:') ? { tlsOptions: tlsOptions() } : {}),
      });
      clients.push(client);
      if (this.config.startTls) await client.startTLS(tlsOptions());
      return client;
    };
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(
        () => reject(new DirectoryDown(`no answer within ${this.config.timeoutMs} ms`)),
        this.config.timeoutMs,
      );
    });
    try {
      return await Promise.race([work(open), deadline]);
    } catch (error) {
      if (error instanceof StewardError) throw error;
      throw new StewardError(
        'STEWARD_DIRECTORY_UNAVAILABLE',
        'the user directory (LDAP) is not reachable or did not answer in time; try again later',
        { cause: error },
      );
    } finally {
      finished = true;
      clearTimeout(timer);
      for (const client of clients) void client.unbind().catch(() => undefined);
    }
  }

  private async bindService(client: Client): Promise<void> {
    if (!this.config.bind) return;
    try {
      await client.bind(this.config.bind.dn, this.config.bind.password);
    } catch (error) {
      // A refused service account is the server's misconfiguration, not the user's fault.
      throw new DirectoryDown(`the directory refused the service account: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }

  /** False for wrong credentials (and for a DN that does not exist, which servers report the same way). */
  private async bindUser(client: Client, dn: string, password: string): Promise<boolean> {
    try {
      await client.bind(dn, password);
      return true;
    } catch (error) {
      if (error instanceof InvalidCredentialsError) return false;
      throw error;
    }
  }

  private async findUser(
    client: Client,
    name: string,
  ): Promise<{ ok: true; entry: Entry } | { ok: false; reason: 'unknown user' | 'ambiguous user' }> {
    const { searchEntries } = await client.search(this.config.userBase!, {
      scope: 'sub',
      filter: fill(this.config.userFilter, { user: escapeFilterValue(name) }),
      attributes: [this.config.userNameAttribute, 'memberOf'],
      sizeLimit: 2,
    });
    if (searchEntries.length === 0) return { ok: false, reason: 'unknown user' };
    if (searchEntries.length > 1) return { ok: false, reason: 'ambiguous user' };
    return { ok: true, entry: searchEntries[0]! };
  }

  private async readEntry(client: Client, dn: string): Promise<Entry | undefined> {
    try {
      const { searchEntries } = await client.search(dn, {
        scope: 'base',
        filter: '(objectClass=*)',
        attributes: [this.config.userNameAttribute, 'memberOf'],
      });
      return searchEntries[0];
    } catch (error) {
      if (error instanceof NoSuchObjectError) return undefined;
      throw error;
    }
  }

  private async authorize(client: Client, entry: Entry): Promise<DirectoryOutcome> {
    const name = values(entry, this.config.userNameAttribute)[0];
    if (name === undefined || !UserName.safeParse(name).success) return { ok: false, reason: 'invalid name' };
    const groups = await this.groupsOf(client, entry, name);
    const allowed =
      this.config.allowedGroups.length === 0 || this.config.allowedGroups.some((dn) => groups.has(dn));
    if (!allowed) return { ok: false, reason: 'not in an allowed group' };
    const role: Role = this.config.adminGroups.some((dn) => groups.has(dn)) ? 'admin' : 'user';
    return { ok: true, user: { name, dn: entry.dn, groups: [...groups].sort(), role } };
  }

  /** Direct groups, then (when nested) the groups of those groups, breadth first, up to maxDepth. */
  private async groupsOf(client: Client, entry: Entry, name: string): Promise<Set<string>> {
    const { mode, nested, maxDepth } = this.config.groups;
    const found = new Set<string>();
    let frontier: string[];
    if (mode === 'memberOf') {
      frontier = values(entry, 'memberOf');
    } else {
      frontier = await this.searchGroups(client, entry.dn, name);
    }
    for (let depth = 0; frontier.length > 0; depth++) {
      const next: string[] = [];
      for (const dn of frontier) {
        const key = normalizeDn(dn);
        if (found.has(key)) continue;
        found.add(key);
        if (!nested || depth + 1 >= maxDepth) continue;
        if (mode === 'memberOf') {
          const group = await this.readEntry(client, dn);
          if (group) next.push(...values(group, 'memberOf'));
        } else {
          next.push(...(await this.searchGroups(client, dn, dn)));
        }
      }
      frontier = next;
    }
    return found;
  }

  private async searchGroups(client: Client, memberDn: string, name: string): Promise<string[]> {
    const { searchEntries } = await client.search(this.config.groups.base!, {
      scope: 'sub',
      filter: fill(this.config.groups.filter, {
        dn: escapeFilterValue(memberDn),
        user: escapeFilterValue(name),
      }),
      attributes: ['1.1'],
    });
    return searchEntries.map((group) => group.dn);
  }
}

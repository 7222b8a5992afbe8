/**
 * What a server machine needs (`steward doctor`): the store reachable with its migrations current, the store
 * files and the signing key private, a usable public URL, the LDAP directory when configured, and the
 * brokers of its buses.
 */
import { existsSync, lstatSync, statSync } from 'node:fs';
import path from 'node:path';
import { clusterBusConfig, type CompiledServerConfig } from '../config/index.js';
import type { CheckResult } from '../protocol/index.js';
import { LdapDirectory } from '../server/index.js';
import { inspectClusters, inspectStore } from '../store/index.js';
import { brokerChecks, type NamedBus } from './broker.js';
import { fail, oneLine, pass, runCheck, warn } from './check.js';

export interface ServerCheckOptions {
  /** `up`: the embedded bus; `server`: RabbitMQ, whose broker is checked. */
  role: 'server' | 'up';
  /**
   * More buses to check besides the server's own (`default`): the attached clusters'. Default none.
   */
  extraBuses?: readonly NamedBus[];
}

export async function serverChecks(
  config: CompiledServerConfig,
  options: ServerCheckOptions,
): Promise<CheckResult[]> {
  const buses: NamedBus[] = options.role === 'server' ? [{ name: 'default', bus: config.bus }] : [];
  buses.push(...(options.extraBuses ?? []));
  const checks: Promise<CheckResult | CheckResult[]>[] = [
    storeCheck(config),
    Promise.resolve(storeFilesCheck(config)),
    Promise.resolve(signingKeyCheck(config.signingKeyFile)),
    publicUrlCheck(config, options.role),
    ldapCheck(config),
    brokerChecks(buses),
  ];
  return (await Promise.all(checks)).flat();
}

/**
 * The buses of the clusters attached in the server's store (attached or detaching), for `extraBuses`: each
 * built as the cluster registry connects to it. A cluster whose settings do not compile (an unreadable
 * password file) becomes its failed check. None when the store cannot be read (`server.store` says why).
 */
export async function attachedClusterBuses(
  config: CompiledServerConfig,
): Promise<{ buses: NamedBus[]; failures: CheckResult[] }> {
  const clusters = await inspectClusters(config.store).catch(() => []);
  const buses: NamedBus[] = [];
  const failures: CheckResult[] = [];
  for (const cluster of clusters) {
    try {
      buses.push({ name: cluster.name, bus: clusterBusConfig(cluster) });
    } catch (error) {
      failures.push(
        fail(
          { id: `broker.${cluster.name}`, title: `broker of bus "${cluster.name}"` },
          'STEWARD_CONFIG_INVALID',
          `cluster ${cluster.name}: ${oneLine(error)}`,
          `fix the cluster's files (steward cluster remove, then add it again) or detach it`,
        ),
      );
    }
  }
  return { buses, failures };
}

function storeCheck(config: CompiledServerConfig): Promise<CheckResult> {
  const store = config.store;
  const where = store.kind === 'sqlite' ? `SQLite ${store.path ?? ''}` : `PostgreSQL ${redactUrl(store.url)}`;
  const head = { id: 'server.store', title: 'store reachable, migrations current' };
  return runCheck(
    head,
    async () => {
      let status;
      try {
        status = await inspectStore(store);
      } catch (error) {
        return fail(
          head,
          'STEWARD_UNAVAILABLE',
          `${where}: ${oneLine(error)}`,
          'start PostgreSQL, or fix server.store.url (host, role, password, database; see the admin guide)',
        );
      }
      if (!status.exists) return pass(head, `${where} does not exist yet; created at the first start`);
      if (status.unknown.length > 0) {
        return fail(
          head,
          'STEWARD_MIGRATIONS_PENDING',
          `${where} has migrations this release does not know: ${status.unknown.join(', ')}`,
          'a newer release wrote this store: upgrade Steward on this machine',
        );
      }
      if (status.pending.length > 0) {
        return warn(
          head,
          'STEWARD_MIGRATIONS_PENDING',
          `${where}: ${status.pending.length} migration(s) to apply (${status.pending.join(', ')})`,
          'the server applies them at its next start; back the store up first',
        );
      }
      return pass(head, `${where}: ${status.applied} migrations applied, none pending`);
    },
    'see the detail',
  );
}

function redactUrl(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
}

function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

function storeFilesCheck(config: CompiledServerConfig): CheckResult {
  const head = { id: 'server.store-files', title: 'store files private' };
  if (config.store.kind !== 'sqlite' || config.store.path === undefined)
    return pass(head, 'PostgreSQL: no store files on this machine');
  const file = config.store.path;
  const exposed: string[] = [];
  const dir = path.dirname(file);
  if (existsSync(dir) && (statSync(dir).mode & 0o077) !== 0)
    exposed.push(`${dir} (${octal(statSync(dir).mode)})`);
  for (const name of [file, `${file}-wal`, `${file}-shm`, `${file}-journal`]) {
    if (!existsSync(name)) continue;
    const mode = lstatSync(name).mode;
    if ((mode & 0o077) !== 0) exposed.push(`${name} (${octal(mode)})`);
  }
  if (exposed.length > 0) {
    return fail(
      head,
      'STEWARD_STORE_READABLE',
      `readable by group or others: ${exposed.join(', ')}`,
      `chmod 700 ${dir}; chmod 600 ${file}* — then consider rotating passwords and tokens`,
    );
  }
  return pass(head, existsSync(file) ? `${file} and ${dir}: owner only` : `${file} not created yet`);
}

function signingKeyCheck(file: string): CheckResult {
  const head = { id: 'server.signing-key', title: 'offer-signing key private' };
  if (!existsSync(file))
    return pass(head, `${file} not created yet; the server creates it (0600) at first start`);
  const mode = lstatSync(file).mode;
  if ((mode & 0o077) !== 0) {
    return fail(
      head,
      'STEWARD_STORE_READABLE',
      `${file} has mode ${octal(mode)}`,
      `chmod 600 ${file}; whoever read it can sign offers: consider a new key (and give agents the new .pub)`,
    );
  }
  return pass(head, `${file}: mode ${octal(mode)}`);
}

function publicUrlCheck(config: CompiledServerConfig, role: 'server' | 'up'): Promise<CheckResult> {
  const head = { id: 'server.public-url', title: 'public URL' };
  return runCheck(head, async () => {
    const url = config.publicUrl;
    const fix = "set server.publicUrl to the URL agents' executors reach this server at";
    if (url === undefined) {
      const detail = `server.publicUrl is not set: offers carry http://${config.host}:${config.port}`;
      // One machine needs no public URL; remote agents reach a server at 127.0.0.1 only by luck.
      if (role === 'up') return pass(head, detail);
      return warn(head, 'STEWARD_PUBLIC_URL_INVALID', detail, fix);
    }
    const parsed = new URL(url);
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')
      return fail(head, 'STEWARD_PUBLIC_URL_INVALID', `${url} is not an http(s) URL`, fix);
    const health = new URL('/api/health', url).toString();
    try {
      const response = await fetch(health, { signal: AbortSignal.timeout(5_000) });
      if (response.ok) return pass(head, `GET ${health}: ${response.status}`);
      return fail(head, 'STEWARD_PUBLIC_URL_INVALID', `GET ${health}: HTTP ${response.status}`, fix);
    } catch (error) {
      // Before the first start nothing answers there: that is expected, not a failure.
      const cause = (error as { cause?: unknown }).cause;
      return warn(
        head,
        'STEWARD_PUBLIC_URL_INVALID',
        `GET ${health}: ${oneLine(cause ?? error)} (is the server running?)`,
        `${fix}; if the server runs, check the proxy, DNS and firewall in front of it`,
      );
    }
  });
}

function ldapCheck(config: CompiledServerConfig): Promise<CheckResult> {
  const head = { id: 'server.ldap', title: 'LDAP bind and search' };
  return runCheck(head, async () => {
    if (!config.ldap) return pass(head, 'LDAP not configured (local users only)');
    const directory = new LdapDirectory(config.ldap);
    try {
      // A name no directory holds: the answer ("unknown user") proves the bind and the search work.
      const outcome = await directory.lookup('steward-doctor-probe');
      return pass(
        head,
        `${config.ldap.url}: bind and search answered (${outcome.ok ? 'probe user found' : outcome.reason})`,
      );
    } catch (error) {
      const cause = (error as { cause?: unknown }).cause;
      return fail(
        head,
        'STEWARD_DIRECTORY_UNAVAILABLE',
        `${config.ldap.url}: ${oneLine(cause ?? error)}`,
        'check server.ldap.url, bindDn and bindPasswordFile, userBase, and the CA for ldaps/startTls',
      );
    }
  });
}

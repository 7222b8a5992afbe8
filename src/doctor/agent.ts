/**
 * What an agent machine needs (`steward doctor`, and the fatal ones at the start of `steward up` and
 * `steward agent`): root, the ACL tools, cgroup controllers, a safe workspace root, NSS, python3, DuckDB,
 * Dask (a warning), free disk, and — for a distributed agent — the broker, the server and the server's public key.
 */
import { execFile } from 'node:child_process';
import { createPublicKey } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import {
  checkAclSupport,
  findOnPath,
  inspectCgroups,
  inspectWorkspaceRoot,
  lookupAccount,
  unsafeAncestor,
} from '../agent/index.js';
import type { CompiledAgentConfig } from '../config/index.js';
import { checkDask } from '../engine/index.js';
import type { CheckResult } from '../protocol/index.js';
import { brokerChecks } from './broker.js';
import { fail, oneLine, pass, runCheck, warn, type CheckHead } from './check.js';

const execFileAsync = promisify(execFile);

export interface AgentCheckOptions {
  /** `up`: the agent runs in-process with the server (embedded bus: no broker, server or key to check). */
  role: 'agent' | 'up';
  /** An OS user NSS must resolve (`--user`). */
  user?: string | undefined;
  /** The `agent.serverPublicKeyFile` as configured (read here, not at compile time, to report it). */
  serverPublicKeyFile?: string | undefined;
  /** Free disk below this fails. Default 1 GiB. */
  minFreeBytes?: number;
}

const GiB = 1024 ** 3;
const isRoot = (): boolean => process.getuid?.() === 0;

export async function agentChecks(
  config: CompiledAgentConfig,
  options: AgentCheckOptions,
): Promise<CheckResult[]> {
  const checks: Promise<CheckResult | CheckResult[]>[] = [
    Promise.resolve(rootCheck(options.role)),
    aclCheck(config.workspaceRoot),
    cgroupCheck(),
    workspaceRootCheck(config.workspaceRoot),
    workspaceParentsCheck(config.workspaceRoot),
    pythonCheck(config.python),
    duckdbCheck(),
    // A warning only: just workflows with `dask:` steps need it.
    checkDask(),
    diskCheck(config.workspaceRoot, options.minFreeBytes ?? GiB),
  ];
  if (options.user !== undefined) checks.push(userCheck(options.user, config.accountLookupTimeoutMs));
  if (options.role === 'agent') {
    checks.push(
      brokerChecks([{ name: 'default', bus: config.bus }]),
      serverCheck(config.serverUrl),
      Promise.resolve(publicKeyCheck(options.serverPublicKeyFile, config.serverPublicKey)),
    );
  }
  return (await Promise.all(checks)).flat();
}

/**
 * The checks whose failure stops `steward up` / `steward agent` at start: jobs could not run safely (or at
 * all) without them. Everything else is reported by `steward doctor` and said in the start banner.
 */
export async function fatalAgentChecks(
  config: CompiledAgentConfig,
  role: 'agent' | 'up',
  serverPublicKeyFile?: string,
): Promise<CheckResult[]> {
  const checks = [aclCheck(config.workspaceRoot), workspaceRootCheck(config.workspaceRoot)];
  if (role === 'agent')
    checks.push(Promise.resolve(publicKeyCheck(serverPublicKeyFile, config.serverPublicKey)));
  return (await Promise.all(checks)).filter((check) => check.fatal);
}

function rootCheck(role: 'agent' | 'up'): CheckResult {
  const head = { id: 'agent.root', title: 'running as root' };
  if (isRoot()) return pass(head, 'uid 0: jobs run as their users');
  const detail = `uid ${process.getuid?.() ?? '?'}: every job would run as this user (per-user isolation off)`;
  const fix = 'run steward as root (the systemd units in deploy/ do)';
  // `steward up` as a normal user is a supported single-user mode; an agent of a shared cluster is not.
  return role === 'up'
    ? warn(head, 'STEWARD_NOT_ROOT', detail, fix)
    : fail(head, 'STEWARD_NOT_ROOT', detail, fix);
}

function aclCheck(workspaceRoot: string): Promise<CheckResult> {
  const head: CheckHead = { id: 'agent.acl-tools', title: 'ACL tools (setfacl, getfacl)', fatal: true };
  const fix = 'install the acl package (apt-get install acl) and mount the workspace file system with ACLs';
  return runCheck(
    head,
    async () => {
      if (!isRoot()) return pass(head, 'not needed: not root, no per-user workspaces');
      // A missing root is created at start: its nearest existing ancestor holds it, on the same file system.
      const where = existsSync(workspaceRoot) ? workspaceRoot : existingAncestor(workspaceRoot);
      await checkAclSupport(where);
      const tools = [(await findOnPath('setfacl'))[0], (await findOnPath('getfacl'))[0]];
      return pass(head, `${tools.join(', ')}; a private default ACL works in ${where}`);
    },
    fix,
  );
}

function cgroupCheck(): Promise<CheckResult> {
  const head = { id: 'agent.cgroups', title: 'cgroup controllers (memory, cpu, pids)' };
  return runCheck(head, async () => {
    const found = await inspectCgroups();
    const needed = found.missing.filter((name) => name === 'memory' || name === 'cpu');
    const detail = `cgroup ${found.version} at ${found.where}: ${found.present.join(', ') || 'none'}${
      found.missing.length ? `; missing ${found.missing.join(', ')}` : ''
    }`;
    const fix =
      'enable the controllers (cgroup v2: in the parent cgroup.subtree_control, or Delegate=yes in the systemd unit); without them limits are not enforced';
    if (!isRoot()) return warn(head, 'STEWARD_CGROUPS_MISSING', `${detail}; not root, so no limits`, fix);
    if (found.version === 'none' || needed.length > 0)
      return fail(head, 'STEWARD_CGROUPS_MISSING', detail, fix);
    if (found.missing.length > 0) return warn(head, 'STEWARD_CGROUPS_MISSING', detail, fix);
    return pass(head, detail);
  });
}

function workspaceRootCheck(root: string): Promise<CheckResult> {
  const head: CheckHead = { id: 'agent.workspace-root', title: 'workspace root', fatal: true };
  const fix = `make ${root} a directory owned by root, mode 0755, that users can traverse to (or set agent.workspaceRoot)`;
  return runCheck(
    head,
    async () => {
      if (!existsSync(root)) return pass(head, `${root} does not exist yet; created (0755) at start`);
      await inspectWorkspaceRoot(root, isRoot());
      return pass(
        head,
        `${root}: ${isRoot() ? 'root-owned, ' : ''}not writable by others, reachable by users`,
      );
    },
    fix,
  );
}

/**
 * Not fatal: a parent another user could rename or replace lets them swap the workspace root, but existing
 * installations may sit below one (a home directory); doctor says so, the start does not refuse.
 */
function workspaceParentsCheck(root: string): Promise<CheckResult> {
  const head = { id: 'agent.workspace-parents', title: "workspace root's parents" };
  const fix = 'put agent.workspaceRoot below directories only root can change (e.g. /var/lib/steward-agent)';
  return runCheck(
    head,
    async () => {
      if (!isRoot()) return pass(head, "not root: workspaces are the invoking user's");
      const unsafe = await unsafeAncestor(path.join(existingAncestor(path.dirname(root)), 'x'));
      if (unsafe) return fail(head, 'STEWARD_WORKSPACE_UNSAFE', unsafe, fix);
      return pass(head, `every parent of ${root} is root's and not writable by others (or sticky)`);
    },
    fix,
  );
}

function existingAncestor(dir: string): string {
  let current = path.resolve(dir);
  while (!existsSync(current) && current !== path.dirname(current)) current = path.dirname(current);
  return current;
}

function userCheck(user: string, timeoutMs: number): Promise<CheckResult> {
  const head = { id: 'agent.user', title: `NSS resolves user ${user}` };
  return runCheck(head, async () => {
    const account = await lookupAccount(user, timeoutMs);
    if (!account) {
      return fail(
        head,
        'STEWARD_USER_UNKNOWN',
        `getent passwd ${user}: no such user`,
        'create the account, or check NSS (nsswitch.conf, sssd or LDAP client) on this machine',
      );
    }
    return pass(head, `${account.name}: uid ${account.uid}, gid ${account.gid}, home ${account.home}`);
  });
}

function pythonCheck(python: string): Promise<CheckResult> {
  const head = { id: 'agent.python', title: `python (${python})` };
  return runCheck(head, async () => {
    try {
      const { stdout, stderr } = await execFileAsync(python, ['--version'], { timeout: 10_000 });
      return pass(head, `${(stdout || stderr).trim()}`);
    } catch (error) {
      return fail(
        head,
        'STEWARD_PYTHON_MISSING',
        `${python} --version: ${oneLine(error)}`,
        'install python3, or set agent.python to an interpreter executors can run',
      );
    }
  });
}

function duckdbCheck(): Promise<CheckResult> {
  const head = { id: 'agent.duckdb', title: 'DuckDB loads' };
  return runCheck(head, async () => {
    try {
      const { DuckDBInstance } = await import('@duckdb/node-api');
      const instance = await DuckDBInstance.create(':memory:');
      const connection = await instance.connect();
      const reader = await connection.runAndReadAll('SELECT version() AS v');
      const version = String(reader.getRows()[0]?.[0] ?? '?');
      connection.closeSync();
      return pass(head, `DuckDB ${version}`);
    } catch (error) {
      return fail(
        head,
        'STEWARD_DUCKDB_UNAVAILABLE',
        oneLine(error),
        'reinstall Steward for this platform (npm ci): DuckDB ships a native library per platform',
      );
    }
  });
}

function diskCheck(dir: string, minFreeBytes: number): Promise<CheckResult> {
  const head = { id: 'agent.disk', title: 'free disk for workspaces' };
  return runCheck(head, async () => {
    const where = existingAncestor(dir);
    const stats = await statfs(where);
    const free = stats.bavail * stats.bsize;
    const detail = `${(free / GiB).toFixed(1)} GiB free at ${where}`;
    const fix =
      'free space (steward cleanup, old job dirs) or move agent.workspaceRoot to a larger file system';
    if (free < minFreeBytes) return fail(head, 'STEWARD_DISK_LOW', detail, fix);
    if (free < 5 * minFreeBytes) return warn(head, 'STEWARD_DISK_LOW', detail, fix);
    return pass(head, detail);
  });
}

function serverCheck(serverUrl: string | undefined): Promise<CheckResult> {
  const head = { id: 'agent.server', title: 'server reachable' };
  return runCheck(head, async () => {
    if (serverUrl === undefined) {
      return warn(
        head,
        'STEWARD_SERVER_UNREACHABLE',
        'agent.serverUrl is not set, so the server was not probed',
        "set agent.serverUrl to the server's public URL (steward cluster agent-config writes it)",
      );
    }
    const health = new URL('/api/health', serverUrl).toString();
    try {
      const response = await fetch(health, { signal: AbortSignal.timeout(5_000) });
      if (response.ok) return pass(head, `GET ${health}: ${response.status}`);
      return fail(
        head,
        'STEWARD_SERVER_UNREACHABLE',
        `GET ${health}: HTTP ${response.status}`,
        'check agent.serverUrl: it must be the Steward server (its server.publicUrl)',
      );
    } catch (error) {
      const cause = (error as { cause?: unknown }).cause;
      return fail(
        head,
        'STEWARD_SERVER_UNREACHABLE',
        `GET ${health}: ${oneLine(cause ?? error)}`,
        'executors fetch workflows from the server: start it, or fix agent.serverUrl, DNS or the firewall',
      );
    }
  });
}

/** The key file when one is named, else the inline `agent.serverPublicKey` (as `cluster agent-config` prints). */
function publicKeyCheck(file: string | undefined, inline: string | undefined): CheckResult {
  const head: CheckHead = { id: 'agent.public-key', title: "server's public key", fatal: true };
  const fix =
    "copy the server's <dataDir>/keys/offer-signing.pub here and name it in agent.serverPublicKeyFile (or inline it as agent.serverPublicKey)";
  if (file === undefined && inline === undefined)
    return fail(
      head,
      'STEWARD_PUBLIC_KEY_MISSING',
      'neither agent.serverPublicKeyFile nor agent.serverPublicKey is set',
      fix,
    );
  const where = file ?? 'agent.serverPublicKey';
  try {
    const key = createPublicKey(file !== undefined ? readFileSync(file, 'utf8') : inline!);
    if (key.asymmetricKeyType !== 'ed25519')
      return fail(
        head,
        'STEWARD_PUBLIC_KEY_MISSING',
        `${where}: a ${key.asymmetricKeyType} key, not Ed25519`,
        fix,
      );
    return pass(head, `${where}: Ed25519 public key`);
  } catch (error) {
    return fail(head, 'STEWARD_PUBLIC_KEY_MISSING', `${where}: ${oneLine(error)}`, fix);
  }
}

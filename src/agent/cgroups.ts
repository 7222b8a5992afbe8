/**
 * Per-executor resource limits through cgroups: a memory limit and a CPU quota for one executor and every
 * process it starts. The agent detects at start which interface the kernel offers — cgroup v2 (one unified
 * hierarchy) or v1 (separate `memory` and `cpu` hierarchies) — and says which is in force.
 *
 * An executor joins its cgroup *before* it takes on the user's identity (the agent writes the pid while the
 * process is still root and waiting), so nothing the user runs ever escapes the limits. After the executor
 * exits, the cgroup's own counters tell whether the kernel's OOM killer ended it, and any process left in it
 * is killed before the cgroup is removed.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, readdir, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

export type CgroupVersion = 'v2' | 'v1' | 'none';

export interface ExecutorLimits {
  /** Memory limit in bytes for the executor and all its processes. */
  memoryBytes: number;
  /** CPU share in cores (quota/period). */
  cpus: number;
}

export interface CgroupSupport {
  version: CgroupVersion;
  /** Why limits are off (when version is `none`), or where they live. */
  detail: string;
  /** v2: the parent directory; v1: parent directories per controller. */
  memoryParent?: string;
  cpuParent?: string;
}

const CGROUP_ROOT = '/sys/fs/cgroup';

/** This process's path in each hierarchy, from /proc/self/cgroup (`0::/x` for v2, `4:memory:/x` for v1). */
function ownPaths(): Map<string, string> {
  const paths = new Map<string, string>();
  let text = '';
  try {
    text = readFileSync('/proc/self/cgroup', 'utf8');
  } catch {
    return paths;
  }
  for (const line of text.trim().split('\n')) {
    const first = line.indexOf(':');
    const second = line.indexOf(':', first + 1);
    if (first < 0 || second < 0) continue;
    const controllers = line.slice(first + 1, second);
    const where = line.slice(second + 1);
    if (controllers === '') paths.set('', where);
    for (const controller of controllers.split(',')) if (controller) paths.set(controller, where);
  }
  return paths;
}

/**
 * Finds the cgroup interface in force and a parent directory for executor cgroups under this process's own
 * cgroup (`steward-<agent id>`). Returns `none` with the reason when limits cannot be applied (not root,
 * controllers missing, read-only cgroup file system).
 */
export async function detectCgroups(agentId: string): Promise<CgroupSupport> {
  if (process.getuid?.() !== 0) return { version: 'none', detail: 'not running as root' };
  const own = ownPaths();
  const name = `steward-${agentId.replace(/[^A-Za-z0-9_.-]/g, '_')}`;
  try {
    if (existsSync(path.join(CGROUP_ROOT, 'cgroup.controllers'))) {
      const base = path.join(CGROUP_ROOT, own.get('') ?? '/');
      const available = (await readFile(path.join(base, 'cgroup.controllers'), 'utf8')).split(/\s+/);
      if (!available.includes('memory') || !available.includes('cpu'))
        return { version: 'none', detail: `cgroup v2 at ${base} lacks the memory or cpu controller` };
      const parent = path.join(base, name);
      await mkdir(parent, { recursive: true });
      await writeFile(path.join(parent, 'cgroup.subtree_control'), '+memory +cpu');
      await removeStale([parent]);
      return { version: 'v2', detail: parent, memoryParent: parent, cpuParent: parent };
    }
    const memoryRoot = path.join(CGROUP_ROOT, 'memory');
    const cpuRoot = [path.join(CGROUP_ROOT, 'cpu'), path.join(CGROUP_ROOT, 'cpu,cpuacct')].find((dir) =>
      existsSync(path.join(dir, 'cpu.cfs_quota_us')),
    );
    if (!existsSync(path.join(memoryRoot, 'memory.limit_in_bytes')) || !cpuRoot)
      return { version: 'none', detail: 'no cgroup v2 and no cgroup v1 memory and cpu hierarchies' };
    const memoryParent = path.join(memoryRoot, own.get('memory') ?? '/', name);
    const cpuParent = path.join(cpuRoot, own.get('cpu') ?? '/', name);
    await mkdir(memoryParent, { recursive: true });
    await mkdir(cpuParent, { recursive: true });
    await removeStale([memoryParent, cpuParent]);
    return { version: 'v1', detail: `${memoryParent}, ${cpuParent}`, memoryParent, cpuParent };
  } catch (error) {
    return { version: 'none', detail: `cannot create cgroups: ${(error as Error).message}` };
  }
}

/** Removes the agent's parent cgroup directories when they are empty (on agent stop). */
export async function removeCgroupParents(support: CgroupSupport): Promise<void> {
  await removeStale([support.memoryParent, support.cpuParent].filter((dir): dir is string => !!dir));
  for (const dir of new Set([support.memoryParent, support.cpuParent])) {
    if (dir) await rmdir(dir).catch(() => {});
  }
}

/**
 * Executor cgroups left by an earlier run of this agent (killed with SIGKILL, say): whatever still runs in
 * them has no agent any more, so it is killed, and the cgroups are removed.
 */
async function removeStale(parents: string[]): Promise<void> {
  for (const parent of parents) {
    for (const entry of await readdir(parent, { withFileTypes: true }).catch(() => [])) {
      if (!entry.isDirectory() || !entry.name.startsWith('exec-')) continue;
      const dir = path.join(parent, entry.name);
      for (let round = 0; round < 20; round++) {
        const text = await readFile(path.join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
        const pids = text.split('\n').filter(Boolean).map(Number);
        if (pids.length === 0) break;
        for (const pid of pids) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone
          }
        }
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      await rmdir(dir).catch(() => {});
    }
  }
}

/** One executor's cgroup (v1: one directory per hierarchy; v2: one directory). */
export class ExecutorCgroup {
  private constructor(
    readonly version: 'v1' | 'v2',
    readonly limits: ExecutorLimits,
    private readonly memoryDir: string,
    private readonly cpuDir: string,
  ) {}

  static async create(support: CgroupSupport, name: string, limits: ExecutorLimits): Promise<ExecutorCgroup> {
    if (support.version === 'none') throw new Error(`cgroups unavailable: ${support.detail}`);
    const memoryDir = path.join(support.memoryParent!, name);
    const cpuDir = path.join(support.cpuParent!, name);
    await mkdir(memoryDir, { recursive: true });
    if (cpuDir !== memoryDir) await mkdir(cpuDir, { recursive: true });
    const periodUs = 100_000;
    const quotaUs = Math.max(1000, Math.round(limits.cpus * periodUs));
    if (support.version === 'v2') {
      await writeFile(path.join(memoryDir, 'memory.max'), String(limits.memoryBytes));
      await writeFile(path.join(memoryDir, 'memory.swap.max'), '0').catch(() => {});
      await writeFile(path.join(cpuDir, 'cpu.max'), `${quotaUs} ${periodUs}`);
    } else {
      await writeFile(path.join(memoryDir, 'memory.limit_in_bytes'), String(limits.memoryBytes));
      // Without swap accounting this file is absent; the plain limit then applies to RAM only.
      await writeFile(path.join(memoryDir, 'memory.memsw.limit_in_bytes'), String(limits.memoryBytes)).catch(
        () => {},
      );
      await writeFile(path.join(cpuDir, 'cpu.cfs_period_us'), String(periodUs));
      await writeFile(path.join(cpuDir, 'cpu.cfs_quota_us'), String(quotaUs));
    }
    return new ExecutorCgroup(support.version, limits, memoryDir, cpuDir);
  }

  /** Moves a process (and so everything it will start) into the cgroup. */
  async join(pid: number): Promise<void> {
    await writeFile(path.join(this.memoryDir, 'cgroup.procs'), String(pid));
    if (this.cpuDir !== this.memoryDir) await writeFile(path.join(this.cpuDir, 'cgroup.procs'), String(pid));
  }

  /**
   * How many processes in the cgroup the kernel's OOM killer has killed. Read synchronously: it is a small
   * kernel file that never blocks, and it is read at every job start, where waiting for a turn of the thread
   * pool cost milliseconds of start latency on a busy agent.
   */
  oomKills(): number {
    const file = this.version === 'v2' ? 'memory.events' : 'memory.oom_control';
    let text = '';
    try {
      text = readFileSync(path.join(this.memoryDir, file), 'utf8');
    } catch {
      // The cgroup is gone (its last process exited and it was removed): nothing more was killed.
    }
    return Number(/^oom_kill (\d+)$/m.exec(text)?.[1] ?? 0);
  }

  /** Pids still in the cgroup. */
  async pids(): Promise<number[]> {
    const text = await readFile(path.join(this.memoryDir, 'cgroup.procs'), 'utf8').catch(() => '');
    return text
      .split('\n')
      .filter(Boolean)
      .map(Number)
      .filter((pid) => Number.isInteger(pid) && pid > 0);
  }

  /** SIGKILLs every process left in the cgroup (steps that outlived their executor included). */
  async killAll(): Promise<number> {
    if (this.version === 'v2') {
      const killed = await writeFile(path.join(this.memoryDir, 'cgroup.kill'), '1').then(
        () => true,
        () => false,
      );
      if (killed) return (await this.pids()).length;
    }
    let count = 0;
    // New processes may fork while we kill: repeat until the list is empty (bounded).
    for (let round = 0; round < 20; round++) {
      const pids = await this.pids();
      if (pids.length === 0) break;
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
          count += 1;
        } catch {
          // already gone
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return count;
  }

  /** Kills what is left and removes the cgroup directories. */
  async remove(): Promise<void> {
    await this.killAll();
    for (let attempt = 0; attempt < 50; attempt++) {
      try {
        await rmdir(this.memoryDir).catch((error: NodeJS.ErrnoException) => {
          if (error.code !== 'ENOENT') throw error;
        });
        if (this.cpuDir !== this.memoryDir)
          await rmdir(this.cpuDir).catch((error: NodeJS.ErrnoException) => {
            if (error.code !== 'ENOENT') throw error;
          });
        return;
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
  }
}

/** "512 MiB" style, for messages. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1 && value % 1024 === 0) {
    value /= 1024;
    unit += 1;
  }
  return `${value} ${units[unit]}`;
}

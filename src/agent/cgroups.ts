/**
 * Per-executor resource limits and per-job process containment through cgroups.
 *
 * Each executor gets a cgroup with a memory limit, a CPU quota and a pids limit, for itself and every process
 * it starts. The agent detects at start which interface the kernel offers — cgroup v2 (one unified hierarchy)
 * or v1 (separate `memory`, `cpu`, `pids` and `freezer` hierarchies) — and says which is in force.
 *
 * An executor joins its cgroup *before* it takes on the user's identity (the agent writes the pid while the
 * process is still root and waiting), so nothing the user runs ever escapes the limits. After the executor
 * exits, the cgroup's own counters tell whether the kernel's OOM killer ended it, and any process left in it
 * is killed before the cgroup is removed.
 *
 * Every job gets a cgroup of its own below its executor's (v2: the unified tree; v1: the freezer hierarchy),
 * so that a job's end can kill everything it started — `setsid` and double-forked daemons included: a
 * process cannot leave a cgroup by changing session or parent. The agent (root) creates it and gives the
 * executor's user write access to its `cgroup.procs` file only, and to the executor cgroup's `cgroup.procs`:
 * the executor steps into the job cgroup just for the instant of a `fork` (the child is born there) and steps
 * back. Nothing else is delegated: the directories, the limit files and `cgroup.subtree_control` stay
 * root's, so the user can neither create cgroups, nor raise a limit, nor move anything above the executor's
 * cgroup (v1 needs write access to the destination's `cgroup.procs`; v2 also to the common ancestor's).
 * A process of the job could move itself into its executor's cgroup or a sibling job's: the agent kills
 * every process in the executor's cgroup but the executor at each job's end, and a sibling job's cgroup is
 * the same user's, under the same limits, and killed at that job's end.
 *
 * Job cgroups are made ahead and used again: making one is a `mkdir` in the cgroup file system, which the
 * kernel can take milliseconds over, and a warm executor's job should not wait for it. The first is made
 * when the executor takes on its user; a job's cgroup that its end left empty is kept (named `job-<n>`, not
 * by job) for the executor's next job, and removed with the executor's. A process the user moved into a
 * kept cgroup between jobs is the user's own, under the same limits, and dies with the next job there.
 *
 * Killing a job is freeze → kill → thaw: frozen, nothing in the cgroup can fork, so one pass of SIGKILL
 * reaches all of it (a fork loop included); thawed, every process dies.
 *
 * Cgroup names carry a random instance id (`steward-<agent id>+<instance>`): the agent id lock (lock.ts)
 * guarantees that no other live agent on this host has this id, so the cgroups of any other instance of this
 * id are stale and removed at start — and a live agent of another id is never touched.
 */
import { existsSync, readFileSync } from 'node:fs';
import { chmod, chown, mkdir, readFile, readdir, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

export type CgroupVersion = 'v2' | 'v1' | 'none';

export interface ExecutorLimits {
  /** Memory limit in bytes for the executor and all its processes. */
  memoryBytes: number;
  /** CPU share in cores (quota/period). */
  cpus: number;
  /** Most processes and threads of the executor and all its processes (the executor's own threads count). */
  pids: number;
}

export interface CgroupSupport {
  version: CgroupVersion;
  /** Why limits are off (when version is `none`), or where they live. */
  detail: string;
  /** v2: the parent directory; v1: parent directories per controller. */
  memoryParent?: string;
  cpuParent?: string;
  /** Where the pids limit lives (absent: the kernel has no pids controller here). */
  pidsParent?: string;
  /** Where job cgroups go below the executor's (v2: the unified tree; v1: the freezer hierarchy). */
  jobsParent?: string;
}

const CGROUP_ROOT = '/sys/fs/cgroup';

/**
 * Creates a cgroup directory that the executor's user can traverse (0755, as the kernel's own are): the
 * daemons run with umask 077, which would leave it 0700 and the `cgroup.procs` file delegated to the user
 * unreachable. Only that one file is ever chowned; the directory and the limit files stay root's.
 */
async function makeCgroupDir(dir: string, recursive: boolean): Promise<void> {
  await mkdir(dir, { recursive });
  await chmod(dir, 0o755);
}

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

/** The agent's cgroup name prefix for an id (ids may not contain `+`, so `+` ends the id unambiguously). */
function baseName(agentId: string): string {
  return `steward-${agentId.replace(/[^A-Za-z0-9_.-]/g, '_')}`;
}

/**
 * Finds the cgroup interface in force and makes a parent directory for executor cgroups under this process's
 * own cgroup (`steward-<agent id>+<instance>`), after removing the cgroups of dead instances of this agent id
 * (call only while holding the agent id lock). Returns `none` with the reason when limits cannot be applied
 * (not root, controllers missing, read-only cgroup file system).
 */
export async function detectCgroups(agentId: string, instance: string): Promise<CgroupSupport> {
  if (process.getuid?.() !== 0) return { version: 'none', detail: 'not running as root' };
  const own = ownPaths();
  const base = baseName(agentId);
  const name = `${base}+${instance}`;
  try {
    if (existsSync(path.join(CGROUP_ROOT, 'cgroup.controllers'))) {
      const home = path.join(CGROUP_ROOT, own.get('') ?? '/');
      const available = (await readFile(path.join(home, 'cgroup.controllers'), 'utf8')).split(/\s+/);
      if (!available.includes('memory') || !available.includes('cpu'))
        return { version: 'none', detail: `cgroup v2 at ${home} lacks the memory or cpu controller` };
      await removeOtherInstances(home, base, name);
      const parent = path.join(home, name);
      await makeCgroupDir(parent, true);
      let pids = available.includes('pids');
      try {
        await writeFile(path.join(parent, 'cgroup.subtree_control'), `+memory +cpu${pids ? ' +pids' : ''}`);
      } catch (error) {
        // pids listed but not enabled for our cgroup's children: limits without the pids limit, said at start.
        if (!pids) throw error;
        pids = false;
        await writeFile(path.join(parent, 'cgroup.subtree_control'), '+memory +cpu');
      }
      return {
        version: 'v2',
        detail: parent,
        memoryParent: parent,
        cpuParent: parent,
        jobsParent: parent,
        ...(pids ? { pidsParent: parent } : {}),
      };
    }
    const memoryRoot = path.join(CGROUP_ROOT, 'memory');
    const cpuRoot = [path.join(CGROUP_ROOT, 'cpu'), path.join(CGROUP_ROOT, 'cpu,cpuacct')].find((dir) =>
      existsSync(path.join(dir, 'cpu.cfs_quota_us')),
    );
    if (!existsSync(path.join(memoryRoot, 'memory.limit_in_bytes')) || !cpuRoot)
      return { version: 'none', detail: 'no cgroup v2 and no cgroup v1 memory and cpu hierarchies' };
    const homes: [string, string][] = [
      ['memory', path.join(memoryRoot, own.get('memory') ?? '/')],
      ['cpu', path.join(cpuRoot, own.get('cpu') ?? '/')],
    ];
    const pidsRoot = path.join(CGROUP_ROOT, 'pids');
    if (existsSync(path.join(pidsRoot, 'cgroup.procs')))
      homes.push(['pids', path.join(pidsRoot, own.get('pids') ?? '/')]);
    const freezerRoot = path.join(CGROUP_ROOT, 'freezer');
    if (existsSync(path.join(freezerRoot, 'cgroup.procs')))
      homes.push(['freezer', path.join(freezerRoot, own.get('freezer') ?? '/')]);
    const parents = new Map<string, string>();
    for (const [controller, home] of homes) {
      await removeOtherInstances(home, base, name);
      const parent = path.join(home, name);
      await makeCgroupDir(parent, true);
      parents.set(controller, parent);
    }
    return {
      version: 'v1',
      detail: [...parents.values()].join(', '),
      memoryParent: parents.get('memory')!,
      cpuParent: parents.get('cpu')!,
      ...(parents.has('pids') ? { pidsParent: parents.get('pids')! } : {}),
      ...(parents.has('freezer') ? { jobsParent: parents.get('freezer')! } : {}),
    };
  } catch (error) {
    return { version: 'none', detail: `cannot create cgroups: ${(error as Error).message}` };
  }
}

/** What `inspectCgroups` found: the interface and which of the controllers limits use are there. */
export interface CgroupInventory {
  version: CgroupVersion;
  /** Of memory, cpu, pids (and v1's freezer, for job containment): those available to this process. */
  present: string[];
  missing: string[];
  /** Where they were looked for. */
  where: string;
}

/**
 * Looks, without creating anything, for the controllers executor limits need: memory, cpu and pids (and on
 * v1 the freezer hierarchy that job containment uses). For `steward doctor`.
 */
export async function inspectCgroups(): Promise<CgroupInventory> {
  const wanted = ['memory', 'cpu', 'pids'];
  if (existsSync(path.join(CGROUP_ROOT, 'cgroup.controllers'))) {
    const home = path.join(CGROUP_ROOT, ownPaths().get('') ?? '/');
    const available = (await readFile(path.join(home, 'cgroup.controllers'), 'utf8').catch(() => '')).split(
      /\s+/,
    );
    const present = wanted.filter((controller) => available.includes(controller));
    const missing = wanted.filter((controller) => !available.includes(controller));
    return { version: 'v2', present, missing, where: home };
  }
  const probes: [string, string[]][] = [
    ['memory', [path.join(CGROUP_ROOT, 'memory', 'memory.limit_in_bytes')]],
    [
      'cpu',
      [
        path.join(CGROUP_ROOT, 'cpu', 'cpu.cfs_quota_us'),
        path.join(CGROUP_ROOT, 'cpu,cpuacct', 'cpu.cfs_quota_us'),
      ],
    ],
    ['pids', [path.join(CGROUP_ROOT, 'pids', 'cgroup.procs')]],
    ['freezer', [path.join(CGROUP_ROOT, 'freezer', 'cgroup.procs')]],
  ];
  const present = probes.filter(([, files]) => files.some((file) => existsSync(file))).map(([name]) => name);
  const missing = probes.map(([name]) => name).filter((name) => !present.includes(name));
  const version = present.includes('memory') || present.includes('cpu') ? 'v1' : 'none';
  return { version, present, missing, where: CGROUP_ROOT };
}

function parentsOf(support: CgroupSupport): string[] {
  return [
    ...new Set(
      [support.memoryParent, support.cpuParent, support.pidsParent, support.jobsParent].filter(
        (dir): dir is string => !!dir,
      ),
    ),
  ];
}

/** Removes the agent's parent cgroup directories, and whatever is left in them (on agent stop). */
export async function removeCgroupParents(support: CgroupSupport): Promise<void> {
  for (const dir of parentsOf(support)) await removeTree(dir);
}

/**
 * Cgroups of other instances of this agent id (an earlier run killed with SIGKILL, say, or a version that
 * named them `steward-<id>`): whatever still runs in them has no agent any more, so it is killed, and the
 * cgroups are removed. Only names of exactly this id are touched.
 */
async function removeOtherInstances(home: string, base: string, ours: string): Promise<void> {
  const pattern = new RegExp(`^${base.replace(/[.]/g, '\\.')}(\\+[0-9a-f]+)?$`);
  for (const entry of await readdir(home, { withFileTypes: true }).catch(() => [])) {
    if (!entry.isDirectory() || entry.name === ours || !pattern.test(entry.name)) continue;
    await removeTree(path.join(home, entry.name));
  }
}

/** Kills every process in a cgroup directory and its descendants, then removes them (deepest first). */
async function removeTree(dir: string): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    if (entry.isDirectory()) await removeTree(path.join(dir, entry.name));
  }
  await killIn(dir, undefined);
  for (let attempt = 0; attempt < 50; attempt++) {
    try {
      await rmdir(dir);
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      await killIn(dir, undefined);
      await delay(20);
    }
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The pids in a cgroup directory (none when it is gone). Read synchronously: `cgroup.procs` is a small
 * kernel file that never waits for a disk, and it is read twice at every job's end, where an asynchronous
 * read was four turns of the thread pool (open, stat, read, close) each, on the agent's CPU and on the
 * way to the job's reported end.
 */
function procsIn(dir: string): number[] {
  let text: string;
  try {
    text = readFileSync(path.join(dir, 'cgroup.procs'), 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter(Boolean)
    .map(Number)
    .filter((pid) => Number.isInteger(pid) && pid > 0);
}

/**
 * SIGKILLs every process in one cgroup directory but `spare`, freezing it first where the kernel can (v1:
 * `freezer.state`; v2: `cgroup.freeze`) so that nothing forks meanwhile, and thawing it after. Repeats until
 * only `spare` (or nothing) is left. Returns how many were signalled.
 */
async function killIn(dir: string, spare: number | undefined): Promise<number> {
  return (await killAndCheck(dir, spare)).killed;
}

/** `killIn`, and whether the cgroup was seen with nothing but `spare` in it at the end. */
async function killAndCheck(
  dir: string,
  spare: number | undefined,
): Promise<{ killed: number; empty: boolean }> {
  // Which freezer the directory has is looked up only when something is there to kill: at most jobs' ends
  // nothing is.
  let freezer: { v1: boolean; v2: boolean } | undefined;
  let count = 0;
  for (let round = 0; round < 20; round++) {
    const before = procsIn(dir).filter((pid) => pid !== spare);
    if (before.length === 0) return { killed: count, empty: true };
    if (!freezer) {
      const v1 = existsSync(path.join(dir, 'freezer.state'));
      freezer = { v1, v2: !v1 && existsSync(path.join(dir, 'cgroup.freeze')) };
    }
    const frozen = await freeze(dir, freezer.v1, freezer.v2);
    for (const pid of procsIn(dir)) {
      if (pid === spare) continue;
      try {
        process.kill(pid, 'SIGKILL');
        count += 1;
      } catch {
        // already gone
      }
    }
    if (frozen) await thaw(dir, freezer.v1);
    await delay(round === 0 ? 2 : 10);
  }
  return { killed: count, empty: false };
}

async function freeze(dir: string, v1: boolean, v2: boolean): Promise<boolean> {
  try {
    if (v1) {
      await writeFile(path.join(dir, 'freezer.state'), 'FROZEN');
      for (let i = 0; i < 100; i++) {
        if ((await readFile(path.join(dir, 'freezer.state'), 'utf8')).trim() === 'FROZEN') return true;
        await delay(5);
      }
      return true;
    }
    if (v2) {
      await writeFile(path.join(dir, 'cgroup.freeze'), '1');
      for (let i = 0; i < 100; i++) {
        if (/^frozen 1$/m.test(await readFile(path.join(dir, 'cgroup.events'), 'utf8'))) return true;
        await delay(5);
      }
      return true;
    }
  } catch {
    // The cgroup went away, or freezing is not possible: kill without it (repeated rounds).
  }
  return false;
}

async function thaw(dir: string, v1: boolean): Promise<void> {
  await writeFile(path.join(dir, v1 ? 'freezer.state' : 'cgroup.freeze'), v1 ? 'THAWED' : '0').catch(
    () => {},
  );
}

/** One job's cgroup below its executor's. */
export class JobCgroup {
  constructor(
    /** The directory (v2: unified; v1: freezer hierarchy). */
    readonly dir: string,
    private readonly executorPid: number,
  ) {}

  /** The `cgroup.procs` file the executor writes itself into to start a step inside the job. */
  get procsFile(): string {
    return path.join(this.dir, 'cgroup.procs');
  }

  /** Kills every process of the job (freeze → kill → thaw) but the executor, should it be inside right now. */
  kill(): Promise<number> {
    return killIn(this.dir, this.executorPid);
  }

  /** `kill`, and whether nothing but the executor was left in it at the end (it can then serve again). */
  killAndCheck(): Promise<{ killed: number; empty: boolean }> {
    return killAndCheck(this.dir, this.executorPid);
  }

  /** Kills what is left and removes the cgroup. */
  async remove(): Promise<number> {
    const killed = await this.kill();
    for (let attempt = 0; attempt < 50; attempt++) {
      try {
        await rmdir(this.dir);
        break;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') break;
        await this.kill();
        await delay(10);
      }
    }
    return killed;
  }
}

/** The executor's cgroup is being removed (the executor exited): no job can start in it any more. */
export class ExecutorCgroupGoneError extends Error {
  constructor() {
    super("the executor's cgroup is being removed: the executor exited");
    this.name = 'ExecutorCgroupGoneError';
  }
}

/** Emptied job cgroups an executor keeps for its next jobs: one per job it runs at once, within reason. */
const KEPT_JOB_CGROUPS = 4;

/** One executor's cgroup (v1: one directory per hierarchy; v2: one directory). */
export class ExecutorCgroup {
  /** The user and the executor the cgroup was delegated to (job cgroups are made for them). */
  private owner: { uid: number; gid: number; executorPid: number } | undefined;
  /** Emptied job cgroups kept for the executor's next jobs (see `takeJob`). */
  private readonly keptJobs: JobCgroup[] = [];
  /** A job cgroup being made ahead of the next job. */
  private makingJob: Promise<void> | undefined;
  private jobCount = 0;
  private removing = false;

  private constructor(
    readonly version: 'v1' | 'v2',
    readonly limits: ExecutorLimits,
    private readonly dirs: { memory: string; cpu: string; pids?: string; jobs?: string },
  ) {}

  static async create(support: CgroupSupport, name: string, limits: ExecutorLimits): Promise<ExecutorCgroup> {
    if (support.version === 'none') throw new Error(`cgroups unavailable: ${support.detail}`);
    const dirs = {
      memory: path.join(support.memoryParent!, name),
      cpu: path.join(support.cpuParent!, name),
      ...(support.pidsParent ? { pids: path.join(support.pidsParent, name) } : {}),
      ...(support.jobsParent ? { jobs: path.join(support.jobsParent, name) } : {}),
    };
    for (const dir of new Set(Object.values(dirs))) await makeCgroupDir(dir, true);
    const periodUs = 100_000;
    const quotaUs = Math.max(1000, Math.round(limits.cpus * periodUs));
    if (support.version === 'v2') {
      await writeFile(path.join(dirs.memory, 'memory.max'), String(limits.memoryBytes));
      await writeFile(path.join(dirs.memory, 'memory.swap.max'), '0').catch(() => {});
      await writeFile(path.join(dirs.cpu, 'cpu.max'), `${quotaUs} ${periodUs}`);
    } else {
      await writeFile(path.join(dirs.memory, 'memory.limit_in_bytes'), String(limits.memoryBytes));
      // Without swap accounting this file is absent; the plain limit then applies to RAM only.
      await writeFile(
        path.join(dirs.memory, 'memory.memsw.limit_in_bytes'),
        String(limits.memoryBytes),
      ).catch(() => {});
      await writeFile(path.join(dirs.cpu, 'cpu.cfs_period_us'), String(periodUs));
      await writeFile(path.join(dirs.cpu, 'cpu.cfs_quota_us'), String(quotaUs));
    }
    if (dirs.pids) await writeFile(path.join(dirs.pids, 'pids.max'), String(limits.pids));
    return new ExecutorCgroup(support.version, limits, dirs);
  }

  /** Whether jobs get cgroups of their own (v2, or v1 with the freezer hierarchy). */
  get jobCgroups(): boolean {
    return this.dirs.jobs !== undefined;
  }

  /** Whether the pids limit is enforced. */
  get pidsLimited(): boolean {
    return this.dirs.pids !== undefined;
  }

  /** The executor's own `cgroup.procs` in the job hierarchy: where it steps back to after starting a step. */
  get homeProcsFile(): string | undefined {
    return this.dirs.jobs ? path.join(this.dirs.jobs, 'cgroup.procs') : undefined;
  }

  /**
   * Gives the cgroup the least CPU weight there is (`cpu.weight` 1 on v2, `cpu.shares` 2 on v1), or the
   * default back. A spare (pre-started, no user yet) starts in the background: it is started while a user's
   * job has just begun, and a Node process's start would otherwise take a core from the jobs of the moment.
   * It gets the default weight back when it takes on a user, before that user's first job.
   */
  async setBackground(background: boolean): Promise<void> {
    if (this.version === 'v2')
      await writeFile(path.join(this.dirs.cpu, 'cpu.weight'), background ? '1' : '100');
    else await writeFile(path.join(this.dirs.cpu, 'cpu.shares'), background ? '2' : '1024');
  }

  /** Moves a process (and so everything it will start) into the cgroup. */
  async join(pid: number): Promise<void> {
    for (const dir of new Set(Object.values(this.dirs)))
      await writeFile(path.join(dir, 'cgroup.procs'), String(pid));
  }

  /**
   * Lets the executor's user move its own processes into this cgroup (its `cgroup.procs` file only; see the
   * module comment for why that is safe). Done once, when the executor is assigned its user; the cgroup of
   * the executor's first job is made then too, while the executor takes on the user.
   */
  async delegate(uid: number, gid: number, executorPid: number): Promise<void> {
    if (!this.dirs.jobs) return;
    await chown(path.join(this.dirs.jobs, 'cgroup.procs'), uid, gid);
    this.owner = { uid, gid, executorPid };
    this.prepareJob();
  }

  /**
   * A cgroup for a job starting now: one kept from an earlier job or made ahead, else a new one. Job
   * cgroups are named `job-<n>` in the executor's own (the agent logs which job has which). Making one is a
   * `mkdir` in the cgroup filesystem, which the kernel may take milliseconds over; a warm executor's job
   * does not wait for it. Undefined when jobs get no cgroups here; ExecutorCgroupGoneError once the executor
   * exited.
   */
  async takeJob(): Promise<JobCgroup | undefined> {
    if (!this.dirs.jobs) return undefined;
    if (this.removing) throw new ExecutorCgroupGoneError();
    if (this.keptJobs.length === 0 && this.makingJob) await this.makingJob;
    return this.keptJobs.pop() ?? this.makeJob();
  }

  /**
   * Ends a job's cgroup: kills everything left in it, then keeps it for a next job of the executor if it was
   * seen empty (nothing of the ended job can be in it then), else removes it. Returns how many processes
   * were killed.
   */
  async endJob(job: JobCgroup): Promise<number> {
    const { killed, empty } = await job.killAndCheck();
    if (empty && !this.removing && this.keptJobs.length < KEPT_JOB_CGROUPS) {
      this.keptJobs.push(job);
      return killed;
    }
    return killed + (await job.remove());
  }

  /** Makes a job cgroup ahead of the executor's next job, unless one is kept or on its way. */
  private prepareJob(): void {
    if (this.removing || this.makingJob || this.keptJobs.length > 0 || !this.owner) return;
    const making: Promise<void> = this.makeJob()
      .then(
        (job) => {
          this.keptJobs.push(job);
        },
        () => {
          // Made when the job starts instead (and its failure then fails the job).
        },
      )
      .finally(() => {
        if (this.makingJob === making) this.makingJob = undefined;
      });
    this.makingJob = making;
  }

  /** A new, empty job cgroup whose `cgroup.procs` the executor's user may write. */
  private async makeJob(): Promise<JobCgroup> {
    if (!this.dirs.jobs || !this.owner) throw new Error('job cgroups need a delegated executor cgroup');
    if (this.removing) throw new ExecutorCgroupGoneError();
    const { uid, gid, executorPid } = this.owner;
    const dir = path.join(this.dirs.jobs, `job-${++this.jobCount}`);
    const job = new JobCgroup(dir, executorPid);
    try {
      await makeCgroupDir(dir, false);
    } catch (error) {
      // Left by an earlier agent's executor of the same pid, say: start it empty.
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      await job.kill();
    }
    await chown(job.procsFile, uid, gid);
    return job;
  }

  /**
   * Kills every process in the executor's own cgroup that is neither the executor nor inside a job's cgroup
   * (v1: the freezer hierarchy; v2: the executor's directory): a process of a job that moved itself out of
   * its job's cgroup. No legitimate process lives there: steps are born inside their job's cgroup.
   */
  async killStrays(executorPid: number): Promise<number> {
    if (!this.dirs.jobs) return 0;
    const strays = procsIn(this.dirs.jobs).filter((pid) => pid !== executorPid);
    if (strays.length === 0) return 0;
    return killIn(this.dirs.jobs, executorPid);
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
      text = readFileSync(path.join(this.dirs.memory, file), 'utf8');
    } catch {
      // The cgroup is gone (its last process exited and it was removed): nothing more was killed.
    }
    return Number(/^oom_kill (\d+)$/m.exec(text)?.[1] ?? 0);
  }

  /** Whether the pids limit refused a fork (v2: `pids.events` max; v1: `pids.events` max), for the record. */
  pidsLimitHits(): number {
    if (!this.dirs.pids) return 0;
    try {
      return Number(
        /^max (\d+)$/m.exec(readFileSync(path.join(this.dirs.pids, 'pids.events'), 'utf8'))?.[1] ?? 0,
      );
    } catch {
      return 0;
    }
  }

  /** SIGKILLs every process of the executor and its jobs, the executor included. */
  async killAll(): Promise<number> {
    let count = 0;
    // Jobs first (frozen while killed), then whatever is left anywhere in the executor's cgroups.
    if (this.dirs.jobs) {
      for (const entry of await readdir(this.dirs.jobs, { withFileTypes: true }).catch(() => []))
        if (entry.isDirectory()) count += await killIn(path.join(this.dirs.jobs, entry.name), undefined);
    }
    for (const dir of new Set(Object.values(this.dirs))) count += await killIn(dir, undefined);
    return count;
  }

  /** Kills what is left and removes the cgroup directories (job cgroups included). */
  async remove(): Promise<void> {
    this.removing = true;
    // A job cgroup being made must exist before the tree is removed, or it would be left behind.
    await this.makingJob;
    this.keptJobs.length = 0;
    await this.killAll();
    for (const dir of new Set(Object.values(this.dirs))) await removeTree(dir);
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

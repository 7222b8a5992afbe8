/**
 * What an `Agent` is given rather than builds: narrow interfaces over the executor pool, the machine (lock,
 * directories, cgroups, accounts, logs) and the clock. `createAgent` (wiring.ts) builds the real ones; a test
 * can hand in its own pool and host and drive the agent over the embedded bus.
 */
import type { Logger } from 'pino';
import type { Bus } from '../bus/index.js';
import type { CompiledAgentConfig } from '../config/index.js';
import type {
  AgentToExecutor,
  ExecutorIdentity,
  ExecutorInfo,
  ExecutorToAgent,
  Heartbeat,
  JobOffer,
  OfferVerifier,
} from '../protocol/index.js';
import type { OsAccount } from './accounts.js';
import type { CgroupSupport, ExecutorCgroup } from './cgroups.js';
import type { ExitInfo } from './spawner.js';
import type { UserDirs } from './workspaces.js';

/** A user's executor as the agent uses it (`UserExecutor` in pool.ts is the real one). */
export interface PooledExecutor {
  readonly account: OsAccount;
  readonly pid: number;
  readonly identity: ExecutorIdentity | undefined;
  /** Its cgroup, when limits are enforced. */
  readonly cgroup: ExecutorCgroup | undefined;
  readonly process: { send(message: AgentToExecutor): boolean };
  /** How it came to be: a ready spare, a spare still starting, or started for its user. */
  readonly origin?: 'spare' | 'starting-spare' | 'spawned';
}

/** What the pool reports to the agent. */
export interface PoolEvents {
  /** Executor diagnostics, with the OS user once the executor has one. */
  onOutput(
    owner: string | undefined,
    pid: number | undefined,
    stream: 'stdout' | 'stderr',
    line: string,
  ): void;
  /** Every message from a user's executor. */
  onMessage(executor: PooledExecutor, message: ExecutorToAgent): void;
  /** A user's executor exited, with the jobs it still had. */
  onExit(executor: PooledExecutor, exit: ExitInfo, jobs: string[]): void;
  /** A spare is ready for a user (`ready`: how many are ready now). */
  onSpareReady?(pid: number, ready: number): void;
  /** An idle executor is being stopped for the idle budget (`residentBytes`: its last measure). */
  onEvicted?(executor: PooledExecutor, residentBytes: number): void;
}

/** The executor pool (one executor per OS user), as the agent uses it; see `ExecutorPool`. */
export interface AgentPool {
  setCgroups(support: CgroupSupport): void;
  prime(): Promise<void>;
  close(): Promise<void>;
  acquire(account: OsAccount, dirs: UserDirs): Promise<PooledExecutor>;
  jobStarted(executor: PooledExecutor, jobId: string): void;
  jobEnded(executor: PooledExecutor, jobId: string): void;
  /**
   * Starts the spares missing. Called once a job's first step runs (and by `jobEnded`): a spare taken is
   * replaced then, not while the start that took it still needs the CPU.
   */
  replenish(): void;
  /** Whether the OS account has an executor here (starting, running jobs or idle). */
  hasExecutorFor(osName: string): boolean;
  /** Idle executors and spares, and their measured resident memory together (bytes). */
  idleMemory?(): { idle: number; spares: number; residentBytes: number; budgetBytes: number };
  responsive(executor: PooledExecutor): boolean;
  killHung(executor: PooledExecutor, cause: string): void;
  executors(): ExecutorInfo[];
}

export interface HousekeepingReport {
  prunedLogs: number;
  removed: number;
  failed: Array<{ path: string; error: string }>;
}

/** The machine: everything the agent does to the OS outside the executors. */
export interface AgentHost {
  /** `per-user` when running as root (an executor per OS user), else `single-user`. */
  readonly isolation: 'per-user' | 'single-user';
  /** Takes the agent id's lock: a second agent with this id must not touch anything of the first. */
  lock(): Promise<{ release(): Promise<void> }>;
  prepareWorkspaceRoot(): Promise<void>;
  /** Which cgroup interface enforces executor limits; `instance` names this run's cgroups. */
  detectCgroups(instance: string): Promise<CgroupSupport>;
  removeCgroupParents(support: CgroupSupport): Promise<void>;
  /** The OS account for a server user (refusals are StewardErrors with a stable code). */
  resolveAccount(serverUser: string): Promise<OsAccount>;
  /** The OS account name for a server user, or undefined when the identity policy refuses it. */
  osNameOf(serverUser: string): string | undefined;
  ensureHome(account: OsAccount): Promise<void>;
  /** Where the user's directories are (whether or not they exist yet). */
  userDirs(account: OsAccount): UserDirs;
  /** Makes (or checks) the user's directories; resolves to `userDirs(account)`. */
  prepareUserDirs(account: OsAccount): Promise<UserDirs>;
  /** Gives up this agent's claim on an attempt that never started (see claim-release.ts). */
  releaseClaim(offer: JobOffer, signal: AbortSignal): Promise<void>;
  /** Log retention and the scheduled workspace cleanup. */
  houseKeep(): Promise<HousekeepingReport>;
  userLog(user: string, pid: number | undefined, stream: 'stdout' | 'stderr', line: string): void;
  closeLogs(): void;
}

export interface AgentClock {
  /** Wall-clock epoch ms (deadlines, event times). */
  now(): number;
  /** Monotonic ms (latencies). */
  monotonic(): number;
}

export const systemClock: AgentClock = { now: () => Date.now(), monotonic: () => performance.now() };

export interface AgentDeps {
  config: CompiledAgentConfig;
  bus: Bus;
  logger: Logger;
  /** Checks offers' signatures against the server keys this agent trusts. */
  verifier: OfferVerifier;
  host: AgentHost;
  /** Builds the pool, given where it reports to (the agent). */
  pool: (events: PoolEvents) => AgentPool;
  clock?: AgentClock;
  /**
   * What each heartbeat reports about the agent for the cluster checks (its keys' fingerprints, its probe
   * of the server's URL), told each offer's server URL. Default: nothing.
   */
  selfReport?: { report(): Pick<Heartbeat, 'keyFingerprints' | 'serverProbe'>; learnUrl(url: string): void };
}

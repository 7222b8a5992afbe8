/**
 * Capacity, as pure arithmetic over snapshots (no I/O): whether an offer fits this machine now, and which
 * idle executors to stop.
 *
 * Slots bound concurrent jobs, not resident executors. An executor that runs jobs counts its core tokens and
 * its memory limit against `capacity.tokens` and `capacity.memory` (its cgroup limit is the ceiling it may
 * grow to while it runs). An idle executor reserves nothing: it costs what it really uses — its measured
 * resident memory — against the idle budget (`capacity.idleMemory`, pre-started spares included), and it is
 * stopped, least recently used first, only when that budget or the machine's real memory (MemAvailable below
 * `capacity.minAvailableMemory`) needs its memory back.
 */
import type { CompiledAgentConfig } from '../config/index.js';

export type CapacityBudget = CompiledAgentConfig['capacity'] & {
  /** Memory each user's executor may use (`limits.memoryBytes`). */
  executorMemoryBytes: number;
};

/** A job taken here and not ended, as capacity sees it. */
export interface JobLoad {
  /** The server user it runs for. */
  user: string;
}

export interface CapacityInput {
  /** The offer's server user. */
  user: string;
  /** The jobs taken here and not ended (running, or waiting for their executor). */
  jobs: Iterable<JobLoad>;
  budget: CapacityBudget;
  /** Whether each user gets an executor of their own (running as root). */
  perUser: boolean;
  /** The OS account name for a server user, or undefined when the identity policy refuses it. */
  osNameOf: (user: string) => string | undefined;
}

export type CapacityVerdict =
  | { kind: 'fits' }
  | { kind: 'full'; reason: string }
  /** The user's executor would start running: check `executorShortfall` with the `running` ones. */
  | { kind: 'needs-executor'; running: number };

/**
 * The user's own cap of jobs first; then — only with per-user isolation — whether the user's executor runs
 * jobs already (so it is counted), else how many executors run jobs: one per OS account with a job here,
 * whether its executor is resident, pre-started or still starting. Idle executors do not count.
 *
 * Names the identity policy would refuse fit: placing them ends the job with the refusal, which costs
 * nothing.
 */
export function capacityVerdict(input: CapacityInput): CapacityVerdict {
  const { user, budget } = input;
  const jobs = [...input.jobs];
  const userJobs = jobs.filter((job) => job.user === user).length;
  if (userJobs >= budget.maxJobsPerUser)
    return { kind: 'full', reason: `user ${user} already runs ${userJobs} job(s), the per-user cap` };
  if (!input.perUser) return { kind: 'fits' };
  const osName = input.osNameOf(user);
  if (osName === undefined) return { kind: 'fits' };
  const running = new Set<string>();
  for (const job of jobs) {
    const name = input.osNameOf(job.user);
    if (name !== undefined) running.add(name);
  }
  if (running.has(osName)) return { kind: 'fits' };
  return { kind: 'needs-executor', running: running.size };
}

/**
 * Whether one more running executor fits beside `running` ones: undefined when it does, else why not (to
 * park the offer with). Each counts its core tokens and its memory limit, the most it may use while running.
 */
export function executorShortfall(running: number, budget: CapacityBudget): string | undefined {
  const tokens = (running + 1) * budget.tokensPerExecutor;
  const memory = (running + 1) * budget.executorMemoryBytes;
  if (tokens <= budget.tokens && memory <= budget.memoryBytes) return undefined;
  return `no capacity for another running executor (${tokens} of ${budget.tokens} core tokens, ${memory} of ${budget.memoryBytes} bytes)`;
}

/** An idle executor, as the idle budget sees it. */
export interface IdleExecutor<K> {
  key: K;
  /** Its measured resident memory (bytes). */
  residentBytes: number;
  /** When its last job ended (epoch ms): the least recently used goes first. */
  idleSince: number;
  /** Counted, but never stopped (handed out for a job a moment ago). */
  pinned?: boolean;
}

export interface IdleBudgetInput<K> {
  idle: Iterable<IdleExecutor<K>>;
  /** What the pre-started spares count for (they are idle too, and kept; see `spareFootprint`). */
  spareBytes: number;
  /** `capacity.idleMemory`. */
  idleBudgetBytes: number;
  /** The machine's MemAvailable (bytes), or undefined when unknown (not Linux). */
  availableBytes: number | undefined;
  /** `capacity.minAvailableMemory`: below it, idle executors give their memory back. */
  minAvailableBytes: number;
}

/** Longest an executor handed out for a job is kept from eviction while that job is not yet counted as its. */
export const ACQUIRED_PIN_MS = 10_000;

/**
 * Whether an executor that looks idle was handed out (`acquire`) for a job not yet counted as its: it is not
 * stopped for memory in that moment. One whose job has come and gone since is idle like any other; pinning
 * it for the whole window let a burst of users with short jobs keep more than the budget (1,453 MiB of a
 * 1 GiB budget in `bench/many-users.mjs --short`).
 */
export function pinnedForJob(acquiredAt: number, idleSince: number, now: number): boolean {
  return acquiredAt >= idleSince && now - acquiredAt < ACQUIRED_PIN_MS;
}

/**
 * What the spares count for against the idle budget: each at least the most a spare has been seen to use
 * (`typicalBytes`). A spare still starting, counted at what it uses so far, grows afterwards with no trim
 * to follow: `bench/many-users.mjs --short` found the idle executors and spares at 1,040 MiB of a 1 GiB
 * budget that way.
 */
export function spareFootprint(measuredBytes: readonly number[], typicalBytes: number): number {
  let total = 0;
  for (const bytes of measuredBytes) total += Math.max(bytes, typicalBytes);
  return total;
}

/**
 * Once over the idle budget, idle executors are stopped until they are this far below it (a tenth of it):
 * an executor grows a little with each job, and stopping just enough would stop one at almost every job of
 * users taking turns — each time the one whose turn comes next, on a round of the resident users.
 */
export const IDLE_BUDGET_SLACK = 0.1;

/**
 * The idle executors to stop, least recently used first: none while the idle executors and spares fit the
 * idle budget and MemAvailable is above its floor; else as few as bring them a tenth below the budget
 * (IDLE_BUDGET_SLACK) and MemAvailable back to its floor (each stopped executor frees what it uses).
 */
export function idleEvictions<K>(input: IdleBudgetInput<K>): K[] {
  const idle = [...input.idle].sort((a, b) => a.idleSince - b.idleSince);
  let overBudget = input.spareBytes - input.idleBudgetBytes;
  for (const executor of idle) overBudget += executor.residentBytes;
  if (overBudget > 0) overBudget += Math.floor(input.idleBudgetBytes * IDLE_BUDGET_SLACK);
  let memoryShort = input.availableBytes === undefined ? 0 : input.minAvailableBytes - input.availableBytes;
  const evict: K[] = [];
  for (const executor of idle) {
    if (overBudget <= 0 && memoryShort <= 0) break;
    if (executor.pinned) continue;
    evict.push(executor.key);
    overBudget -= executor.residentBytes;
    memoryShort -= executor.residentBytes;
  }
  return evict;
}

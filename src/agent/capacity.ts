/**
 * Capacity: whether an offer fits this machine's budget now, as pure arithmetic over a snapshot of the jobs
 * and executors (no I/O; the agent evicts idle executors itself, see `Agent.fits`). The checks, in order:
 * the user's own cap of jobs; then — only with per-user isolation and only if the user needs a new executor —
 * core tokens and memory for one more executor, counting users accepted a moment ago whose executors are not
 * in the pool yet.
 */
import type { CompiledAgentConfig } from '../config/index.js';

export type CapacityBudget = CompiledAgentConfig['capacity'] & {
  /** Memory each user's executor may use (`limits.memoryBytes`). */
  executorMemoryBytes: number;
};

/** A job taken here, as capacity sees it. */
export interface JobLoad {
  /** The server user it runs for. */
  user: string;
  /** Whether its executor is assigned already (else its user may still be waiting for one). */
  placed: boolean;
}

export interface CapacityInput {
  /** The offer's server user. */
  user: string;
  /** The jobs taken here and not ended. */
  jobs: Iterable<JobLoad>;
  budget: CapacityBudget;
  /** Whether each user gets an executor of their own (running as root). */
  perUser: boolean;
  /** The OS account name for a server user, or undefined when the identity policy refuses it. */
  osNameOf: (user: string) => string | undefined;
  /** Whether the pool has an executor (starting or running) for an OS account name. */
  hasExecutorFor: (osName: string) => boolean;
}

export type CapacityVerdict =
  | { kind: 'fits' }
  | { kind: 'full'; reason: string }
  /** The user needs a new executor: check `executorShortfall` with `pending` more than the pool holds. */
  | { kind: 'needs-executor'; pending: number };

/**
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
  if (osName === undefined || input.hasExecutorFor(osName)) return { kind: 'fits' };
  // Users accepted a moment ago whose executors are not in the pool yet hold their share too.
  const pending = new Set<string>();
  for (const job of jobs) {
    if (job.placed || job.user === user || pending.has(job.user)) continue;
    const name = input.osNameOf(job.user);
    if (name !== undefined && !input.hasExecutorFor(name)) pending.add(job.user);
  }
  return { kind: 'needs-executor', pending: pending.size };
}

/**
 * Whether one more executor fits beside `executors` (those in the pool plus the pending ones): undefined
 * when it does, else why not (to evict an idle executor, or to park the offer with).
 */
export function executorShortfall(executors: number, budget: CapacityBudget): string | undefined {
  const tokens = (executors + 1) * budget.tokensPerExecutor;
  const memory = (executors + 1) * budget.executorMemoryBytes;
  if (tokens <= budget.tokens && memory <= budget.memoryBytes) return undefined;
  return `no capacity for another executor (${tokens} of ${budget.tokens} core tokens, ${memory} of ${budget.memoryBytes} bytes)`;
}

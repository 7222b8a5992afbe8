/**
 * What a fault test counts, the same way in every fault test: how many jobs of a burst ended in which state,
 * how many were lost, stuck or duplicated, and how many were re-run as a new attempt.
 *
 * - lost: ended `lost` (their agent vanished; the outcome is unknown) or failed because the bus gave up on
 *   the offer (`STEWARD_DELIVERY_LIMIT`, `STEWARD_LOAD_TIMEOUT`): work that was submitted and never ran.
 * - stuck: still not terminal when the settle time ran out.
 * - duplicated: a job whose steps ran more than once in one attempt, counted from the agents' logs (every
 *   run that reaches its first step logs a `job.first-step` record with its job and attempt). A kill -9'd agent
 *   may lose its last buffered log lines, so for it the count is a lower bound.
 * - reattempted: jobs whose final attempt is above 1 (a re-run visible as a new attempt, not a duplicate).
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { JobDetail } from '../../src/protocol/index.js';
import type { Cluster } from './distributed.js';
import { agentEvents, matching, parseLogRecords } from './logs.js';
import { until } from './wait.js';

const TERMINAL = new Set(['succeeded', 'failed', 'canceled', 'expired', 'lost']);
const LOST_CODES = new Set(['STEWARD_AGENT_LOST', 'STEWARD_DELIVERY_LIMIT', 'STEWARD_LOAD_TIMEOUT']);

export interface FaultCounts {
  total: number;
  /** Jobs per final state. */
  states: Record<string, number>;
  /** Failed/expired/lost jobs per error code. */
  errors: Record<string, number>;
  lost: number;
  stuck: number;
  duplicated: number;
  reattempted: number;
}

/** Polls until every job is terminal or `timeoutMs` passes; never throws for unsettled jobs. */
export async function settleAll(cluster: Cluster, ids: string[], timeoutMs: number): Promise<JobDetail[]> {
  let jobs: JobDetail[] = [];
  const deadline = Date.now() + timeoutMs;
  // Past the deadline the check gives in: the caller counts what did not end.
  await until(
    'every job to end',
    async () => {
      jobs = [];
      // In slices: hundreds of parallel requests at once would measure the test, not the server.
      for (let i = 0; i < ids.length; i += 50) {
        jobs.push(...(await Promise.all(ids.slice(i, i + 50).map((id) => cluster.job(id)))));
      }
      return jobs.every((job) => TERMINAL.has(job.state)) || Date.now() > deadline;
    },
    timeoutMs + 60_000,
    500,
  );
  return jobs;
}

/** Runs that reached their first step, per `jobId:attempt`, from every agent log of the cluster. */
export async function stepRuns(cluster: Cluster): Promise<Map<string, number>> {
  const runs = new Map<string, number>();
  for (const name of cluster.agents.keys()) {
    const logs = path.join(cluster.agentDir(name), 'logs');
    const files = (await readdir(logs).catch(() => [] as string[])).filter(
      // steward.log links to today's dated file: read the dated files only.
      (file) => file.startsWith('steward-') && file.endsWith('.log'),
    );
    for (const file of files) {
      // A line cut short by kill -9 is skipped.
      const records = parseLogRecords(await readFile(path.join(logs, file), 'utf8'));
      for (const entry of matching(records, agentEvents.firstStepStarted)) {
        const key = `${String(entry.jobId)}:${Number(entry.attempt ?? 1)}`;
        runs.set(key, (runs.get(key) ?? 0) + 1);
      }
    }
  }
  return runs;
}

/** Settles the burst and counts it. */
export async function countFaults(cluster: Cluster, ids: string[], timeoutMs: number): Promise<FaultCounts> {
  const jobs = await settleAll(cluster, ids, timeoutMs);
  const runs = await stepRuns(cluster);
  const counts: FaultCounts = {
    total: jobs.length,
    states: {},
    errors: {},
    lost: 0,
    stuck: 0,
    duplicated: 0,
    reattempted: 0,
  };
  for (const job of jobs) {
    counts.states[job.state] = (counts.states[job.state] ?? 0) + 1;
    const code = job.error?.code;
    if (code) counts.errors[code] = (counts.errors[code] ?? 0) + 1;
    if (!TERMINAL.has(job.state)) counts.stuck += 1;
    else if (job.state === 'lost' || (code !== undefined && LOST_CODES.has(code))) counts.lost += 1;
    if (job.attempt > 1) counts.reattempted += 1;
  }
  const ours = new Set(ids);
  for (const [key, n] of runs) if (n > 1 && ours.has(key.split(':')[0]!)) counts.duplicated += 1;
  return counts;
}

/** One line for the test output: `label: total N, states {...}, lost L, stuck S, duplicated D, …`. */
export function formatCounts(label: string, counts: FaultCounts): string {
  return (
    `${label}: total ${counts.total}, states ${JSON.stringify(counts.states)}, ` +
    `errors ${JSON.stringify(counts.errors)}, lost ${counts.lost}, stuck ${counts.stuck}, ` +
    `duplicated ${counts.duplicated}, reattempted ${counts.reattempted}`
  );
}

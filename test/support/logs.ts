/**
 * The daemons' structured logs, read as records: pino JSON lines in DATA_DIR/logs/steward.log (or on stderr
 * with `--debug`). Tests match a record on its fields, never on its sentence, so rewording a message breaks
 * no test.
 *
 * Records carry an `event` name: the daemon entry points' (`daemon.up`, `bus.connected`, …) and the agent's
 * (`offer.rejected`, `job.first-step`, …, listed in `agentEvents`).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';

/** One pino record. */
export type LogRecord = Record<string, unknown> & { level: number; time: number; msg?: string };

export const LEVEL = { debug: 20, info: 30, warn: 40, error: 50 } as const;

/** The JSON lines of a log stream, skipping anything that is not a record (a line still being written). */
export function parseLogRecords(text: string): LogRecord[] {
  const records: LogRecord[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      records.push(JSON.parse(line) as LogRecord);
    } catch {
      // cut off: the rest is still being written
    }
  }
  return records;
}

/** The records of a daemon's log file so far (none when the file does not exist yet). */
export async function readLogRecords(dataDir: string): Promise<LogRecord[]> {
  return parseLogRecords(await readFile(path.join(dataDir, 'logs', 'steward.log'), 'utf8').catch(() => ''));
}

type Matcher = (record: LogRecord) => boolean;

/** Records of one `event` name. */
export function isEvent(name: string): Matcher {
  return (record) => record.event === name;
}

/** The agent's records that tests look for, by their `event` name. */
export const agentEvents = {
  /** A malformed, forged, tampered or expired offer was dead-lettered: `{ code, deliveryCount }`. */
  offerRejected: isEvent('offer.rejected'),
  /** An offer waits for room here: `{ jobId, user, reason, handBackMs }` (debug). */
  offerHeld: isEvent('offer.held'),
  /** The broker took back a loading offer after a drop and the agent keeps the job: `{ jobId }`. */
  offerTakenBack: isEvent('offer.taken-back'),
  /** That offer came back and was settled, not run again: `{ jobId, deliveryCount, state }`. */
  redeliverySettled: isEvent('offer.redelivered'),
  /** A newer attempt of a job held here arrived; the older one is stopped: `{ heldAttempt, newAttempt }`. */
  olderAttemptStopped: isEvent('job.older-attempt-stopped'),
  /** Another agent loads the job; this copy is dropped: `{ jobId, attempt, held }`. */
  copyDropped: isEvent('job.copy-dropped'),
  /** Releasing this agent's claim failed: `{ jobId, attempt, err }` (warn). */
  claimReleaseFailed: isEvent('claim.release-failed'),
  /** A job attempt's first step runs: `{ jobId, attempt, startLatencyMs, … }`. */
  firstStepStarted: isEvent('job.first-step'),
  /** A spare (pre-started executor) is ready for a new user: `{ pid, ready }`. */
  spareReady: isEvent('executor.spare-ready'),
  /** An idle executor chosen for eviction (idle budget), in the order chosen: `{ user, pid, residentMiB }`. */
  executorEvicted: isEvent('executor.evicted'),
  /** An executor process ended: `{ pid, kind, code, signal, cause, jobs }`. */
  executorExited: isEvent('executor.exited'),
  /** The first stop signal: no new jobs, waiting for the running ones: `{ running, graceMs }`. */
  stopping: isEvent('agent.stopping'),
  /** Stopped with jobs still running (grace over or a second signal): `{ running, interrupted }`. */
  stoppedWithJobsRunning: isEvent('agent.stopped-with-jobs'),
} satisfies Record<string, Matcher>;

/** Records that match. */
export function matching(records: LogRecord[], match: Matcher): LogRecord[] {
  return records.filter(match);
}

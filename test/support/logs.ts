/**
 * The daemons' structured logs, read as records: pino JSON lines in DATA_DIR/logs/steward.log (or on stderr
 * with `--debug`). Tests match a record on its fields, never on its sentence, so rewording a message breaks
 * no test.
 *
 * Records the daemon entry points write carry an `event` name (`daemon.up`, `bus.connected`, …). The agent's
 * records do not yet: `agentEvents` recognises each one by the fields only it has, in this one place. A
 * record gaining an `event` field needs only its entry here changed.
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
const has =
  (...fields: string[]): Matcher =>
  (record) =>
    fields.every((field) => field in record);

/** The agent's records that tests look for, each recognised by its distinguishing fields. */
export const agentEvents = {
  /** A malformed, forged, tampered or expired offer was dead-lettered: `{ code, deliveryCount }`. */
  offerRejected: (record) => has('code', 'deliveryCount')(record) && !('jobId' in record),
  /** An offer waits for room here: `{ jobId, user, reason, handBackMs }` (debug). */
  offerHeld: has('jobId', 'reason', 'handBackMs'),
  /** The broker took back a loading offer after a drop and the agent keeps the job. */
  offerTakenBack: (record) =>
    record.level === LEVEL.info &&
    Object.keys(record)
      .filter((key) => !BASE_FIELDS.has(key))
      .join() === 'jobId',
  /** That offer came back and was settled, not run again: `{ jobId, deliveryCount, state }`. */
  redeliverySettled: has('jobId', 'deliveryCount', 'state'),
  /** A newer attempt of a job held here arrived; the older one is stopped: `{ heldAttempt, newAttempt }`. */
  olderAttemptStopped: has('jobId', 'heldAttempt', 'newAttempt'),
  /** Another agent loads the job; this copy is dropped: `{ jobId, attempt, held }`. */
  copyDropped: has('jobId', 'attempt', 'held'),
  /** Releasing this agent's claim failed: `{ jobId, attempt, err }` (warn). */
  claimReleaseFailed: (record) => record.level === LEVEL.warn && has('jobId', 'attempt', 'err')(record),
  /** A job attempt's first step runs: `{ jobId, attempt, startLatencyMs, … }`. */
  firstStepStarted: has('jobId', 'attempt', 'startLatencyMs'),
  /** An executor process ended: `{ pid, code, signal, cause, jobs }`. */
  executorExited: has('pid', 'signal', 'jobs'),
  /** The first stop signal: no new jobs, waiting for the running ones: `{ running, graceMs }`. */
  stopping: has('running', 'graceMs'),
  /** Stopped with jobs still running (grace over or a second signal): `{ running, interrupted }`. */
  stoppedWithJobsRunning: has('running', 'interrupted'),
} satisfies Record<string, Matcher>;

/** Fields every record has (pino's and the daemon's base, the agent's child bindings). */
const BASE_FIELDS = new Set(['level', 'time', 'pid', 'host', 'msg', 'component', 'role', 'agentId']);

/** Records that match. */
export function matching(records: LogRecord[], match: Matcher): LogRecord[] {
  return records.filter(match);
}

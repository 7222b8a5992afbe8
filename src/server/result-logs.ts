/**
 * Reading a job's stored step logs in bounded pieces: a listing inlines at most `maxBytes` of text in all,
 * and one log is read as a byte range or its last lines, from a file handle the caller streams from. Logs
 * are stored bounded (head, marker, tail: see src/engine/step-log.ts) whatever the executor sent.
 */
import { open, readdir, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { StewardError } from '../protocol/index.js';
import { checkSegmentName } from './result-names.js';
import { jsonTextBytes, utf8Boundary } from './utf8-text.js';

export interface LogListing {
  stepId: string;
  stream: 'stdout' | 'stderr';
  text: string;
  size: number;
  truncated: boolean;
}

/**
 * One read of a stored log: the file opened (so an upload replacing it meanwhile cannot shift the range;
 * the caller closes it, or streams it with `autoClose`), where the read starts and ends (end exclusive).
 */
export interface LogSlice {
  handle: FileHandle;
  size: number;
  start: number;
  end: number;
}

export interface LogSliceQuery {
  offset?: number | undefined;
  limit?: number | undefined;
  tail?: number | undefined;
}

/** A stored log (`.log`), or what arrived of it while its step runs (`.live`, see live-logs.ts). */
const LOG_NAME = /^(.+)\.(stdout|stderr)\.(log|live)$/;

/**
 * Every stored log in `dir` with its size, and its first bytes as text while the listing's budget lasts
 * (never more than `maxBytes` of log text in all, read with bounded reads).
 */
export async function listLogs(dir: string, maxBytes: number): Promise<LogListing[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  const logs: LogListing[] = [];
  let budget = maxBytes;
  const present = new Set(names);
  for (const name of names.sort()) {
    const match = LOG_NAME.exec(name);
    if (!match) continue;
    // A live log whose final log is there already is about to be removed.
    if (match[3] === 'live' && present.has(`${match[1]}.${match[2]}.log`)) continue;
    const handle = await open(path.join(dir, name), 'r').catch(() => undefined);
    if (!handle) continue;
    try {
      const { size } = await handle.stat();
      const { text, sent } = await readHead(handle, size, budget);
      budget -= jsonTextBytes(text);
      logs.push({
        stepId: match[1]!,
        stream: match[2] as 'stdout' | 'stderr',
        text,
        size,
        truncated: sent < size,
      });
    } finally {
      await handle.close();
    }
  }
  return logs;
}

/** The first bytes of a log as text whose JSON form fits `budget`, and how many bytes of the file that is. */
async function readHead(
  handle: FileHandle,
  size: number,
  budget: number,
): Promise<{ text: string; sent: number }> {
  const length = Math.min(size, budget);
  if (length <= 0) return { text: '', sent: 0 };
  const buffer = Buffer.alloc(length);
  const { bytesRead } = await handle.read(buffer, 0, length, 0);
  let sent = bytesRead < size ? utf8Boundary(buffer, bytesRead) : bytesRead;
  let text = buffer.toString('utf8', 0, sent);
  // The budget is of the response: control characters take up to six bytes in JSON.
  for (let encoded = jsonTextBytes(text); encoded > budget; encoded = jsonTextBytes(text)) {
    sent = utf8Boundary(buffer, Math.floor((sent * budget) / encoded));
    text = buffer.toString('utf8', 0, sent);
  }
  return { text, sent };
}

/**
 * Where a read of one stored log in `dir` starts and ends: a byte range, or the start of its last `tail`
 * lines (found by reading backwards in 64 KiB blocks; a stored log is bounded by the step log cap).
 */
export async function openLogSlice(
  dir: string,
  jobId: string,
  step: string,
  stream: 'stdout' | 'stderr',
  query: LogSliceQuery,
): Promise<LogSlice> {
  checkSegmentName(step, 'params.step');
  if (query.tail !== undefined && query.offset !== undefined) {
    throw new StewardError(
      'STEWARD_BAD_REQUEST',
      'query: give either tail (lines) or offset (bytes), not both',
      {
        details: {
          issues: [
            { field: 'query.tail', rule: 'exclusive', message: 'tail excludes offset', value: query.tail },
          ],
        },
      },
    );
  }
  const base = path.join(dir, `${step}.${stream}`);
  // The final log once the step ended; while it runs, what has arrived of it so far.
  const openLog = (suffix: string) =>
    open(`${base}.${suffix}`, 'r').catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      throw error;
    });
  const handle = (await openLog('log')) ?? (await openLog('live'));
  if (!handle)
    throw new StewardError('STEWARD_NOT_FOUND', `job ${jobId} has no ${stream} log for step ${step}`);
  try {
    const { size } = await handle.stat();
    let start = Math.min(query.offset ?? 0, size);
    if (query.tail !== undefined) start = await tailStart(handle, size, query.tail);
    const end = query.limit === undefined ? size : Math.min(size, start + query.limit);
    return { handle, size, start, end };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/** Start of the last `lines` lines of a file (a final newline ends the last line, it does not start one). */
async function tailStart(handle: FileHandle, size: number, lines: number): Promise<number> {
  const block = Buffer.allocUnsafe(64 * 1024);
  let end = size;
  let seen = 0;
  let skipFinal = true;
  while (end > 0) {
    const start = Math.max(0, end - block.length);
    const { bytesRead } = await handle.read(block, 0, end - start, start);
    for (let i = bytesRead - 1; i >= 0; i--) {
      if (block[i] !== 0x0a) {
        skipFinal = false;
        continue;
      }
      if (skipFinal) {
        skipFinal = false;
        continue;
      }
      seen++;
      if (seen === lines) return start + i + 1;
    }
    end = start;
  }
  return 0;
}

/**
 * Bounded step logs. A stream of any length is stored as its first half-limit bytes (the head), a marker
 * line saying how many bytes were dropped, and its last half-limit bytes (the tail); a stream that fits the
 * limit is stored whole, byte for byte. The work is done while the bytes arrive, so disk and memory stay
 * bounded however much a step writes:
 *   - the head is written straight into the log file;
 *   - the tail goes round a ring file of half the limit beside it (written in place, so a 1 GB stream costs
 *     about one pwrite per MiB beyond the head, never more disk);
 *   - at the end the marker and the ring, in order, are appended to the log file and the ring is removed.
 * Memory is what the Writable buffers while one write is in flight (`highWaterMark`, 1 MiB).
 *
 * The executor uses it for a step's stdout and stderr (see processes.ts), and the server for every log
 * upload, so a log the server stores is bounded even when the executor that sent it was not.
 */
import { open, rm, type FileHandle } from 'node:fs/promises';
import { Writable } from 'node:stream';

/** Default cap of one stored step log stream (stdout or stderr): 32 MiB. */
export const DEFAULT_STEP_LOG_LIMIT_BYTES = 32 * 1024 * 1024;

/** The marker line is at most this long, so a stored log is at most `limit + STEP_LOG_MARKER_MAX_BYTES`. */
export const STEP_LOG_MARKER_MAX_BYTES = 256;

/** Smallest accepted limit: a head and a tail of a few bytes would make the marker most of the log. */
export const MIN_STEP_LOG_LIMIT_BYTES = 1024;

/** The line between head and tail. Starts a line of its own; `leadingNewline` when the head did not end one. */
export function stepLogMarker(
  dropped: number,
  headBytes: number,
  tailBytes: number,
  leadingNewline: boolean,
): string {
  return `${leadingNewline ? '\n' : ''}[steward: ${dropped} bytes dropped here; this log keeps the first ${headBytes} and the last ${tailBytes} bytes]\n`;
}

/** Matches a marker line in a stored log (for clients that want to find it). */
export const STEP_LOG_MARKER_PATTERN =
  /^\[steward: (\d+) bytes dropped here; this log keeps the first (\d+) and the last (\d+) bytes\]$/m;

export interface StepLogSummary {
  /** Bytes the stream carried. */
  receivedBytes: number;
  /** Bytes left out between head and tail (0 when the stream fitted). */
  droppedBytes: number;
  /** Size of the stored file. */
  storedBytes: number;
}

/**
 * A Writable that stores what it is given in `file` bounded to `limitBytes` (head, marker, tail). Call
 * `finish()` once the input has ended (or was cut off): it ends the Writable, assembles the file and says
 * what was kept. Write errors (a full disk) do not stall the writer — it keeps accepting and discarding, so a
 * step blocked on a full pipe never hangs — and `finish()` rethrows the first one.
 */
export class StepLogWriter extends Writable {
  private readonly headLimit: number;
  private readonly tailLimit: number;
  private readonly ringFile: string;
  private ring: FileHandle | undefined;
  private headBytes = 0;
  /** Bytes received after the head; the last `tailLimit` of them are in the ring at `index % tailLimit`. */
  private tailBytes = 0;
  private received = 0;
  private lastHeadByte = 0x0a;
  private failure: Error | undefined;

  private constructor(
    private readonly file: string,
    private readonly handle: FileHandle,
    limitBytes: number,
  ) {
    super({ highWaterMark: 1024 * 1024, decodeStrings: true });
    this.headLimit = Math.floor(limitBytes / 2);
    this.tailLimit = limitBytes - this.headLimit;
    this.ringFile = `${file}.tail`;
  }

  /** Creates (truncates) `file`, mode 0600. */
  static async create(file: string, limitBytes: number): Promise<StepLogWriter> {
    if (!Number.isSafeInteger(limitBytes) || limitBytes < MIN_STEP_LOG_LIMIT_BYTES)
      throw new RangeError(`step log limit must be an integer of at least ${MIN_STEP_LOG_LIMIT_BYTES} bytes`);
    const handle = await open(file, 'w', 0o600);
    return new StepLogWriter(file, handle, limitBytes);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.take([chunk]).then(() => callback(), callback);
  }

  override _writev(chunks: { chunk: Buffer }[], callback: (error?: Error | null) => void): void {
    this.take(chunks.map((entry) => entry.chunk)).then(() => callback(), callback);
  }

  private async take(chunks: Buffer[]): Promise<void> {
    let length = 0;
    for (const chunk of chunks) length += chunk.length;
    this.received += length;
    if (this.failure) return;
    try {
      let rest = chunks;
      if (this.headBytes < this.headLimit) {
        const [head, tail] = splitBuffers(chunks, Math.min(this.headLimit - this.headBytes, length));
        const headLength = byteLength(head);
        if (headLength > 0) await this.handle.writev(head, this.headBytes);
        this.headBytes += headLength;
        const last = head[head.length - 1];
        if (last && last.length > 0) this.lastHeadByte = last[last.length - 1]!;
        rest = tail;
      }
      const restLength = byteLength(rest);
      if (restLength > 0) await this.toRing(rest, restLength);
    } catch (error) {
      // Keep accepting (and dropping) so the producer never blocks on us; finish() reports it.
      this.failure ??= error as Error;
    }
  }

  private async toRing(chunks: Buffer[], length: number): Promise<void> {
    this.ring ??= await open(this.ringFile, 'w+', 0o600);
    let start = this.tailBytes;
    this.tailBytes += length;
    if (length > this.tailLimit) {
      // Only the last tailLimit bytes can survive; the rest would be overwritten in this very write.
      const skip = length - this.tailLimit;
      chunks = splitBuffers(chunks, skip)[1];
      start += skip;
      length = this.tailLimit;
    }
    const position = start % this.tailLimit;
    const [first, second] = splitBuffers(chunks, Math.min(length, this.tailLimit - position));
    await this.ring.writev(first, position);
    if (second.length > 0) await this.ring.writev(second, 0);
  }

  /** Ends the input, writes marker and tail after the head, removes the ring; the file is then complete. */
  async finish(): Promise<StepLogSummary> {
    if (!this.writableFinished) {
      await new Promise<void>((resolve, reject) => {
        this.once('error', reject);
        this.end(() => resolve());
      });
    }
    try {
      if (this.failure) throw this.failure;
      let position = this.headBytes;
      const dropped = Math.max(0, this.tailBytes - this.tailLimit);
      if (this.ring && this.tailBytes > 0) {
        const kept = Math.min(this.tailBytes, this.tailLimit);
        if (dropped > 0) {
          const marker = Buffer.from(
            stepLogMarker(dropped, this.headBytes, kept, this.lastHeadByte !== 0x0a),
          );
          await this.handle.write(marker, 0, marker.length, position);
          position += marker.length;
        }
        if (dropped > 0) {
          // The ring went round: its oldest byte is at the next write position.
          const oldest = this.tailBytes % this.tailLimit;
          position = await copyRange(this.ring, oldest, this.tailLimit - oldest, this.handle, position);
          if (oldest > 0) position = await copyRange(this.ring, 0, oldest, this.handle, position);
        } else {
          position = await copyRange(this.ring, 0, kept, this.handle, position);
        }
      }
      await this.handle.truncate(position);
      return { receivedBytes: this.received, droppedBytes: dropped, storedBytes: position };
    } finally {
      await this.handle.close().catch(() => undefined);
      await this.ring?.close().catch(() => undefined);
      if (this.ring) await rm(this.ringFile, { force: true });
    }
  }

  /** Closes and removes what was written (an upload that failed). */
  async discard(): Promise<void> {
    this.destroy();
    await this.handle.close().catch(() => undefined);
    await this.ring?.close().catch(() => undefined);
    await rm(this.ringFile, { force: true });
    await rm(this.file, { force: true });
  }
}

function byteLength(chunks: Buffer[]): number {
  let length = 0;
  for (const chunk of chunks) length += chunk.length;
  return length;
}

/** The first `count` bytes of `chunks` and the rest, without copying. */
function splitBuffers(chunks: Buffer[], count: number): [Buffer[], Buffer[]] {
  const first: Buffer[] = [];
  const rest: Buffer[] = [];
  let left = count;
  for (const chunk of chunks) {
    if (left >= chunk.length) {
      first.push(chunk);
      left -= chunk.length;
    } else if (left > 0) {
      first.push(chunk.subarray(0, left));
      rest.push(chunk.subarray(left));
      left = 0;
    } else {
      rest.push(chunk);
    }
  }
  return [first, rest];
}

async function copyRange(
  from: FileHandle,
  start: number,
  length: number,
  to: FileHandle,
  position: number,
): Promise<number> {
  const buffer = Buffer.allocUnsafe(Math.min(length, 1024 * 1024));
  let done = 0;
  while (done < length) {
    const { bytesRead } = await from.read(buffer, 0, Math.min(buffer.length, length - done), start + done);
    if (bytesRead === 0) throw new Error('step log ring ended early');
    await to.write(buffer, 0, bytesRead, position);
    position += bytesRead;
    done += bytesRead;
  }
  return position;
}

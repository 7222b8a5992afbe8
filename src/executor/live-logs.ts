/**
 * Ships a running step's stdout and stderr to the server while it runs. The shipper holds no copy of what
 * the step writes: it reads the step's log files (the engine writes each stream's first half-limit straight
 * into its file as it arrives, see engine/step-log.ts) from where it last stopped, and sends what is new
 * every `intervalMs` or as soon as `chunkBytes` are waiting, one request at a time. A step printing faster
 * than the server takes it only makes the shipper lag behind the file: its memory is one chunk, whatever
 * the step does, and the step never waits for it.
 *
 * Only the head (the first half of the step log limit) is shipped live: the final stored log keeps those
 * bytes as they are, so offsets stay true after the final upload replaces the live log. Past that, the rest
 * arrives with the final upload when the step ends.
 */
import { open } from 'node:fs/promises';
import type { AppendLogOutcome } from './server-client.js';

export interface LiveLogSink {
  appendLog(
    stepId: string,
    stream: 'stdout' | 'stderr',
    offset: number,
    bytes: Buffer,
  ): Promise<AppendLogOutcome>;
}

export interface LiveLogOptions {
  /** The step log limit: bytes [0, limit / 2) of each stream are shipped. */
  limitBytes: number;
  /** Longest wait before what is new is sent. Default 250 ms. */
  intervalMs?: number;
  /** Largest request, and the size that is sent without waiting for the interval. Default 64 KiB. */
  chunkBytes?: number;
  /** Failed requests in a row after which the job's live logs are given up. Default 5. */
  maxFailures?: number;
}

interface StreamState {
  stepId: string;
  stream: 'stdout' | 'stderr';
  file: string;
  /** Bytes the server has. */
  shipped: number;
  /** The step ended: ship what is left once, then forget the stream. */
  ended: boolean;
  /** Past the limit or refused: nothing more of this stream. */
  closed: boolean;
}

export class LiveLogShipper {
  private readonly streams: StreamState[] = [];
  private readonly headLimit: number;
  private readonly intervalMs: number;
  private readonly chunkBytes: number;
  private readonly maxFailures: number;
  private failures = 0;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private pumping: Promise<void> | undefined;

  constructor(
    private readonly sink: LiveLogSink,
    options: LiveLogOptions,
  ) {
    this.headLimit = Math.floor(options.limitBytes / 2);
    this.intervalMs = options.intervalMs ?? 250;
    this.chunkBytes = options.chunkBytes ?? 64 * 1024;
    this.maxFailures = options.maxFailures ?? 5;
  }

  /** Starts shipping a step's two logs; the function returned says the step's logs are complete. */
  watch(logs: { stepId: string; stdoutPath: string; stderrPath: string }): () => void {
    if (this.stopped) return () => {};
    const states: StreamState[] = (['stdout', 'stderr'] as const).map((stream) => ({
      stepId: logs.stepId,
      stream,
      file: stream === 'stdout' ? logs.stdoutPath : logs.stderrPath,
      shipped: 0,
      ended: false,
      closed: false,
    }));
    this.streams.push(...states);
    this.schedule();
    return () => {
      for (const state of states) state.ended = true;
      this.schedule(0);
    };
  }

  /** Stops shipping and waits for a request in flight (before the final uploads, which replace it all). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.pumping;
  }

  private schedule(delayMs = this.intervalMs): void {
    if (this.stopped || this.pumping) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.pumping = this.pump().finally(() => {
        this.pumping = undefined;
        if (this.streams.length > 0) this.schedule();
      });
    }, delayMs);
  }

  /** One pass over every stream: sends what is new, in chunks, one request at a time. Never rejects. */
  private async pump(): Promise<void> {
    for (const state of [...this.streams]) {
      if (this.stopped) return;
      const ended = state.ended;
      try {
        await this.shipStream(state, ended);
        this.failures = 0;
      } catch {
        if (++this.failures >= this.maxFailures) this.giveUp();
        return;
      }
      if (state.closed || ended) this.streams.splice(this.streams.indexOf(state), 1);
    }
  }

  private async shipStream(state: StreamState, ended: boolean): Promise<void> {
    const handle = await open(state.file, 'r').catch(() => undefined);
    if (!handle) return; // not created yet
    try {
      const buffer = Buffer.allocUnsafe(this.chunkBytes);
      while (!this.stopped && !state.closed) {
        const available = Math.min((await handle.stat()).size, this.headLimit) - state.shipped;
        if (available <= 0) return;
        const { bytesRead } = await handle.read(
          buffer,
          0,
          Math.min(available, this.chunkBytes),
          state.shipped,
        );
        if (bytesRead === 0) return;
        // Whole characters only, unless the step has ended or this is the last byte shipped live.
        const last = ended || state.shipped + bytesRead >= this.headLimit;
        const length = last ? bytesRead : completeUtf8Length(buffer, bytesRead);
        if (length === 0) return;
        const outcome = await this.sink.appendLog(
          state.stepId,
          state.stream,
          state.shipped,
          Buffer.from(buffer.subarray(0, length)),
        );
        if (outcome.kind === 'stored') state.shipped += length;
        // The server has less than we thought (it lost a chunk): send again from what it has.
        else if (outcome.kind === 'mismatch') state.shipped = Math.min(outcome.size, state.shipped);
        else if (outcome.status === 413) state.closed = true;
        else return this.giveUp();
        // Less than a chunk waiting: the rest goes with the next interval.
        if (!ended && length < this.chunkBytes) return;
      }
    } finally {
      await handle.close();
    }
  }

  /** The server will not take live logs (an older server, a dead token, or too many failures). */
  private giveUp(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.streams.length = 0;
  }
}

/** The length of `buffer[0, length)` without a UTF-8 sequence cut at its end. */
export function completeUtf8Length(buffer: Buffer, length: number): number {
  // Look back over at most three bytes for the lead byte of the last sequence.
  for (let back = 1; back <= Math.min(4, length); back++) {
    const byte = buffer[length - back]!;
    if ((byte & 0xc0) === 0x80) continue; // continuation byte
    const need = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1;
    return need > back ? length - back : length;
  }
  return length; // not UTF-8 at all: send as it is
}

/**
 * Live step logs in the browser. One `LogBuffer` per step stream holds complete lines plus the unfinished
 * last one, keyed by byte offset in the stored log so chunks that overlap what was fetched (or arrive
 * twice) are cut, and a gap is fetched from the server. Memory is bounded: past `MAX_LINES` the oldest
 * lines are dropped and counted (the whole log stays downloadable).
 */
import { apiRaw, encode } from './api.js';
import type { LogChunk } from './types.js';

export const MAX_LINES = 200_000;
const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** How much of a log to fetch when it is first opened: its last lines. */
const INITIAL_TAIL = 100_000;

export class LogBuffer {
  lines: string[] = [];
  partial = '';
  /** Byte offset of the end of what the buffer holds. */
  end = 0;
  dropped = 0;
  version = 0;
  loaded = false;
  /** Opened after its step ended: what was fetched is the whole log. */
  settled = false;
  private loading: Promise<void> | undefined;
  private pending: LogChunk[] = [];
  private readonly listeners = new Set<() => void>();

  constructor(
    private readonly jobId: string,
    readonly stepId: string,
    readonly stream: 'stdout' | 'stderr',
  ) {}

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Every line including the unfinished last one. */
  get count(): number {
    return this.lines.length + (this.partial ? 1 : 0);
  }
  line(index: number): string {
    return index < this.lines.length ? (this.lines[index] ?? '') : this.partial;
  }

  private appendText(text: string): void {
    const parts = (this.partial + text).split('\n');
    this.partial = parts.pop() ?? '';
    for (const part of parts) this.lines.push(part);
    if (this.lines.length > MAX_LINES) {
      const cut = this.lines.length - MAX_LINES;
      this.lines.splice(0, cut);
      this.dropped += cut;
    }
  }

  private changed(): void {
    this.version++;
    for (const listener of this.listeners) listener();
  }

  /** A chunk from the job's event stream. */
  push(chunk: LogChunk): void {
    if (!this.loaded) {
      // Not opened yet: the first load fetches the stored log, which holds this chunk. While that fetch
      // is in flight, keep chunks to apply after it.
      if (this.loading) this.pending.push(chunk);
      return;
    }
    this.apply(chunk);
    this.changed();
  }

  private apply(chunk: LogChunk): void {
    const bytes = encoder.encode(chunk.text);
    const chunkEnd = chunk.offset + bytes.length;
    if (chunkEnd <= this.end) return; // already have it
    if (chunk.offset > this.end) {
      // A gap (chunks missed while disconnected): fetch what lies between, then this chunk.
      void this.fill(this.end, chunk.offset - this.end).then(() => {
        this.apply(chunk);
        this.changed();
      });
      return;
    }
    this.appendText(decoder.decode(bytes.subarray(this.end - chunk.offset)));
    this.end = chunkEnd;
  }

  private async fill(offset: number, limit: number): Promise<void> {
    const response = await apiRaw(this.path(), { query: { offset, limit } });
    const text = await response.text();
    if (offset === this.end) {
      this.appendText(text);
      this.end = offset + encoder.encode(text).length;
    }
  }

  private path(): string {
    return `/api/jobs/${encode(this.jobId)}/logs/${encode(this.stepId)}/${this.stream}`;
  }

  /** Fetches the stored log's last lines once; chunks that came meanwhile are applied after. */
  load(): Promise<void> {
    this.loading ??= (async () => {
      try {
        const response = await apiRaw(this.path(), { query: { tail: INITIAL_TAIL } });
        const text = await response.text();
        const start = Number(response.headers.get('x-steward-log-offset') ?? 0);
        this.dropped = 0;
        this.appendText(text);
        this.end = start + encoder.encode(text).length;
      } catch {
        // Not stored yet (the step has not written anything): start empty at offset 0.
      }
      this.loaded = true;
      for (const chunk of this.pending.splice(0)) this.apply(chunk);
      this.changed();
    })();
    return this.loading;
  }
}

/** The buffers of one job page. */
export class JobLogs {
  private readonly buffers = new Map<string, LogBuffer>();
  constructor(private readonly jobId: string) {}

  /**
   * `ended`: the step has ended. A log opened while the step ran but that never got a live chunk (a server
   * without live logs) is read again once the step has ended and its log is stored.
   */
  get(stepId: string, stream: 'stdout' | 'stderr', ended = false): LogBuffer {
    const key = `${stepId}\u0000${stream}`;
    let buffer = this.buffers.get(key);
    if (buffer && ended && buffer.loaded && buffer.end === 0 && !buffer.settled) buffer = undefined;
    if (!buffer) {
      buffer = new LogBuffer(this.jobId, stepId, stream);
      buffer.settled = ended;
      this.buffers.set(key, buffer);
    }
    return buffer;
  }

  /** Chunks of a log nobody opened yet are dropped: opening it fetches the stored log. */
  push(chunk: LogChunk): void {
    this.get(chunk.stepId, chunk.stream).push(chunk);
  }
}

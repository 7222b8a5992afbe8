/**
 * Executor output, captured by the agent into root-owned per-user files: <logDir>/<user>/executor-DATE.log.
 * A new file each day (daily rotation by name); files older than the retention are deleted.
 */
import {
  createWriteStream,
  lstatSync,
  mkdirSync,
  renameSync,
  symlinkSync,
  unlinkSync,
  type WriteStream,
} from 'node:fs';
import { readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, type Writable } from 'node:stream';

/**
 * Most users' log files held open at once: the least recently written is closed past it (and opened again,
 * appending, on its user's next line), so an agent serving many users does not hold a descriptor per user
 * it ever served.
 */
const MAX_OPEN_STREAMS = 64;

/** A user's open log file; `input` takes its lines, `closed` settles once its file is closed. */
interface UserLog {
  day: string;
  input: Writable;
  closed: Promise<void>;
}

export class UserLogs {
  /** Open files by user, least recently written first. */
  private readonly streams = new Map<string, UserLog>();
  /** Users' files being closed (ended, lines still going out), until they are. */
  private readonly closing = new Map<string, Promise<void>>();

  constructor(
    private readonly logDir: string,
    private readonly retentionDays = 90,
  ) {
    mkdirSync(logDir, { recursive: true, mode: 0o700 });
  }

  write(user: string, pid: number | undefined, stream: 'stdout' | 'stderr', line: string): void {
    const now = new Date();
    const day = now.toISOString().slice(0, 10);
    let entry = this.streams.get(user);
    if (!entry || entry.day !== day) {
      if (entry) this.end(user, entry);
      entry = this.open(user, day);
    }
    this.streams.delete(user);
    this.streams.set(user, entry);
    if (this.streams.size > MAX_OPEN_STREAMS) {
      const [oldest, open] = this.streams.entries().next().value!;
      this.streams.delete(oldest);
      this.end(oldest, open);
    }
    entry.input.write(`${now.toISOString()} pid=${pid ?? '-'} ${stream} ${line}\n`);
  }

  /**
   * Opens (appending) the user's file of `day`. While the user's previous file is still taking the lines
   * written before it was closed, this one takes its lines into a buffer and opens only after: a user's
   * lines stay in the order they came, across a close and a reopen.
   */
  private open(user: string, day: string): UserLog {
    const dir = path.join(this.logDir, user);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const file = path.join(dir, `executor-${day}.log`);
    const start = (): { stream: WriteStream; closed: Promise<void> } => {
      const stream = createWriteStream(file, { flags: 'a', mode: 0o600 });
      stream.on('error', () => {});
      return { stream, closed: new Promise((resolve) => stream.once('close', () => resolve())) };
    };
    const previous = this.closing.get(user);
    if (!previous) {
      const { stream, closed } = start();
      return { day, input: stream, closed };
    }
    const input = new PassThrough();
    const closed = previous.then(() => {
      const started = start();
      input.pipe(started.stream);
      return started.closed;
    });
    return { day, input, closed };
  }

  /** Ends a user's file; its lines still go out, and a reopen of the user's log waits for them. */
  private end(user: string, log: UserLog): void {
    log.input.end();
    const closed: Promise<void> = log.closed.finally(() => {
      if (this.closing.get(user) === closed) this.closing.delete(user);
    });
    this.closing.set(user, closed);
  }

  /** Deletes per-user log files older than the retention. */
  async prune(now = Date.now()): Promise<number> {
    let removed = 0;
    const cutoff = now - this.retentionDays * 86_400_000;
    for (const user of await readdir(this.logDir).catch(() => [] as string[])) {
      const dir = path.join(this.logDir, user);
      for (const file of await readdir(dir).catch(() => [] as string[])) {
        const target = path.join(dir, file);
        const info = await stat(target).catch(() => undefined);
        if (info?.isFile() && info.mtimeMs < cutoff) {
          await rm(target, { force: true });
          removed += 1;
        }
      }
    }
    return removed;
  }

  close(): void {
    for (const [user, log] of this.streams) this.end(user, log);
    this.streams.clear();
  }
}

/**
 * The agent's (and `steward up`'s) own log, rotated daily by name: `<dir>/<base>-DATE.log`, with
 * `<base>.log` a symlink to today's file so `tail -f` and tools find it. Files older than the retention are
 * deleted at each rotation. Accepts pino's output (one JSON line per write).
 */
export class DailyLogFile {
  private day = '';
  private stream: WriteStream | undefined;

  constructor(
    private readonly dir: string,
    private readonly base: string,
    private readonly retentionDays = 90,
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  /** Today's file. */
  get file(): string {
    return path.join(this.dir, `${this.base}-${this.day}.log`);
  }

  write(chunk: string): boolean {
    const day = new Date().toISOString().slice(0, 10);
    if (day !== this.day) this.rotate(day);
    return this.stream!.write(chunk);
  }

  end(): void {
    this.stream?.end();
    this.stream = undefined;
  }

  private rotate(day: string): void {
    this.stream?.end();
    this.day = day;
    this.stream = createWriteStream(this.file, { flags: 'a', mode: 0o600 });
    this.stream.on('error', () => {});
    const link = path.join(this.dir, `${this.base}.log`);
    try {
      const info = lstatSync(link);
      // A plain file from before rotation existed is kept under another name, never overwritten.
      if (!info.isSymbolicLink()) renameSync(link, path.join(this.dir, `${this.base}-before-rotation.log`));
      else unlinkSync(link);
    } catch {
      // no link yet
    }
    try {
      symlinkSync(path.basename(this.file), link);
    } catch {
      // another process made it; harmless
    }
    void this.prune();
  }

  /** Deletes this log's dated files older than the retention. */
  async prune(now = Date.now()): Promise<number> {
    const cutoff = new Date(now - this.retentionDays * 86_400_000).toISOString().slice(0, 10);
    let removed = 0;
    const pattern = new RegExp(
      `^${this.base.replace(/[^A-Za-z0-9]/g, '\\$&')}-(\\d{4}-\\d{2}-\\d{2})\\.log$`,
    );
    for (const file of await readdir(this.dir).catch(() => [] as string[])) {
      const day = pattern.exec(file)?.[1];
      if (day && day < cutoff) {
        await rm(path.join(this.dir, file), { force: true });
        removed += 1;
      }
    }
    return removed;
  }
}

/**
 * Group commit for the SQLite store.
 *
 * SQLite's own durable commit (WAL with synchronous=FULL) fsyncs the WAL inside every COMMIT, and
 * better-sqlite3 runs that on the event loop: the server stood still for each fsync (4 ms here), so
 * commits — and everything else the server does — queued behind each other. Instead the store commits
 * with synchronous=NORMAL (the WAL is written at COMMIT but not flushed; readers see the change at once, and
 * it survives a crash of the process) and makes commits durable in groups: `durable()` flushes the WAL
 * file with one fsync on libuv's thread pool, which covers every commit written before it started. The
 * server waits for it before it answers a request that wrote, and before it acks the broker messages it
 * applied; the event loop keeps serving meanwhile, and commits arriving during one flush share the next.
 * An acknowledged write therefore survives a power cut as before. What is committed but not yet flushed is
 * visible to readers for those few milliseconds; a power cut in that window loses it (nobody was told it
 * was done).
 */
import { open, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type BetterSqlite3 from 'better-sqlite3';
import { LRUCache } from 'lru-cache';
import type { SqliteDatabase as SqliteDialectDatabase, SqliteStatement } from 'kysely';

export class WalFlusher {
  private handle: FileHandle | undefined;
  /** Commits written since the last flush started. */
  private dirty = false;
  private inFlight: Promise<void> | undefined;
  private queued: Promise<void> | undefined;

  constructor(private readonly databaseFile: string) {}

  /** Called after every commit (see `withCommitTracking`). */
  committed(): void {
    this.dirty = true;
  }

  /** Resolves once every commit made before this call is on disk. */
  durable(): Promise<void> {
    if (!this.dirty && !this.inFlight) return Promise.resolve();
    // A flush that started before this call may have missed the latest commits: wait for the next one,
    // which all callers during the current flush share.
    if (this.queued) return this.queued;
    if (!this.inFlight) return this.start();
    if (!this.dirty) return this.inFlight;
    this.queued = this.inFlight
      .catch(() => {})
      .then(() => {
        this.queued = undefined;
        return this.start();
      });
    return this.queued;
  }

  async close(): Promise<void> {
    await this.durable().catch(() => {});
    const handle = this.handle;
    this.handle = undefined;
    await handle?.close().catch(() => {});
  }

  private start(): Promise<void> {
    this.dirty = false;
    const flush = this.flush().finally(() => {
      this.inFlight = undefined;
    });
    this.inFlight = flush;
    return flush;
  }

  private async flush(): Promise<void> {
    if (!this.handle) {
      // The WAL file lives as long as the connection; the first flush also makes its directory entry durable.
      this.handle = await open(`${this.databaseFile}-wal`, 'r');
      const directory = await open(path.dirname(this.databaseFile), 'r');
      try {
        await directory.sync();
      } finally {
        await directory.close();
      }
    }
    try {
      await this.handle.sync();
    } catch (error) {
      // A failed flush leaves durability unknown: the next caller tries again on a fresh handle.
      this.dirty = true;
      const handle = this.handle;
      this.handle = undefined;
      await handle.close().catch(() => {});
      throw error;
    }
  }
}

const STATEMENT_CACHE_SIZE = 256;

/**
 * The database as Kysely's SQLite dialect sees it, with two additions: prepared statements are cached by
 * their SQL (Kysely prepares every query afresh), and a statement that writes and leaves no transaction open
 * (an autocommit write, or COMMIT) tells the flusher a commit happened.
 */
export function withCommitTracking(
  database: BetterSqlite3.Database,
  flusher: WalFlusher | undefined,
): SqliteDialectDatabase {
  const statements = new LRUCache<string, SqliteStatement>({ max: STATEMENT_CACHE_SIZE });
  const track = (statement: BetterSqlite3.Statement): SqliteStatement => {
    if (statement.reader || !flusher) return statement;
    return {
      reader: false,
      all: (parameters) => statement.all(parameters),
      iterate: (parameters) => statement.iterate(parameters),
      run: (parameters) => {
        const result = statement.run(parameters);
        if (!database.inTransaction) flusher.committed();
        return result;
      },
    };
  };
  return {
    prepare(sql: string) {
      let statement = statements.get(sql);
      if (!statement) {
        statement = track(database.prepare(sql));
        statements.set(sql, statement);
      }
      return statement;
    },
    close() {
      statements.clear();
      database.close();
    },
  };
}

/**
 * Live changes across servers sharing one PostgreSQL database.
 *
 * Invariant (write side, `ChangeNotifier`): every committed job or step change is announced with NOTIFY in
 * the transaction that makes it, so PostgreSQL delivers the notice only if and when that transaction commits:
 * listeners never hear of a change that was rolled back, and a server's live watchers also hear what other
 * servers applied. SQLite serves one server only and announces nothing.
 *
 * Read side (`ChangeListener`): hears the job changes other servers commit (LISTEN on the store's NOTIFY
 * channel), over one dedicated connection outside the pool: a pooled connection would be handed to other
 * queries and drop the LISTEN. When the connection breaks it reconnects with capped backoff and reports
 * `onReconnect`, because notifications sent while it was away are gone and listeners must re-read.
 */
import { createHash } from 'node:crypto';
import { sql, type Transaction } from 'kysely';
import pg from 'pg';
import { connectionStringWith } from './connection.js';
import type { Database } from './schema.js';

/** A committed change of one job (and one of its steps), as announced to every server. */
export interface JobChangeNotice {
  /** `Store.instanceId` of the store that made the change. */
  origin: string;
  jobId: string;
  /** Set for step changes. */
  stepId?: string;
  /** Set when a live step log grew: its bytes [offset, size) arrived (see JobFileStore.announceLog). */
  log?: { stepId: string; stream: 'stdout' | 'stderr'; offset: number; size: number };
}

/**
 * NOTIFY channels are per database, not per schema: servers on different schemas of one database must not
 * hear each other, so the channel is named after the schema (hashed: identifiers stop at 63 bytes).
 */
export function changeChannelFor(schema: string | undefined): string {
  return `steward_changes_${createHash('sha256')
    .update(schema ?? 'public')
    .digest('hex')
    .slice(0, 24)}`;
}

/** The write side: announces a job's change from inside the transaction that makes it (see above). */
export class ChangeNotifier {
  constructor(
    /** The announcing store's instance id: its own listener skips what it announced. */
    readonly origin: string,
    /** The NOTIFY channel of this database + schema; undefined on SQLite (nothing to announce). */
    readonly channel: string | undefined,
  ) {}

  async notify(trx: Transaction<Database>, jobId: string, stepId?: string): Promise<void> {
    if (this.channel === undefined) return;
    const notice: JobChangeNotice = { origin: this.origin, jobId, ...(stepId ? { stepId } : {}) };
    await sql`SELECT pg_notify(${this.channel}, ${JSON.stringify(notice)})`.execute(trx);
  }

  /** Announces several jobs' changes with one statement (one notice each, as `notify` sends). */
  async notifyMany(trx: Transaction<Database>, jobIds: readonly string[]): Promise<void> {
    if (this.channel === undefined || jobIds.length === 0) return;
    const notices = jobIds.map((jobId) =>
      JSON.stringify({ origin: this.origin, jobId } satisfies JobChangeNotice),
    );
    await sql`SELECT pg_notify(${this.channel}, notice) FROM unnest(${notices}::text[]) AS notice`.execute(
      trx,
    );
  }
}

export interface ChangeListenerOptions {
  url: string;
  channel: string;
  /** The role's password when it is not in the URL (`store.postgres.passwordFile`). */
  password?: string | undefined;
  /** Called for each notice of another store instance (notices of `ownOrigin` are skipped). */
  onNotice: (notice: JobChangeNotice) => void;
  /** Called after a lost connection was re-established: notices of the gap were missed. */
  onReconnect: () => void;
  /** Connection failures, for the log. */
  onError: (error: Error) => void;
  /** The listening store's own instance id: what it changed itself it already published. */
  ownOrigin: string;
  /** First reconnect delay in ms, doubled up to `maxBackoffMs`. Default 250. */
  initialBackoffMs?: number;
  /** Default 10000. */
  maxBackoffMs?: number;
}

export class ChangeListener {
  private client: pg.Client | undefined;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  private backoffMs: number;
  private connectedOnce = false;

  constructor(private readonly options: ChangeListenerOptions) {
    this.backoffMs = options.initialBackoffMs ?? 250;
  }

  /** Resolves once listening; a failure of the first connection rejects (the server cannot start blind). */
  async start(): Promise<void> {
    await this.connect();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => undefined);
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({
      connectionString: connectionStringWith(this.options.url, this.options.password),
    });
    // An 'error' without a listener would crash the process; a broken connection is handled by reconnecting.
    client.on('error', (error) => this.lost(client, error));
    client.on('end', () => this.lost(client, new Error('the LISTEN connection ended')));
    client.on('notification', (message) => {
      if (message.channel !== this.options.channel || !message.payload) return;
      let notice: JobChangeNotice;
      try {
        notice = JSON.parse(message.payload) as JobChangeNotice;
      } catch {
        return;
      }
      if (notice.origin === this.options.ownOrigin || typeof notice.jobId !== 'string') return;
      this.options.onNotice(notice);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${this.options.channel}`);
    } catch (error) {
      client.removeAllListeners('end');
      await client.end().catch(() => undefined);
      throw error;
    }
    if (this.closed) {
      await client.end().catch(() => undefined);
      return;
    }
    this.client = client;
    this.backoffMs = this.options.initialBackoffMs ?? 250;
    if (this.connectedOnce) this.options.onReconnect();
    this.connectedOnce = true;
  }

  private lost(client: pg.Client, error: Error): void {
    if (this.closed || this.client !== client) return;
    this.client = undefined;
    client.removeAllListeners('end');
    client.end().catch(() => undefined);
    this.options.onError(error);
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closed) return;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, this.options.maxBackoffMs ?? 10_000);
    this.timer = setTimeout(() => {
      this.connect().catch((error: unknown) => {
        this.options.onError(error as Error);
        this.scheduleReconnect();
      });
    }, delay);
    this.timer.unref();
  }
}

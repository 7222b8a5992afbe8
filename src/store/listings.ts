/**
 * Paged listings of jobs and audit entries for the portal and the CLI: newest first, filtered, with keyset
 * paging. A page never counts or skips rows (`OFFSET` reads every row it skips): it continues strictly
 * after the last row of the previous one, through an index (migration 0010), so page 500 of a store with
 * millions of jobs costs what page 1 costs.
 */
import type { Kysely, SelectQueryBuilder } from 'kysely';
import type { JobState } from '../protocol/index.js';
import type { Database, JobsTable } from './schema.js';
import type { AuditRecord, JobRecord } from './store.js';

/** Where a jobs page ends: the (createdAt, id) of its last job. Ids break ties between equal times. */
export interface JobCursor {
  createdAt: number;
  id: string;
}

export interface JobPageFilter {
  user?: string;
  state?: JobState;
  /** The workflow's name (in any space, unless `space` is given too). */
  workflow?: string;
  space?: string;
  /** Created at or after (epoch ms). */
  since?: number;
  /** Created before (epoch ms). */
  until?: number;
  /** Only jobs older than this cursor (the previous page's `next`). */
  before?: JobCursor;
  limit: number;
}

export interface AuditPageFilter {
  actor?: string;
  action?: string;
  target?: string;
  since?: number;
  until?: number;
  /** Only entries with a smaller id (the previous page's `next`). */
  before?: number;
  limit: number;
}

export interface Page<T, C> {
  items: T[];
  /** The cursor of the following (older) page; undefined on the last page. */
  next: C | undefined;
}

/** `<createdAt>.<id>`: opaque to clients, who hand back `next` as `before`. */
export function encodeJobCursor(cursor: JobCursor): string {
  return `${cursor.createdAt}.${cursor.id}`;
}

/** A cursor from `encodeJobCursor`, or undefined for anything else. */
export function decodeJobCursor(text: string): JobCursor | undefined {
  const match = /^(\d{1,15})\.([A-Za-z0-9_-]{1,100})$/.exec(text);
  return match ? { createdAt: Number(match[1]), id: match[2]! } : undefined;
}

type JobsQuery = SelectQueryBuilder<Database, 'jobs', JobsTable>;

export class Listings {
  constructor(
    private readonly db: Kysely<Database>,
    /** The store's row mapping, shared so a listed job is the same record `getJob` returns. */
    private readonly toJob: (row: JobsTable) => JobRecord,
  ) {}

  /**
   * The query of one jobs page (limit + 1 rows, to know whether another page follows). Public so tests can
   * EXPLAIN it and show it runs on the index.
   */
  jobPageQuery(filter: JobPageFilter): JobsQuery {
    let query = this.db.selectFrom('jobs').selectAll();
    if (filter.user !== undefined) query = query.where('user_name', '=', filter.user);
    if (filter.state !== undefined) query = query.where('state', '=', filter.state);
    if (filter.workflow !== undefined) query = query.where('workflow_name', '=', filter.workflow);
    if (filter.space !== undefined) query = query.where('workflow_space', '=', filter.space);
    if (filter.since !== undefined) query = query.where('created_at', '>=', filter.since);
    if (filter.until !== undefined) query = query.where('created_at', '<', filter.until);
    const before = filter.before;
    if (before !== undefined) {
      // A row-value comparison, which both databases use as the bound of one index range (an OR of
      // `created_at < t` and `created_at = t AND id < i` would be a filter: deep pages would scan from the top).
      query = query.where((eb) =>
        eb(eb.refTuple('created_at', 'id'), '<', eb.tuple(before.createdAt, before.id)),
      );
    }
    return query
      .orderBy('created_at', 'desc')
      .orderBy('id', 'desc')
      .limit(filter.limit + 1);
  }

  async jobs(filter: JobPageFilter): Promise<Page<JobRecord, JobCursor>> {
    const rows = await this.jobPageQuery(filter).execute();
    const more = rows.length > filter.limit;
    const page = more ? rows.slice(0, filter.limit) : rows;
    const last = page.at(-1);
    return {
      items: page.map((row) => this.toJob(row)),
      next: more && last ? { createdAt: Number(last.created_at), id: last.id } : undefined,
    };
  }

  /** Newest first (ids grow with time), filtered, paged by id. */
  async audit(filter: AuditPageFilter): Promise<Page<AuditRecord, number>> {
    let query = this.db.selectFrom('audit').selectAll();
    if (filter.actor !== undefined) query = query.where('actor', '=', filter.actor);
    if (filter.action !== undefined) query = query.where('action', '=', filter.action);
    if (filter.target !== undefined) query = query.where('target', '=', filter.target);
    if (filter.since !== undefined) query = query.where('time', '>=', filter.since);
    if (filter.until !== undefined) query = query.where('time', '<', filter.until);
    if (filter.before !== undefined) query = query.where('id', '<', filter.before);
    const rows = await query
      .orderBy('id', 'desc')
      .limit(filter.limit + 1)
      .execute();
    const more = rows.length > filter.limit;
    const page = (more ? rows.slice(0, filter.limit) : rows).map((row): AuditRecord => ({
      id: Number(row.id),
      time: Number(row.time),
      actor: row.actor,
      action: row.action,
      target: row.target,
      source: row.source,
      detail: row.detail_json === null ? null : (JSON.parse(row.detail_json) as Record<string, unknown>),
    }));
    return { items: page, next: more ? page.at(-1)?.id : undefined };
  }
}

/** The audit trail: append-only, read newest first. What is audited is decided in the server. */
import type { Executor, StoreContext } from './context.js';

export interface AuditRecord {
  id: number;
  time: number;
  actor: string;
  action: string;
  target: string | null;
  source: string | null;
  detail: Record<string, unknown> | null;
}

export type NewAuditRecord = Omit<AuditRecord, 'id'>;

export interface ListAuditFilter {
  actor?: string;
  action?: string;
  limit: number;
}

export class AuditStore {
  constructor(private readonly ctx: StoreContext) {}

  async appendAudit(entry: NewAuditRecord): Promise<void> {
    await insertAudit(this.ctx.db, entry);
  }

  /** Newest first. */
  async listAudit(filter: ListAuditFilter): Promise<AuditRecord[]> {
    let query = this.ctx.db.selectFrom('audit').selectAll();
    if (filter.actor !== undefined) query = query.where('actor', '=', filter.actor);
    if (filter.action !== undefined) query = query.where('action', '=', filter.action);
    const rows = await query.orderBy('id', 'desc').limit(filter.limit).execute();
    return rows.map((row) => ({
      id: Number(row.id),
      time: row.time,
      actor: row.actor,
      action: row.action,
      target: row.target,
      source: row.source,
      detail: row.detail_json === null ? null : (JSON.parse(row.detail_json) as Record<string, unknown>),
    }));
  }
}

/** Appends one audit entry, on the store or within a transaction of another module's write. */
export async function insertAudit(db: Executor, entry: NewAuditRecord): Promise<void> {
  await insertAuditRows(db, [entry]);
}

/** Appends audit entries with one statement (callers keep a batch within SQLite's parameter limit). */
export async function insertAuditRows(db: Executor, entries: readonly NewAuditRecord[]): Promise<void> {
  if (entries.length === 0) return;
  await db
    .insertInto('audit')
    .values(
      entries.map((entry) => ({
        time: entry.time,
        actor: entry.actor,
        action: entry.action,
        target: entry.target,
        source: entry.source,
        detail_json: entry.detail === null ? null : JSON.stringify(entry.detail),
      })),
    )
    .execute();
}

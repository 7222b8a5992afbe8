/**
 * How many SQL statements the store sent, by kind. Every statement goes through Kysely's log hook (BEGIN
 * and COMMIT included: the drivers send them on the same logged connection), so this counts what reached
 * the database, not what the code meant to send. A job's cost in statements is read as the difference of
 * two snapshots (`test/server/sql-per-job.test.ts` bounds a no-op job's, phase by phase).
 */

export const STATEMENT_KINDS = [
  'select',
  'insert',
  'update',
  'delete',
  'begin',
  'commit',
  'rollback',
  /** PostgreSQL's change notices (`SELECT pg_notify(…)`, see `changes.ts`); none on SQLite. */
  'notify',
  'other',
] as const;
export type StatementKind = (typeof STATEMENT_KINDS)[number];

export type StatementCountsSnapshot = Readonly<Record<StatementKind, number>> & { readonly total: number };

const BY_KEYWORD: Readonly<Record<string, StatementKind>> = {
  select: 'select',
  with: 'select',
  insert: 'insert',
  update: 'update',
  delete: 'delete',
  begin: 'begin',
  start: 'begin',
  commit: 'commit',
  rollback: 'rollback',
};

/** The kind of a statement from its first keyword (`WITH …` counts as a select). */
export function statementKind(sqlText: string): StatementKind {
  if (/^\s*select pg_notify\(/i.test(sqlText)) return 'notify';
  const keyword = /^\s*([a-z]+)/i.exec(sqlText)?.[1]?.toLowerCase();
  return (keyword !== undefined ? BY_KEYWORD[keyword] : undefined) ?? 'other';
}

export class StatementCounts {
  private readonly counts: Record<StatementKind, number> = {
    select: 0,
    insert: 0,
    update: 0,
    delete: 0,
    begin: 0,
    commit: 0,
    rollback: 0,
    notify: 0,
    other: 0,
  };

  count(sqlText: string): void {
    this.counts[statementKind(sqlText)]++;
  }

  snapshot(): StatementCountsSnapshot {
    const total = STATEMENT_KINDS.reduce((sum, kind) => sum + this.counts[kind], 0);
    return { ...this.counts, total };
  }
}

/** What was sent between two snapshots, by kind. */
export function statementsSince(
  before: StatementCountsSnapshot,
  after: StatementCountsSnapshot,
): StatementCountsSnapshot {
  const diff = { total: after.total - before.total } as Record<StatementKind | 'total', number>;
  for (const kind of STATEMENT_KINDS) diff[kind] = after[kind] - before[kind];
  return diff;
}

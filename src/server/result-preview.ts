/**
 * Previews of table results: Parquet/CSV read with one lazily created in-memory DuckDB instance, a few rows
 * at a time, with every value cut to the cell cap in SQL and the response cut to its byte cap (both said in
 * the response).
 */
import type { DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import type { Logger } from 'pino';
import { StewardError } from '../protocol/index.js';
import { cutText } from './utf8-text.js';

export interface PreviewResult {
  name: string;
  columns: { name: string; type: string }[];
  rows: Record<string, unknown>[];
  totalRows: number | null;
  truncated: boolean;
  truncatedCells: { row: number; column: string }[];
  omittedRows: number;
  limits: { cellBytes: number; responseBytes: number };
}

export interface PreviewLimits {
  /** Cap of one preview value. */
  cellBytes: number;
  /** Cap of one preview response's rows. */
  responseBytes: number;
}

/** The stored table a preview reads. */
export interface PreviewTable {
  jobId: string;
  name: string;
  file: string;
  format: 'parquet' | 'csv';
  /** Its row count when the executor reported it (else counted). */
  rows: number | null;
}

/** Memory of the server's preview DuckDB instance (shared by concurrent previews). */
const PREVIEW_MEMORY = '256MB';

/**
 * A column is not read for a preview when, in a row group the page touches, its values average more than
 * this (its chunk holds few, very large values: reading one means decoding a page that large).
 */
const PREVIEW_UNREAD_VALUE_BYTES = 4 * 1024 * 1024;

/** Types whose JSON form is short whatever the value: sent as they are. */
const SHORT_TYPES =
  /^(BOOLEAN|TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT|FLOAT|DOUBLE|DECIMAL\(\d+,\d+\)|DATE|TIME|TIME WITH TIME ZONE|TIMESTAMP(_S|_MS|_NS| WITH TIME ZONE)?|INTERVAL|UUID)$/;

/** How one column's values come out of the query: as they are, cut text, cut text form, or not read. */
interface ColumnPlan {
  name: string;
  kind: 'short' | 'text' | 'other' | 'unread';
  /** Index of its (first) projection in a page's row. */
  at: number;
}

interface QueryPlan {
  projections: string[];
  columns: ColumnPlan[];
}

/** Which rows of which table one preview reads. */
interface PageSource {
  table: PreviewTable;
  /** The table function over the file. */
  source: string;
  offset: number;
  wanted: number;
}

export class ResultPreviews {
  private duckdb: Promise<{ instance: DuckDBInstance; connection: DuckDBConnection }> | undefined;

  constructor(
    private readonly limits: PreviewLimits,
    private readonly logger: Logger,
  ) {}

  /** Up to `limit` rows of `table` from row `offset`, within the cell and response caps. */
  async preview(table: PreviewTable, limit: number, offset: number): Promise<PreviewResult> {
    const { file, format } = table;
    const source =
      format === 'parquet' ? `read_parquet(${sqlString(file)})` : `read_csv_auto(${sqlString(file)})`;
    const { connection } = await this.openDuckdb();
    const columns = await describeColumns(connection, source);
    const { cellBytes, responseBytes } = this.limits;
    const totalRows = table.rows ?? (await countRows(connection, source));
    const start = Math.trunc(offset);
    const wanted = Math.max(0, Math.min(Math.trunc(limit), totalRows - start));
    // Columns whose values in these rows are too large to read at all (DuckDB decodes a Parquet page whole:
    // a 200 MB value is 200 MB of memory however little of it is sent): sent as null and listed as cut.
    const unread =
      format === 'parquet' ? await oversizedColumns(connection, file, start, wanted) : new Set<string>();
    const plan = planQuery(columns, unread, cellBytes);
    const { rows, truncatedCells } = await this.readRows(connection, plan, {
      table,
      source,
      offset: start,
      wanted,
    });
    const omittedRows = wanted - rows.length;
    return {
      name: table.name,
      columns,
      rows,
      totalRows,
      truncated: truncatedCells.length > 0 || omittedRows > 0,
      truncatedCells,
      omittedRows,
      limits: { cellBytes, responseBytes },
    };
  }

  async close(): Promise<void> {
    const duckdb = this.duckdb;
    this.duckdb = undefined;
    if (!duckdb) return;
    try {
      const { instance, connection } = await duckdb;
      connection.closeSync();
      instance.closeSync();
    } catch (error) {
      this.logger.warn({ err: error }, 'closing DuckDB failed');
    }
  }

  /** Reads pages of rows until `wanted` rows are in or the response's byte cap is reached. */
  private async readRows(
    connection: DuckDBConnection,
    plan: QueryPlan,
    page: PageSource,
  ): Promise<{ rows: Record<string, unknown>[]; truncatedCells: { row: number; column: string }[] }> {
    const { cellBytes, responseBytes } = this.limits;
    // A page's values are at most (cellBytes + 1) characters each: fetch few enough rows that one page holds
    // about eight responses' worth, so memory stays bounded for wide tables of long values too.
    const perRow = Math.max(1, plan.columns.length) * 4 * (cellBytes + 1);
    const pageRows = Math.max(1, Math.min(512, Math.floor((8 * responseBytes) / perRow)));
    const rows: Record<string, unknown>[] = [];
    const truncatedCells: { row: number; column: string }[] = [];
    let used = 2;
    let full = false;
    while (!full && rows.length < page.wanted && plan.projections.length > 0) {
      const values = await readPage(
        connection,
        plan,
        page,
        Math.min(pageRows, page.wanted - rows.length),
        rows.length,
      );
      if (values.length === 0) break;
      for (const value of values) {
        const rowIndex = rows.length;
        const { row, cut } = rowOf(value, plan.columns, cellBytes);
        let size = Buffer.byteLength(JSON.stringify(row)) + 1;
        if (used + size > responseBytes) {
          if (rows.length > 0) {
            full = true;
            break;
          }
          // The first row alone is over the cap: cut its values until it fits, rather than send nothing.
          size = shrinkRow(row, cut, responseBytes - used);
        }
        used += size;
        rows.push(row);
        for (const column of cut) truncatedCells.push({ row: rowIndex, column });
      }
    }
    return { rows, truncatedCells };
  }

  private openDuckdb(): Promise<{ instance: DuckDBInstance; connection: DuckDBConnection }> {
    this.duckdb ??= (async () => {
      const { DuckDBInstance } = await import('@duckdb/node-api');
      // Bounded: previews share this instance, and a result's values are whatever a user's job wrote.
      const instance = await DuckDBInstance.create(':memory:', {
        threads: '2',
        memory_limit: PREVIEW_MEMORY,
      });
      const connection = await instance.connect();
      return { instance, connection };
    })();
    this.duckdb.catch(() => (this.duckdb = undefined));
    return this.duckdb;
  }
}

async function describeColumns(
  connection: DuckDBConnection,
  source: string,
): Promise<{ name: string; type: string }[]> {
  const described = (await connection.runAndReadAll(`DESCRIBE SELECT * FROM ${source}`)).getRowObjectsJson();
  return described.map((row) => ({
    name: row.column_name as string,
    type: row.column_type as string,
  }));
}

async function countRows(connection: DuckDBConnection, source: string): Promise<number> {
  const count = await connection.runAndReadAll(`SELECT count(*)::BIGINT AS n FROM ${source}`);
  return Number(count.getRowObjectsJS()[0]?.n ?? 0);
}

/**
 * The query's projections. Every value is cut in SQL, so no long value ever reaches JavaScript: text to
 * cellBytes + 1 characters (cut to bytes later); other long values (lists, structs, blobs…) are sent as
 * their cut text form.
 */
function planQuery(
  columns: { name: string; type: string }[],
  unread: Set<string>,
  cellBytes: number,
): QueryPlan {
  const projections: string[] = [];
  const plans: ColumnPlan[] = [];
  columns.forEach((column, index) => {
    const ref = quoteIdentifier(column.name);
    const at = projections.length;
    if (unread.has(column.name)) {
      projections.push(`NULL AS c${index}`);
      plans.push({ name: column.name, kind: 'unread', at });
    } else if (SHORT_TYPES.test(column.type)) {
      projections.push(`${ref} AS c${index}`);
      plans.push({ name: column.name, kind: 'short', at });
    } else if (column.type === 'VARCHAR' || column.type === 'JSON') {
      projections.push(`left(${ref}::VARCHAR, ${cellBytes + 1}) AS c${index}`);
      plans.push({ name: column.name, kind: 'text', at });
    } else {
      const text = `CAST(${ref} AS VARCHAR)`;
      projections.push(
        `CASE WHEN strlen(${text}) <= ${cellBytes} THEN ${ref} END AS c${index}`,
        `CASE WHEN strlen(${text}) > ${cellBytes} THEN left(${text}, ${cellBytes + 1}) END AS x${index}`,
      );
      plans.push({ name: column.name, kind: 'other', at });
    }
  });
  return { projections, columns: plans };
}

/** One page of rows (`count` rows, `done` rows past the preview's offset), as arrays of JSON values. */
async function readPage(
  connection: DuckDBConnection,
  plan: QueryPlan,
  page: PageSource,
  count: number,
  done: number,
): Promise<readonly (readonly unknown[])[]> {
  const { jobId, name } = page.table;
  const result = await connection
    .runAndReadAll(
      `SELECT ${plan.projections.join(', ')} FROM ${page.source} LIMIT ${count} OFFSET ${page.offset + done}`,
    )
    .catch((error: Error) => {
      // The preview instance has a memory limit: a value too large for it fails the query, not the server.
      if (/out of memory/i.test(error.message))
        throw new StewardError(
          'STEWARD_PREVIEW_TOO_LARGE',
          `result ${name} of job ${jobId} holds values too large to preview (over the server's ${PREVIEW_MEMORY} of preview memory); download it instead`,
        );
      throw error;
    });
  return result.getRowsJson();
}

/** A page's row as the response's row, each value cut to `cellBytes`, with the names of the cut ones. */
function rowOf(
  value: readonly unknown[],
  plans: ColumnPlan[],
  cellBytes: number,
): { row: Record<string, unknown>; cut: string[] } {
  const row: Record<string, unknown> = {};
  const cut: string[] = [];
  for (const plan of plans) {
    let cell: unknown = value[plan.at];
    let wasCut = false;
    if (plan.kind === 'text' && typeof cell === 'string') {
      [cell, wasCut] = cutText(cell, cellBytes);
    } else if (plan.kind === 'unread') {
      wasCut = true;
    } else if (plan.kind === 'other') {
      const long = value[plan.at + 1];
      if (typeof long === 'string') [cell, wasCut] = [cutText(long, cellBytes)[0], true];
    }
    row[plan.name] = cell;
    if (wasCut) cut.push(plan.name);
  }
  return { row, cut };
}

/**
 * Top-level columns of a Parquet file whose values, in the row groups holding rows [offset, offset + count),
 * average more than PREVIEW_UNREAD_VALUE_BYTES (from the file's metadata; nothing of the data is read).
 */
async function oversizedColumns(
  connection: DuckDBConnection,
  file: string,
  offset: number,
  count: number,
): Promise<Set<string>> {
  const oversized = new Set<string>();
  if (count <= 0) return oversized;
  const metadata = (
    await connection.runAndReadAll(
      `SELECT row_group_id::BIGINT AS rg, row_group_num_rows::BIGINT AS n, path_in_schema AS path, total_uncompressed_size::BIGINT AS size FROM parquet_metadata(${sqlString(file)}) ORDER BY row_group_id`,
    )
  ).getRowObjectsJS();
  const groups = new Map<number, { rows: number; sizes: Map<string, number> }>();
  for (const entry of metadata) {
    const id = Number(entry.rg);
    const group = groups.get(id) ?? { rows: Number(entry.n), sizes: new Map<string, number>() };
    // Leaves of nested columns are "column, list, element": they count for their top-level column.
    const column = (entry.path as string).split(', ')[0]!;
    group.sizes.set(column, (group.sizes.get(column) ?? 0) + Number(entry.size));
    groups.set(id, group);
  }
  let start = 0;
  for (const [, group] of [...groups].sort((a, b) => a[0] - b[0])) {
    const end = start + group.rows;
    if (end > offset && start < offset + count) {
      for (const [column, size] of group.sizes)
        if (size / Math.max(1, group.rows) > PREVIEW_UNREAD_VALUE_BYTES) oversized.add(column);
    }
    start = end;
  }
  return oversized;
}

/** Cuts a row's text values (longest first) until its JSON fits `budget`; returns its size. */
function shrinkRow(row: Record<string, unknown>, cut: string[], budget: number): number {
  let size = Buffer.byteLength(JSON.stringify(row)) + 1;
  const names = Object.keys(row)
    .filter((key) => typeof row[key] === 'string')
    .sort((a, b) => (row[b] as string).length - (row[a] as string).length);
  for (const key of names) {
    if (size <= budget) break;
    const value = row[key] as string;
    const over = size - budget;
    const keep = Math.max(0, Buffer.byteLength(value) - over);
    row[key] = cutText(value, keep)[0];
    if (!cut.includes(key)) cut.push(key);
    size = Buffer.byteLength(JSON.stringify(row)) + 1;
  }
  return size;
}

function quoteIdentifier(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

function sqlString(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

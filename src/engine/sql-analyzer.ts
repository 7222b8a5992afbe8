/**
 * Static analysis of `sql` steps with DuckDB's own parser (`json_serialize_sql`): which tables and which
 * `$name` parameters a query uses, and whether it is exactly one SELECT. Validation runs on the server's
 * hot path (pushes, submits), so one small in-memory DuckDB is created lazily and reused; queries on its
 * single connection are serialised.
 */
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';

export interface SqlAnalysis {
  /** Referenced base tables that are not CTEs (lower-cased as written). */
  tables: string[];
  /** Named parameters (`$name`). */
  params: string[];
  /** Positional parameters (`$1`, `?`) — not supported. */
  positional: boolean;
}

export type SqlAnalysisResult =
  { ok: true; analysis: SqlAnalysis } | { ok: false; message: string; position?: number };

let analyzer: Promise<{ instance: DuckDBInstance; connection: DuckDBConnection }> | undefined;
let queue: Promise<unknown> = Promise.resolve();

function getAnalyzer() {
  analyzer ??= (async () => {
    const instance = await DuckDBInstance.create(':memory:', {
      threads: '1',
      memory_limit: '64MB',
      autoinstall_known_extensions: 'false',
      enable_external_access: 'false',
    });
    return { instance, connection: await instance.connect() };
  })();
  analyzer.catch(() => {
    analyzer = undefined;
  });
  return analyzer;
}

/** Closes the shared parser database (tests, process shutdown). Validation reopens it when needed. */
export async function closeSqlAnalyzer(): Promise<void> {
  const current = analyzer;
  analyzer = undefined;
  if (!current) return;
  await queue.catch(() => undefined);
  const { instance, connection } = await current;
  connection.closeSync();
  instance.closeSync();
}

export function analyzeSql(sql: string): Promise<SqlAnalysisResult> {
  const next = queue.then(async () => {
    const { connection } = await getAnalyzer();
    const reader = await connection.runAndReadAll('SELECT json_serialize_sql($q::VARCHAR) AS ast', {
      q: sql,
    });
    const text = reader.getRows()[0]?.[0];
    return interpret(typeof text === 'string' ? text : '');
  });
  queue = next.catch(() => undefined);
  return next;
}

interface AstNode {
  [key: string]: unknown;
}

function interpret(text: string): SqlAnalysisResult {
  let ast: AstNode;
  try {
    ast = JSON.parse(text) as AstNode;
  } catch {
    return { ok: false, message: 'the SQL could not be analysed' };
  }
  if (ast.error === true) {
    const raw = typeof ast.error_message === 'string' ? ast.error_message : 'invalid SQL';
    const message = /Only SELECT statements/i.test(raw)
      ? 'expected one SELECT (or WITH … SELECT) query; statements that change data or settings are not allowed'
      : `${typeof ast.error_type === 'string' ? ast.error_type : 'parser'} error: ${raw}`;
    const position = Number(ast.position);
    return {
      ok: false,
      message,
      ...(Number.isFinite(position) && typeof ast.position === 'string' ? { position } : {}),
    };
  }
  const statements = Array.isArray(ast.statements) ? ast.statements : [];
  if (statements.length !== 1) {
    return { ok: false, message: `expected exactly one SELECT query, found ${statements.length} statements` };
  }
  const tables = new Set<string>();
  const ctes = new Set<string>();
  const params = new Set<string>();
  let positional = false;
  const visit = (value: unknown): void => {
    if (Array.isArray(value)) {
      for (const item of value) visit(item);
      return;
    }
    if (value === null || typeof value !== 'object') return;
    const node = value as AstNode;
    if (node.type === 'BASE_TABLE' && typeof node.table_name === 'string') {
      const qualifier = [node.catalog_name, node.schema_name].filter(
        (part) => typeof part === 'string' && part !== '',
      );
      tables.add(qualifier.length > 0 ? `${qualifier.join('.')}.${node.table_name}` : node.table_name);
    }
    if (node.class === 'PARAMETER' && typeof node.identifier === 'string') {
      if (/^\d+$/.test(node.identifier) || node.identifier === '') positional = true;
      else params.add(node.identifier);
    }
    const cteMap = node.cte_map as AstNode | undefined;
    if (cteMap && Array.isArray(cteMap.map)) {
      for (const entry of cteMap.map as AstNode[])
        if (typeof entry.key === 'string') ctes.add(entry.key.toLowerCase());
    }
    for (const child of Object.values(node)) if (child !== null && typeof child === 'object') visit(child);
  };
  visit(statements[0]);
  return {
    ok: true,
    analysis: {
      tables: [...tables].filter((table) => !ctes.has(table.toLowerCase())),
      params: [...params],
      positional,
    },
  };
}

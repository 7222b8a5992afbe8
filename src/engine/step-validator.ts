/**
 * The step phases of workflow validation: each step's kind and shape (zod), then its references and
 * kind-specific rules, which turn it into a typed `StepSpec`. Every problem goes to the workflow's
 * IssueList; a step with a problem still yields a spec so that later phases see its dependencies.
 */
import path from 'node:path';
import type { z } from 'zod';
import { parseByteSize } from '../config/index.js';
import { didYouMean, parseDuration, plainNameProblem } from '../protocol/index.js';
import type { IssueList } from './issues.js';
import { placeholders } from './params.js';
import { stepKinds, stepSchemas, tableFormats, type StepKindName, type TableFormat } from './schema.js';
import type { ParsedSource, PathSegment } from './source.js';
import { analyzeSql } from './sql-analyzer.js';
import type {
  CommandStepSpec,
  ProcessStepInputs,
  PythonStepSpec,
  ReadStepSpec,
  ScriptStepSpec,
  SqlStepSpec,
  StepSpec,
  WriteStepSpec,
} from './types.js';

const TABLE_KINDS = new Set<StepKindName>(['read', 'sql']);
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A step's definition as the file wrote it, by kind. */
type StepShapes = { [K in StepKindName]: z.output<(typeof stepSchemas)[K]> };
/** The same schemas, typed so that one indexed by a kind yields that kind's shape. */
const shapeSchemas: { [K in StepKindName]: z.ZodType<StepShapes[K]> } = stepSchemas;
type DraftOf<K extends StepKindName> = {
  [P in K]: { index: number; id: string; kind: P; data: StepShapes[P] };
}[K];
/** A step whose shape is valid, with its position in `steps`. */
export type StepDraft = DraftOf<StepKindName>;

/** The kind-specific part of a step: its kind and the definition that goes with it. */
type DefinitionOf<S> = S extends StepSpec ? Pick<S, 'kind' | 'spec'> : never;
type StepDefinition = DefinitionOf<StepSpec>;

function parseShape<K extends StepKindName>(
  kind: K,
  index: number,
  record: unknown,
  issues: IssueList,
): DraftOf<K> | undefined {
  const result = shapeSchemas[kind].safeParse(record);
  if (!result.success) {
    issues.addZod(['steps', index], result.error);
    return undefined;
  }
  return { index, id: result.data.id, kind, data: result.data };
}

/** Phase: each step's kind (exactly one) and shape, and unique ids. */
export function parseStepShapes(rawSteps: readonly unknown[], issues: IssueList): StepDraft[] {
  const drafts: StepDraft[] = [];
  const seenIds = new Map<string, number>();
  rawSteps.forEach((raw, index) => {
    const at: PathSegment[] = ['steps', index];
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
      issues.add(at, 'expected a mapping with an id and one of read, sql, write, shell, python, command');
      return;
    }
    const id: unknown = 'id' in raw ? raw.id : undefined;
    const label = typeof id === 'string' ? `step "${id}"` : 'step';
    const kinds = stepKinds.filter((kind) => Object.hasOwn(raw, kind));
    if (kinds.length === 0) {
      issues.add(at, noKindMessage(label, Object.keys(raw)));
      return;
    }
    if (kinds.length > 1) {
      issues.add(
        [...at, kinds[1]!],
        `${label} has several kinds (${kinds.join(', ')}): a step does exactly one thing`,
        { keyLine: true },
      );
      return;
    }
    const draft = parseShape(kinds[0]!, index, raw, issues);
    if (!draft) return;
    const previous = seenIds.get(draft.id);
    if (previous !== undefined) {
      issues.add([...at, 'id'], `duplicate step id "${draft.id}" (also steps.${previous})`);
      return;
    }
    seenIds.set(draft.id, index);
    drafts.push(draft);
  });
  return drafts;
}

/** Keys every kind of step may have besides its kind's own (see `common` and `scriptCommon` in schema.ts). */
const SHARED_STEP_KEYS: ReadonlySet<string> = new Set(
  Object.values(stepSchemas).flatMap((schema) => Object.keys(schema.shape)),
);

/**
 * A step without a kind usually has a misspelt one (`sqll:`, `Python:`): name the keys that are no step's,
 * with the closest kind for each.
 */
function noKindMessage(label: string, keys: readonly string[]): string {
  const unknown = keys.filter((key) => !SHARED_STEP_KEYS.has(key));
  const named = unknown
    .slice(0, 5)
    .map((key) => `"${key}"${didYouMean(key, stepKinds)}`)
    .join(', ');
  const what = unknown.length === 0 ? '' : ` (unknown key${unknown.length > 1 ? 's' : ''} ${named})`;
  return `${label} has no kind${what}: expected one of ${stepKinds.join(', ')}`;
}

/** What the step rules know of the whole workflow. */
export interface WorkflowScope {
  issues: IssueList;
  parsed: ParsedSource;
  /** Every param the file declares, valid or not (an invalid one is reported once, at its definition). */
  declaredParams: ReadonlySet<string>;
  /** The kind of every step with a valid shape, by id. */
  kindOf: ReadonlyMap<string, StepKindName>;
}

/** Phase: references and kind-specific rules of every step. SQL analyses run concurrently. */
export function resolveSteps(drafts: readonly StepDraft[], scope: WorkflowScope): Promise<StepSpec[]> {
  return Promise.all(drafts.map((draft) => new StepRules(scope, draft).resolve()));
}

/** The rules of one step; collects the steps it depends on while it checks its references. */
class StepRules {
  private readonly at: PathSegment[];
  private readonly needs = new Set<string>();
  private readonly tables = new Set<string>();
  private readonly issues: IssueList;

  constructor(
    private readonly scope: WorkflowScope,
    private readonly draft: StepDraft,
  ) {
    this.at = ['steps', draft.index];
    this.issues = scope.issues;
  }

  async resolve(): Promise<StepSpec> {
    const { draft } = this;
    this.checkNeeds(draft.data.needs ?? []);
    const timeoutMs = this.timeout(draft.data.timeout);
    // The kind's rules add the tables the step reads to its needs and tables: they run first.
    const definition = await this.definition();
    const step: StepSpec = { id: draft.id, needs: [...this.needs], tables: [...this.tables], ...definition };
    if (timeoutMs !== undefined) step.timeoutMs = timeoutMs;
    return step;
  }

  private async definition(): Promise<StepDefinition> {
    const { draft } = this;
    switch (draft.kind) {
      case 'read':
        return { kind: 'read', spec: this.readSpec(draft.data.read) };
      case 'sql':
        return { kind: 'sql', spec: await this.sqlSpec(draft.data.sql) };
      case 'write':
        return { kind: 'write', spec: this.writeSpec(draft.data.write) };
      case 'shell':
        return { kind: 'shell', spec: this.scriptSpec(draft.data, draft.data.shell) };
      case 'python':
        return { kind: 'python', spec: this.pythonSpec(draft.data) };
      case 'command':
        return { kind: 'command', spec: this.commandSpec(draft.data) };
    }
  }

  private checkNeeds(needs: readonly string[]): void {
    const { draft } = this;
    needs.forEach((need, needIndex) => {
      if (need === draft.id)
        this.issues.add([...this.at, 'needs', needIndex], `step "${draft.id}" cannot need itself`);
      else if (!this.scope.kindOf.has(need))
        this.issues.add([...this.at, 'needs', needIndex], `step "${draft.id}" needs unknown step "${need}"`);
      else this.needs.add(need);
    });
  }

  private timeout(timeout: string | number | undefined): number | undefined {
    if (timeout === undefined) return undefined;
    try {
      const timeoutMs = parseDuration(timeout);
      if (timeoutMs <= 0) this.issues.add([...this.at, 'timeout'], 'timeout must be positive');
      return timeoutMs;
    } catch (error) {
      this.issues.add([...this.at, 'timeout'], (error as Error).message);
      return undefined;
    }
  }

  private checkPlaceholders(at: PathSegment[], template: string): void {
    for (const name of placeholders(template)) {
      if (!this.scope.declaredParams.has(name)) this.issues.add(at, `\${${name}} refers to an unknown param`);
    }
  }

  private describeTables(): string {
    const tables = [...this.scope.kindOf].filter(([, kind]) => TABLE_KINDS.has(kind)).map(([id]) => id);
    return tables.length === 0 ? 'none' : tables.join(', ');
  }

  /** A reference to another step's table: it must be a table step other than this one. */
  private useTable(table: string, where: PathSegment[], what: string): void {
    const { draft } = this;
    const kind = this.scope.kindOf.get(table);
    if (table === draft.id) this.issues.add(where, `step "${draft.id}" cannot ${what} its own table`);
    else if (kind === undefined)
      this.issues.add(where, `${what} unknown table "${table}" (tables: ${this.describeTables()})`);
    else if (!TABLE_KINDS.has(kind)) {
      this.issues.add(
        where,
        `${what} "${table}", which is a ${kind} step and produces no table (tables: ${this.describeTables()})`,
      );
    } else {
      this.tables.add(table);
      this.needs.add(table);
    }
  }

  private formatOf(template: string, given: TableFormat | undefined, at: PathSegment[]): TableFormat {
    const format = given ?? formatFromPath(template);
    if (!format)
      this.issues.add(
        at,
        `cannot tell the format of "${template}" from its extension: add format (${tableFormats.join(', ')})`,
      );
    return format ?? 'csv';
  }

  private readSpec(read: StepShapes['read']['read']): ReadStepSpec {
    const readPath = typeof read === 'string' ? read : read.path;
    const pathAt = typeof read === 'string' ? [...this.at, 'read'] : [...this.at, 'read', 'path'];
    this.checkPlaceholders(pathAt, readPath);
    return {
      path: readPath,
      format: this.formatOf(readPath, typeof read === 'string' ? undefined : read.format, pathAt),
      options: (typeof read === 'string' ? undefined : read.options) ?? {},
    };
  }

  private async sqlSpec(sql: string): Promise<SqlStepSpec> {
    const { draft } = this;
    const sqlAt = [...this.at, 'sql'];
    const result = await analyzeSql(sql);
    const used: string[] = [];
    if (!result.ok) {
      const blockLine = this.scope.parsed.blockContentLine(sqlAt);
      const line =
        result.position !== undefined && blockLine !== undefined
          ? blockLine + (sql.slice(0, result.position).match(/\n/g)?.length ?? 0)
          : undefined;
      this.issues.add(sqlAt, `step "${draft.id}": ${result.message}`, line !== undefined ? { line } : {});
      return { sql, params: used };
    }
    for (const table of result.analysis.tables) {
      // A quoted file name (`FROM 'data/x.csv'`) is a DuckDB file scan, resolved in the job directory.
      if (isFileScan(table)) continue;
      const name = table.toLowerCase().replace(/^(memory\.)?main\./, '');
      if (name.includes('.')) {
        this.issues.add(
          sqlAt,
          `step "${draft.id}": table "${table}" is not a step table; only step tables can be referenced (tables: ${this.describeTables()})`,
        );
        continue;
      }
      this.useTable(name, sqlAt, `step "${draft.id}" reads`);
    }
    if (result.analysis.positional) {
      this.issues.add(
        sqlAt,
        `step "${draft.id}": positional parameters ($1, ?) are not supported; use $name of a declared param`,
      );
    }
    const declared = this.scope.declaredParams;
    for (const name of result.analysis.params) {
      if (!declared.has(name)) {
        this.issues.add(
          sqlAt,
          `step "${draft.id}": $${name} is not a declared param (params: ${[...declared].join(', ') || 'none'})`,
        );
      } else used.push(name);
    }
    return { sql, params: used };
  }

  private writeSpec(write: StepShapes['write']['write']): WriteStepSpec {
    const pathAt = [...this.at, 'write', 'path'];
    this.useTable(write.table, [...this.at, 'write', 'table'], `step "${this.draft.id}" writes`);
    this.checkPlaceholders(pathAt, write.path);
    const format = this.formatOf(write.path, write.format, pathAt);
    // The file's name is its result name: refused now rather than at upload, after every step ran.
    if (placeholders(write.path).length === 0) {
      const resultName = path.posix.basename(write.path);
      const problem = plainNameProblem(resultName);
      if (problem)
        this.issues.add(
          pathAt,
          `the result name ${JSON.stringify(resultName)} ${problem}: a result is one file name of at most 255 bytes`,
        );
    }
    return { table: write.table, path: write.path, format, options: write.options ?? {} };
  }

  /** Environment and input tables of `shell`, `python` and `command` steps. */
  private processInputs(data: StepShapes['shell' | 'python' | 'command']): ProcessStepInputs {
    const env: Record<string, string> = {};
    for (const [name, value] of Object.entries(data.env ?? {})) {
      const at = [...this.at, 'env', name];
      if (!ENV_NAME.test(name))
        this.issues.add(at, `environment variable name "${name}" is invalid`, { keyLine: true });
      else if (name.toUpperCase().startsWith('STEWARD_'))
        this.issues.add(at, `environment variable "${name}" is reserved (STEWARD_*)`, { keyLine: true });
      else {
        env[name] = String(value);
        this.checkPlaceholders(at, env[name]);
      }
    }
    const inputs = data.inputs ?? [];
    inputs.forEach((input, inputIndex) =>
      this.useTable(input, [...this.at, 'inputs', inputIndex], `step "${this.draft.id}" takes as input`),
    );
    return { env, inputs: [...new Set(inputs)], inputFormat: data.inputFormat ?? 'csv' };
  }

  private scriptSpec(data: StepShapes['shell' | 'python'], script: string): ScriptStepSpec {
    return { ...this.processInputs(data), script };
  }

  private pythonSpec(data: StepShapes['python']): PythonStepSpec {
    const spec: PythonStepSpec = this.scriptSpec(data, data.python);
    if (data.dask) {
      const dask = daskRequest(data.dask.memory);
      if ('problem' in dask) this.issues.add([...this.at, 'dask', 'memory'], dask.problem);
      else
        spec.dask = { workers: data.dask.workers, threads: data.dask.threads ?? 1, memoryBytes: dask.bytes };
    }
    return spec;
  }

  private commandSpec(data: StepShapes['command']): CommandStepSpec {
    const inputs = this.processInputs(data);
    const command = data.command.map(String);
    command.forEach((argument, argumentIndex) =>
      this.checkPlaceholders([...this.at, 'command', argumentIndex], argument),
    );
    return { ...inputs, command };
  }
}

const DASK_DEFAULT_MEMORY = 1024 ** 3;
const DASK_MIN_MEMORY = 256 * 1024 ** 2;

/** A worker's memory as written (`2GiB`), in bytes: a size like other sizes, 256 MiB at least. */
function daskRequest(memory: string | undefined): { bytes: number } | { problem: string } {
  if (memory === undefined) return { bytes: DASK_DEFAULT_MEMORY };
  let bytes: number;
  try {
    bytes = parseByteSize(memory);
  } catch {
    return { problem: `expected a size like 512MiB or 4GiB, got ${JSON.stringify(memory)}` };
  }
  return bytes < DASK_MIN_MEMORY
    ? { problem: `a Dask worker needs at least 256MiB, got ${JSON.stringify(memory)}` }
    : { bytes };
}

function formatFromPath(template: string): TableFormat | undefined {
  const base = template.toLowerCase().replace(/\.(gz|zst|zstd)$/, '');
  const extension = path.posix.extname(base).slice(1);
  if (extension === 'jsonl') return 'ndjson';
  if (extension === 'pq') return 'parquet';
  return tableFormats.find((format) => format === extension);
}

function isFileScan(table: string): boolean {
  return table.includes('/') || /\.(csv|tsv|txt|parquet|pq|json|ndjson|jsonl)(\.(gz|zst))?$/i.test(table);
}

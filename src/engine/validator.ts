/**
 * The one entry point for workflow text: parse, check the shape (zod), then every cross-field rule
 * (references, cycles, SQL tables and params, param definitions, placeholders). All problems are
 * collected with their field path and source line; the thrown error's message names the first.
 */
import path from 'node:path';
import type { z } from 'zod';
import { parseDuration, plainNameProblem, StewardError, type ParamValue } from '../protocol/index.js';
import { convertParam, paramNameProblem, placeholders } from './params.js';
import { findCycle, leafSteps } from './planner.js';
import {
  ParamDefinitionSchema,
  stepKinds,
  stepSchemas,
  tableFormats,
  WorkflowFileSchema,
  type StepKindName,
  type TableFormat,
} from './schema.js';
import { detectFormat, parseSource, type ParsedSource, type PathSegment } from './source.js';
import { analyzeSql } from './sql-analyzer.js';
import type {
  ParamSpec,
  ReadStepSpec,
  ScriptStepSpec,
  SqlStepSpec,
  StepSpec,
  ValidationIssue,
  Workflow,
  WorkflowDescription,
  WriteStepSpec,
} from './types.js';

export interface ParseOptions {
  /** Parser to use. Default: by `fileName` extension (`.json` → json), else yaml. */
  format?: 'yaml' | 'json';
  /** Source file name, used to pick the format and to prefix error messages. */
  fileName?: string;
}

const TABLE_KINDS = new Set<StepKindName>(['read', 'sql']);
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

class IssueList {
  readonly items: ValidationIssue[] = [];
  constructor(private readonly source: ParsedSource | undefined) {}

  add(
    pathSegments: readonly PathSegment[],
    message: string,
    options: { keyLine?: boolean; line?: number } = {},
  ): void {
    const line =
      options.line ??
      (options.keyLine ? this.source?.keyLineOf(pathSegments) : this.source?.lineOf(pathSegments));
    this.items.push({ path: pathSegments.join('.'), message, ...(line !== undefined ? { line } : {}) });
  }

  addZod(prefix: readonly PathSegment[], error: z.ZodError): void {
    for (const issue of error.issues) {
      const at = [
        ...prefix,
        ...issue.path.map((segment) => (typeof segment === 'number' ? segment : String(segment))),
      ];
      if (issue.code === 'unrecognized_keys') {
        for (const key of issue.keys) this.add([...at, key], `unknown key "${key}"`, { keyLine: true });
      } else if (issue.code === 'invalid_type' && /received undefined/.test(issue.message)) {
        this.add(at, 'is required');
      } else {
        this.add(at, issue.message);
      }
    }
  }
}

function invalid(issues: ValidationIssue[], fileName: string | undefined): StewardError {
  const first = issues[0]!;
  const where = [fileName, first.line].filter((part) => part !== undefined).join(':');
  const more =
    issues.length > 1 ? ` (and ${issues.length - 1} more problem${issues.length > 2 ? 's' : ''})` : '';
  const fieldPath = first.path === '' ? '' : `${first.path}: `;
  return new StewardError(
    'STEWARD_WORKFLOW_INVALID',
    `${where === '' ? '' : `${where}: `}${fieldPath}${first.message}${more}`,
    {
      details: { issues },
    },
  );
}

function formatFromPath(template: string): TableFormat | undefined {
  const base = template.toLowerCase().replace(/\.(gz|zst|zstd)$/, '');
  const extension = path.posix.extname(base).slice(1);
  if (extension === 'jsonl') return 'ndjson';
  if (extension === 'pq') return 'parquet';
  return (tableFormats as readonly string[]).includes(extension) ? (extension as TableFormat) : undefined;
}

function isFileScan(table: string): boolean {
  return table.includes('/') || /\.(csv|tsv|txt|parquet|pq|json|ndjson|jsonl)(\.(gz|zst))?$/i.test(table);
}

interface Draft {
  index: number;
  id: string;
  kind: StepKindName;
  data: Record<string, unknown>;
}

/** Parses and fully validates a workflow. Throws STEWARD_WORKFLOW_INVALID listing every problem found. */
export async function parseWorkflow(source: string, options: ParseOptions = {}): Promise<Workflow> {
  const format = detectFormat(options.format, options.fileName);
  const { parsed, issues: syntaxIssues } = parseSource(source, format);
  if (!parsed) throw invalid(syntaxIssues, options.fileName);
  const issues = new IssueList(parsed);

  if (parsed.data === null || typeof parsed.data !== 'object' || Array.isArray(parsed.data)) {
    issues.add([], 'expected a mapping with name and steps');
    throw invalid(issues.items, options.fileName);
  }
  const top = WorkflowFileSchema.safeParse(parsed.data);
  if (!top.success) {
    issues.addZod([], top.error);
    throw invalid(issues.items, options.fileName);
  }
  const file = top.data;

  // Params.
  const params: ParamSpec[] = [];
  for (const [name, definition] of Object.entries(file.params ?? {})) {
    const problem = paramNameProblem(name);
    if (problem) {
      issues.add(['params', name], problem, { keyLine: true });
      continue;
    }
    const result = ParamDefinitionSchema.safeParse(definition);
    if (!result.success) {
      issues.addZod(['params', name], result.error);
      continue;
    }
    const spec: ParamSpec = { name, type: result.data.type, required: result.data.required ?? false };
    if (result.data.description !== undefined) spec.description = result.data.description;
    if (spec.type === 'enum') {
      const values = (result.data.values ?? []).map(String);
      if (values.length === 0)
        issues.add(['params', name, 'values'], 'an enum param needs a non-empty list of values');
      else if (new Set(values).size !== values.length)
        issues.add(['params', name, 'values'], 'enum values must be unique');
      spec.values = values;
    } else if (result.data.values !== undefined) {
      issues.add(['params', name, 'values'], `values are only allowed for enum params, not ${spec.type}`);
    }
    if (spec.type === 'file') {
      if (result.data.accept !== undefined)
        spec.accept = result.data.accept.map((ext) => (ext.startsWith('.') ? ext : `.${ext}`).toLowerCase());
      if (result.data.maxSize !== undefined) spec.maxSize = result.data.maxSize;
      if (result.data.default !== undefined)
        issues.add(
          ['params', name, 'default'],
          'a file param cannot have a default (the file is uploaded with the run)',
        );
    } else {
      if (result.data.accept !== undefined)
        issues.add(['params', name, 'accept'], `accept is only allowed for file params, not ${spec.type}`);
      if (result.data.maxSize !== undefined)
        issues.add(['params', name, 'maxSize'], `maxSize is only allowed for file params, not ${spec.type}`);
    }
    if (result.data.default !== undefined && spec.type !== 'file') {
      const converted = convertParam(spec, result.data.default);
      if ('error' in converted) issues.add(['params', name, 'default'], converted.error);
      else spec.default = converted.value;
    }
    params.push(spec);
  }
  const paramNames = new Set(params.map((param) => param.name));
  const declaredParamNames = new Set(Object.keys(file.params ?? {}));

  const checkPlaceholders = (at: PathSegment[], template: string): void => {
    for (const name of placeholders(template)) {
      if (!declaredParamNames.has(name)) issues.add(at, `\${${name}} refers to an unknown param`);
    }
  };

  // Assets.
  const assets: string[] = [];
  (file.assets ?? []).forEach((asset, index) => {
    const normalized = path.posix.normalize(asset);
    if (path.posix.isAbsolute(asset) || /^[A-Za-z]:|\\|\0/.test(asset)) {
      issues.add(
        ['assets', index],
        `asset path "${asset}" must be relative to the workflow, with "/" separators`,
      );
    } else if (asset.split('/').includes('..')) {
      issues.add(['assets', index], `asset path "${asset}" must not contain ".."`);
    } else if (normalized === '.' || normalized.startsWith('.steward/') || normalized === '.steward') {
      issues.add(['assets', index], `asset path "${asset}" is reserved`);
    } else if (assets.includes(normalized)) {
      issues.add(['assets', index], `asset "${asset}" is listed twice`);
    } else {
      assets.push(normalized);
    }
  });

  // Steps: kind and shape.
  const drafts: Draft[] = [];
  const seenIds = new Map<string, number>();
  file.steps.forEach((raw, index) => {
    const at: PathSegment[] = ['steps', index];
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
      issues.add(at, 'expected a mapping with an id and one of read, sql, write, shell, python, command');
      return;
    }
    const record = raw as Record<string, unknown>;
    const label = typeof record.id === 'string' ? `step "${record.id}"` : 'step';
    const kinds = stepKinds.filter((kind) => Object.hasOwn(record, kind));
    if (kinds.length === 0) {
      issues.add(at, `${label} has no kind: expected one of ${stepKinds.join(', ')}`);
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
    const kind = kinds[0]!;
    const result = stepSchemas[kind].safeParse(record);
    if (!result.success) {
      issues.addZod(at, result.error);
      return;
    }
    const id = result.data.id;
    const previous = seenIds.get(id);
    if (previous !== undefined) {
      issues.add([...at, 'id'], `duplicate step id "${id}" (also steps.${previous})`);
      return;
    }
    seenIds.set(id, index);
    drafts.push({ index, id, kind, data: result.data });
  });

  const kindOf = new Map(drafts.map((draft) => [draft.id, draft.kind]));
  const isTableStep = (id: string): boolean => TABLE_KINDS.has(kindOf.get(id) as StepKindName);
  const tableSteps = drafts.filter((draft) => TABLE_KINDS.has(draft.kind)).map((draft) => draft.id);
  const describeTables = (): string => (tableSteps.length === 0 ? 'none' : tableSteps.join(', '));

  // Steps: references and kind-specific rules. SQL analyses run concurrently.
  const steps: StepSpec[] = await Promise.all(
    drafts.map(async (draft): Promise<StepSpec> => {
      const at: PathSegment[] = ['steps', draft.index];
      const needs = new Set<string>();
      const tables = new Set<string>();
      const data = draft.data;
      ((data.needs as string[] | undefined) ?? []).forEach((need, needIndex) => {
        if (need === draft.id)
          issues.add([...at, 'needs', needIndex], `step "${draft.id}" cannot need itself`);
        else if (!kindOf.has(need))
          issues.add([...at, 'needs', needIndex], `step "${draft.id}" needs unknown step "${need}"`);
        else needs.add(need);
      });
      let timeoutMs: number | undefined;
      if (data.timeout !== undefined) {
        try {
          timeoutMs = parseDuration(data.timeout as string | number);
          if (timeoutMs <= 0) issues.add([...at, 'timeout'], 'timeout must be positive');
        } catch (error) {
          issues.add([...at, 'timeout'], (error as Error).message);
        }
      }
      const useTable = (table: string, where: PathSegment[], what: string): void => {
        if (table === draft.id) issues.add(where, `step "${draft.id}" cannot ${what} its own table`);
        else if (!kindOf.has(table))
          issues.add(where, `${what} unknown table "${table}" (tables: ${describeTables()})`);
        else if (!isTableStep(table)) {
          issues.add(
            where,
            `${what} "${table}", which is a ${kindOf.get(table)} step and produces no table (tables: ${describeTables()})`,
          );
        } else {
          tables.add(table);
          needs.add(table);
        }
      };

      let spec: ReadStepSpec | SqlStepSpec | WriteStepSpec | ScriptStepSpec;
      switch (draft.kind) {
        case 'read': {
          const read = data.read as
            string | { path: string; format?: TableFormat; options?: Record<string, ParamValue> };
          const readPath = typeof read === 'string' ? read : read.path;
          const pathAt = typeof read === 'string' ? [...at, 'read'] : [...at, 'read', 'path'];
          checkPlaceholders(pathAt, readPath);
          const format = (typeof read === 'string' ? undefined : read.format) ?? formatFromPath(readPath);
          if (!format)
            issues.add(
              pathAt,
              `cannot tell the format of "${readPath}" from its extension: add format (${tableFormats.join(', ')})`,
            );
          spec = {
            path: readPath,
            format: format ?? 'csv',
            options: (typeof read === 'string' ? undefined : read.options) ?? {},
          };
          break;
        }
        case 'sql': {
          const sql = data.sql as string;
          const sqlAt = [...at, 'sql'];
          const result = await analyzeSql(sql);
          const used: string[] = [];
          if (!result.ok) {
            const blockLine = parsed.blockContentLine(sqlAt);
            const line =
              result.position !== undefined && blockLine !== undefined
                ? blockLine + (sql.slice(0, result.position).match(/\n/g)?.length ?? 0)
                : undefined;
            issues.add(sqlAt, `step "${draft.id}": ${result.message}`, line !== undefined ? { line } : {});
          } else {
            for (const table of result.analysis.tables) {
              // A quoted file name (`FROM 'data/x.csv'`) is a DuckDB file scan, resolved in the job directory.
              if (isFileScan(table)) continue;
              const name = table.toLowerCase().replace(/^(memory\.)?main\./, '');
              if (name.includes('.')) {
                issues.add(
                  sqlAt,
                  `step "${draft.id}": table "${table}" is not a step table; only step tables can be referenced (tables: ${describeTables()})`,
                );
                continue;
              }
              useTable(name, sqlAt, `step "${draft.id}" reads`);
            }
            if (result.analysis.positional) {
              issues.add(
                sqlAt,
                `step "${draft.id}": positional parameters ($1, ?) are not supported; use $name of a declared param`,
              );
            }
            for (const name of result.analysis.params) {
              if (!paramNames.has(name) && !declaredParamNames.has(name)) {
                issues.add(
                  sqlAt,
                  `step "${draft.id}": $${name} is not a declared param (params: ${[...declaredParamNames].join(', ') || 'none'})`,
                );
              } else used.push(name);
            }
          }
          spec = { sql, params: used };
          break;
        }
        case 'write': {
          const write = data.write as {
            table: string;
            path: string;
            format?: TableFormat;
            options?: Record<string, ParamValue>;
          };
          useTable(write.table, [...at, 'write', 'table'], `step "${draft.id}" writes`);
          checkPlaceholders([...at, 'write', 'path'], write.path);
          const format = write.format ?? formatFromPath(write.path);
          if (!format)
            issues.add(
              [...at, 'write', 'path'],
              `cannot tell the format of "${write.path}" from its extension: add format (${tableFormats.join(', ')})`,
            );
          // The file's name is its result name: refused now rather than at upload, after every step ran.
          if (placeholders(write.path).length === 0) {
            const resultName = path.posix.basename(write.path);
            const problem = plainNameProblem(resultName);
            if (problem)
              issues.add(
                [...at, 'write', 'path'],
                `the result name ${JSON.stringify(resultName)} ${problem}: a result is one file name of at most 255 bytes`,
              );
          }
          spec = {
            table: write.table,
            path: write.path,
            format: format ?? 'csv',
            options: write.options ?? {},
          };
          break;
        }
        case 'shell':
        case 'python':
        case 'command': {
          const env: Record<string, string> = {};
          for (const [name, value] of Object.entries(
            (data.env as Record<string, ParamValue> | undefined) ?? {},
          )) {
            if (!ENV_NAME.test(name))
              issues.add([...at, 'env', name], `environment variable name "${name}" is invalid`, {
                keyLine: true,
              });
            else if (name.toUpperCase().startsWith('STEWARD_'))
              issues.add([...at, 'env', name], `environment variable "${name}" is reserved (STEWARD_*)`, {
                keyLine: true,
              });
            else {
              env[name] = String(value);
              checkPlaceholders([...at, 'env', name], env[name]);
            }
          }
          const inputs = (data.inputs as string[] | undefined) ?? [];
          inputs.forEach((input, inputIndex) =>
            useTable(input, [...at, 'inputs', inputIndex], `step "${draft.id}" takes as input`),
          );
          const script: ScriptStepSpec = {
            env,
            inputs: [...new Set(inputs)],
            inputFormat: (data.inputFormat as 'csv' | 'parquet' | undefined) ?? 'csv',
          };
          if (draft.kind === 'command') {
            script.command = (data.command as (string | number)[]).map(String);
            script.command.forEach((argument, argumentIndex) =>
              checkPlaceholders([...at, 'command', argumentIndex], argument),
            );
          } else {
            script.script = data[draft.kind] as string;
          }
          spec = script;
          break;
        }
      }
      const step: StepSpec = {
        id: draft.id,
        kind: draft.kind,
        needs: [...needs],
        tables: [...tables],
        spec: spec as unknown as Record<string, unknown>,
      };
      if (timeoutMs !== undefined) step.timeoutMs = timeoutMs;
      return step;
    }),
  );

  const cycle = findCycle(steps);
  if (cycle) {
    const first = drafts.find((draft) => draft.id === cycle[0]);
    issues.add(first ? ['steps', first.index] : ['steps'], `steps form a cycle: ${cycle.join(' → ')}`);
  }

  let outputs: string[];
  if (file.outputs === undefined) {
    outputs = cycle ? [] : leafSteps(steps);
  } else {
    outputs = [];
    file.outputs.forEach((output, index) => {
      if (!kindOf.has(output)) issues.add(['outputs', index], `output "${output}" is not a step`);
      else if (outputs.includes(output)) issues.add(['outputs', index], `output "${output}" is listed twice`);
      else outputs.push(output);
    });
  }

  if (issues.items.length > 0) throw invalid(sortIssues(issues.items), options.fileName);
  return {
    name: file.name,
    description: file.description ?? '',
    params,
    steps,
    outputs,
    assets,
    format,
    source,
  };
}

/** Issues in source order (line, then path), so "the first problem" is the first a reader meets. */
function sortIssues(issues: ValidationIssue[]): ValidationIssue[] {
  return [...issues].sort(
    (a, b) => (a.line ?? Number.MAX_SAFE_INTEGER) - (b.line ?? Number.MAX_SAFE_INTEGER),
  );
}

/** A workflow's summary for listings. */
export function describeWorkflow(workflow: Workflow): WorkflowDescription {
  return {
    description: workflow.description,
    params: workflow.params.map((param) => ({
      ...param,
      ...(param.values ? { values: [...param.values] } : {}),
    })),
    steps: workflow.steps.map((step) => ({ id: step.id, kind: step.kind, needs: [...step.needs] })),
  };
}

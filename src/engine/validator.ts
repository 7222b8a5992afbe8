/**
 * The one entry point for workflow text: parse, check the shape (zod), then every cross-field rule
 * (references, cycles, SQL tables and params, param definitions, placeholders). All problems are
 * collected with their field path and source line; the thrown error's message names the first.
 * Each phase is a function of its own here; the step phases are in step-validator.ts.
 */
import path from 'node:path';
import type { z } from 'zod';
import { ParamDefinitionSchema, WorkflowFileSchema } from './schema.js';
import { IssueList, invalid, sortIssues } from './issues.js';
import { convertParam, paramNameProblem } from './params.js';
import { findCycle, leafSteps } from './planner.js';
import { detectFormat, parseSource, type ParsedSource } from './source.js';
import { parseStepShapes, resolveSteps, type StepDraft } from './step-validator.js';
import type { ParamSpec, StepSpec, Workflow, WorkflowDescription } from './types.js';

export interface ParseOptions {
  /** Parser to use. Default: by `fileName` extension (`.json` → json), else yaml. */
  format?: 'yaml' | 'json';
  /** Source file name, used to pick the format and to prefix error messages. */
  fileName?: string;
  /**
   * Also refuse a `read` of a relative path that nothing provides (see `checkReadSources`). The server
   * checks this at push; a library caller that places files in the job directory itself leaves it off.
   * Default false.
   */
  requireReadSources?: boolean;
}

type WorkflowFile = z.output<typeof WorkflowFileSchema>;

/** Parses and fully validates a workflow. Throws STEWARD_WORKFLOW_INVALID listing every problem found. */
export async function parseWorkflow(source: string, options: ParseOptions = {}): Promise<Workflow> {
  const format = detectFormat(options.format, options.fileName);
  const { parsed, issues: syntaxIssues } = parseSource(source, format);
  if (!parsed) throw invalid(syntaxIssues, options.fileName);
  const issues = new IssueList(parsed);
  const file = parseShape(parsed, issues);
  if (!file) throw invalid(issues.items, options.fileName);

  const params = parseParams(file, issues);
  const assets = parseAssets(file.assets ?? [], issues);
  const drafts = parseStepShapes(file.steps, issues);
  const steps = await resolveSteps(drafts, {
    issues,
    parsed,
    declaredParams: new Set(Object.keys(file.params ?? {})),
    kindOf: new Map(drafts.map((draft) => [draft.id, draft.kind])),
  });
  const acyclic = checkCycles(steps, drafts, issues);
  if (acyclic && options.requireReadSources === true) checkReadSources(steps, drafts, assets, issues);
  const outputs = parseOutputs(file.outputs, steps, acyclic, issues);

  if (issues.items.length > 0) throw invalid(sortIssues(issues.items), options.fileName);
  return {
    name: file.name,
    description: file.description ?? '',
    params,
    steps,
    outputs,
    assets,
    ...(file.cluster !== undefined ? { cluster: file.cluster } : {}),
    format,
    source,
  };
}

/** Phase: the top-level shape (name, steps, known keys). Undefined when it is wrong: nothing else can run. */
function parseShape(parsed: ParsedSource, issues: IssueList): WorkflowFile | undefined {
  if (parsed.data === null || typeof parsed.data !== 'object' || Array.isArray(parsed.data)) {
    issues.add([], 'expected a mapping with name and steps');
    return undefined;
  }
  const top = WorkflowFileSchema.safeParse(parsed.data);
  if (!top.success) {
    issues.addZod([], top.error);
    return undefined;
  }
  return top.data;
}

/** Phase: param definitions (names, types, enum values, defaults converted to their type). */
function parseParams(file: WorkflowFile, issues: IssueList): ParamSpec[] {
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
  return params;
}

/** Phase: asset paths, relative to the workflow and inside it. */
function parseAssets(files: readonly string[], issues: IssueList): string[] {
  const assets: string[] = [];
  files.forEach((asset, index) => {
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
  return assets;
}

/**
 * Phase: a `read` of a relative path (without params or globs) reads a file in the job directory, which
 * holds only the workflow's assets and what its steps write there. One that is no asset, no `write` step's
 * target and not after a script or command step (which may create it) would fail only when the job runs:
 * refuse it at push, naming the path.
 */
function checkReadSources(
  steps: readonly StepSpec[],
  drafts: readonly StepDraft[],
  assets: readonly string[],
  issues: IssueList,
): void {
  const byId = new Map(steps.map((step) => [step.id, step]));
  const written = new Set(
    steps.flatMap((step) => (step.kind === 'write' ? [path.posix.normalize(step.spec.path)] : [])),
  );
  const afterProcessStep = (step: StepSpec): boolean => {
    const seen = new Set<string>();
    const stack = [...step.needs];
    while (stack.length > 0) {
      const id = stack.pop()!;
      if (seen.has(id)) continue;
      seen.add(id);
      const need = byId.get(id);
      if (!need) continue;
      if (need.kind === 'shell' || need.kind === 'python' || need.kind === 'command') return true;
      stack.push(...need.needs);
    }
    return false;
  };
  for (const step of steps) {
    if (step.kind !== 'read') continue;
    const file = step.spec.path;
    if (
      path.posix.isAbsolute(file) ||
      file.includes('${') ||
      /[*?[]/.test(file) ||
      /^[a-z][a-z0-9+.-]*:/i.test(file)
    )
      continue;
    const normalized = path.posix.normalize(file);
    const isAsset = assets.some((asset) => asset === normalized || normalized.startsWith(`${asset}/`));
    if (isAsset || written.has(normalized) || afterProcessStep(step)) continue;
    const index = drafts.find((draft) => draft.id === step.id)?.index ?? 0;
    issues.add(
      ['steps', index, 'read'],
      `step "${step.id}" reads "${file}", which is not in the workflow's assets: list it under assets (it is uploaded with the workflow) or give an absolute path`,
    );
  }
}

/** Phase: the dependency graph has no cycle. Returns whether it is acyclic. */
function checkCycles(steps: StepSpec[], drafts: readonly StepDraft[], issues: IssueList): boolean {
  const cycle = findCycle(steps);
  if (!cycle) return true;
  const first = drafts.find((draft) => draft.id === cycle[0]);
  issues.add(first ? ['steps', first.index] : ['steps'], `steps form a cycle: ${cycle.join(' → ')}`);
  return false;
}

/** Phase: published steps; by default the leaves of the graph (none when it has a cycle). */
function parseOutputs(
  listed: readonly string[] | undefined,
  steps: StepSpec[],
  acyclic: boolean,
  issues: IssueList,
): string[] {
  if (listed === undefined) return acyclic ? leafSteps(steps) : [];
  const stepIds = new Set(steps.map((step) => step.id));
  const outputs: string[] = [];
  listed.forEach((output, index) => {
    if (!stepIds.has(output)) issues.add(['outputs', index], `output "${output}" is not a step`);
    else if (outputs.includes(output)) issues.add(['outputs', index], `output "${output}" is listed twice`);
    else outputs.push(output);
  });
  return outputs;
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

/**
 * Workflow parameters: checking their definitions, converting values people type (`-p n=5`) into typed
 * values, and `${name}` substitution in paths, arguments and environment values.
 */
import { StewardError, type ParamValue } from '../protocol/index.js';
import type { ParamSpec, ValidationIssue, Workflow } from './types.js';

export const PARAM_NAME = /^[a-z_][a-z0-9_]*$/;

/**
 * Params become environment variables of their own name in script steps, so names that would replace
 * variables programs rely on are refused (compared case-insensitively).
 */
const reservedParamNames = new Set([
  'path',
  'home',
  'user',
  'shell',
  'lang',
  'tmpdir',
  'logname',
  'pwd',
  'ifs',
  'term',
  'tz',
  'env',
  'ld_preload',
  'ld_library_path',
  'pythonpath',
  'pythonhome',
  'bash_env',
]);

export function paramNameProblem(name: string): string | undefined {
  if (!PARAM_NAME.test(name) || name.length > 64) {
    return `param name "${name}" is invalid: expected lowercase letters, digits and "_", not starting with a digit (at most 64)`;
  }
  const lower = name.toLowerCase();
  if (lower.startsWith('steward_'))
    return `param name "${name}" clashes with the STEWARD_* environment variables`;
  if (reservedParamNames.has(lower) || lower.startsWith('lc_')) {
    return `param name "${name}" clashes with the environment variable ${name.toUpperCase()} that script steps rely on`;
  }
  return undefined;
}

/** Converts one value (typed JSON or a CLI string) to the param's type; returns an error message on failure. */
export function convertParam(
  spec: Pick<ParamSpec, 'type' | 'values'>,
  value: ParamValue,
): { value: ParamValue } | { error: string } {
  const got = typeof value === 'string' ? JSON.stringify(value) : String(value);
  switch (spec.type) {
    case 'string':
      return { value: String(value) };
    case 'integer': {
      if (typeof value === 'number') {
        return Number.isSafeInteger(value) ? { value } : { error: `expected an integer, got ${got}` };
      }
      if (typeof value === 'string' && /^\s*[+-]?\d+\s*$/.test(value)) {
        const parsed = Number(value);
        if (Number.isSafeInteger(parsed)) return { value: parsed };
      }
      return { error: `expected an integer, got ${got}` };
    }
    case 'number': {
      if (typeof value === 'number')
        return Number.isFinite(value) ? { value } : { error: `expected a number, got ${got}` };
      if (typeof value === 'string' && value.trim() !== '') {
        const parsed = Number(value);
        if (Number.isFinite(parsed)) return { value: parsed };
      }
      return { error: `expected a number, got ${got}` };
    }
    case 'boolean': {
      if (typeof value === 'boolean') return { value };
      if (typeof value === 'string') {
        const lower = value.trim().toLowerCase();
        if (['true', 'yes', '1', 'on'].includes(lower)) return { value: true };
        if (['false', 'no', '0', 'off'].includes(lower)) return { value: false };
      }
      return { error: `expected true or false, got ${got}` };
    }
    case 'date': {
      if (typeof value === 'string' && isCalendarDate(value.trim())) return { value: value.trim() };
      return { error: `expected a date like 2026-01-31, got ${got}` };
    }
    case 'file': {
      // Before the run: the id of an upload (the server swaps it for the stored input). In the run: the
      // file's absolute path in the job directory (the executor sets it).
      if (typeof value === 'string' && value.trim() !== '' && value.length <= 4096)
        return { value: value.trim() };
      return { error: `expected an uploaded file (an upload id), got ${got}` };
    }
    case 'enum': {
      const text = typeof value === 'boolean' ? undefined : String(value);
      const values = spec.values ?? [];
      if (text !== undefined && values.includes(text)) return { value: text };
      return { error: `expected one of ${values.map((v) => JSON.stringify(v)).join(', ')}, got ${got}` };
    }
  }
}

function isCalendarDate(text: string): boolean {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text);
  if (!match) return false;
  const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])];
  const date = new Date(Date.UTC(year, month - 1, day));
  return date.getUTCFullYear() === year && date.getUTCMonth() === month - 1 && date.getUTCDate() === day;
}

/**
 * Checks and types job parameters against the workflow's definitions: converts strings, applies defaults,
 * enforces required params. Unknown names are errors. Optional params without a default and without a
 * value are left out of the result (SQL sees NULL, `${name}` expands to nothing).
 */
export function resolveParams(
  workflow: Pick<Workflow, 'params'>,
  raw: Record<string, ParamValue>,
): Record<string, ParamValue> {
  const issues: ValidationIssue[] = [];
  const resolved: Record<string, ParamValue> = {};
  const known = new Map(workflow.params.map((spec) => [spec.name, spec]));
  for (const name of Object.keys(raw)) {
    if (!known.has(name)) {
      const list = workflow.params.map((spec) => spec.name).join(', ');
      issues.push({
        path: `params.${name}`,
        message: `unknown param (this workflow takes ${list === '' ? 'no params' : list})`,
      });
    }
  }
  for (const spec of workflow.params) {
    const given = Object.hasOwn(raw, spec.name) ? raw[spec.name] : undefined;
    if (given === undefined) {
      if (spec.default !== undefined) resolved[spec.name] = spec.default;
      else if (spec.required)
        issues.push({ path: `params.${spec.name}`, message: `required, but no value was given` });
      continue;
    }
    const converted = convertParam(spec, given);
    if ('error' in converted) issues.push({ path: `params.${spec.name}`, message: converted.error });
    else resolved[spec.name] = converted.value;
  }
  if (issues.length > 0) {
    const first = issues[0]!;
    const more = issues.length > 1 ? ` (and ${issues.length - 1} more)` : '';
    // `param` names the first param at fault, so a form can show the error at its field.
    throw new StewardError('STEWARD_PARAMS_INVALID', `${first.path}: ${first.message}${more}`, {
      details: { issues, param: first.path.replace(/^params\./, '') },
    });
  }
  return resolved;
}

export function paramToString(value: ParamValue | undefined): string {
  return value === undefined ? '' : String(value);
}

const PLACEHOLDER = /\$(\$|\{([^}]*)\})/g;

/** Names referenced as `${name}` in a template (`$$` is an escaped `$`). Invalid names are returned as-is. */
export function placeholders(template: string): string[] {
  const names: string[] = [];
  for (const match of template.matchAll(PLACEHOLDER)) if (match[2] !== undefined) names.push(match[2]);
  return names;
}

/** Replaces `${name}` by the param's value and `$$` by `$`; any other `$` is kept. */
export function substitute(template: string, params: Record<string, ParamValue>): string {
  return template.replace(PLACEHOLDER, (_whole, escaped: string, name: string | undefined) =>
    name === undefined ? escaped.slice(0, 1) : paramToString(params[name]),
  );
}

/**
 * Validation problems of one workflow: collected with their field path and source line while every phase
 * runs, then thrown together as one STEWARD_WORKFLOW_INVALID whose message names the first.
 */
import type { z } from 'zod';
import { StewardError } from '../protocol/index.js';
import type { ParsedSource, PathSegment } from './source.js';
import type { ValidationIssue } from './types.js';

export class IssueList {
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

export function invalid(issues: ValidationIssue[], fileName: string | undefined): StewardError {
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

/** Issues in source order (line, then path), so "the first problem" is the first a reader meets. */
export function sortIssues(issues: ValidationIssue[]): ValidationIssue[] {
  return [...issues].sort(
    (a, b) => (a.line ?? Number.MAX_SAFE_INTEGER) - (b.line ?? Number.MAX_SAFE_INTEGER),
  );
}

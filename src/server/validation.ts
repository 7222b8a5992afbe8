/**
 * The one validation entry point for HTTP input: params, query and body are parsed with the route's zod
 * schemas, and failures become STEWARD_BAD_REQUEST naming the field, the rule and the value.
 */
import type { z } from 'zod';
import { StewardError } from '../protocol/index.js';

/** Fields whose values are never echoed back in error messages. */
const SECRET_FIELDS = new Set(['password', 'token', 'source', 'assets']);

export interface InputIssue {
  field: string;
  rule: string;
  message: string;
  value?: unknown;
}

export function parseInput<S extends z.ZodType>(
  schema: S,
  input: unknown,
  where: 'params' | 'query' | 'body',
): z.output<S> {
  const result = schema.safeParse(input ?? (where === 'body' ? undefined : {}));
  if (result.success) return result.data;
  const issues: InputIssue[] = result.error.issues.flatMap((issue): InputIssue[] => {
    const segments = issue.path.map(String);
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((key) => ({
        field: [where, ...segments, key].join('.'),
        rule: issue.code,
        message: 'unknown field',
      }));
    }
    const secret = segments.some((segment) => SECRET_FIELDS.has(segment));
    const value = secret ? undefined : valueAt(input, segments);
    // Only scalars are echoed: a whole object could carry a secret field along with it.
    const echo = value === null || ['string', 'number', 'boolean'].includes(typeof value);
    return [
      {
        field: [where, ...segments].join('.'),
        rule: issue.code,
        message: issue.message,
        ...(echo ? { value } : {}),
      },
    ];
  });
  const first = issues[0]!;
  const got = first.value === undefined ? '' : `, got ${describeValue(first.value)}`;
  const more = issues.length > 1 ? ` (and ${issues.length - 1} more)` : '';
  throw new StewardError('STEWARD_BAD_REQUEST', `${first.field}: ${first.message}${got}${more}`, {
    details: { issues },
  });
}

function valueAt(input: unknown, segments: readonly string[]): unknown {
  let current = input;
  for (const segment of segments) {
    if (current === null || typeof current !== 'object') return undefined;
    current = (current as Record<string, unknown>)[segment];
  }
  return current;
}

function describeValue(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 100 ? `${text.slice(0, 100)}…` : text;
}

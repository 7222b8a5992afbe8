/** Names, references, times and the error shape shared by every part of the REST API. */
import { z } from 'zod';
import { ErrorInfo } from '../messages.js';

export const UserName = z
  .string()
  .min(1)
  .max(64)
  .regex(
    /^[a-z_][a-z0-9_.-]*$/,
    'expected a lowercase name: letters, digits, "_", "." or "-", not starting with a digit',
  );
export const Role = z.enum(['admin', 'user']);
export type Role = z.infer<typeof Role>;
export const WorkflowName = z
  .string()
  .min(1)
  .max(100)
  .regex(/^[a-z0-9][a-z0-9_-]*$/, 'expected lowercase letters, digits, "_" or "-"');
/**
 * A space's name. Personal spaces are named after their user, so the rule is the user-name rule; shared
 * spaces follow it too, so one namespace serves both.
 */
export const SpaceName = UserName;
/**
 * `[space/]name[@version]` as a string. The shape is checked by `parseWorkflowRef` on the server, which
 * answers STEWARD_WORKFLOW_REF_INVALID (one code for every malformed reference) rather than a schema error.
 */
export const WorkflowRef = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[a-z0-9_.@/-]+$/, 'expected [SPACE/]NAME[@VERSION]: lowercase letters, digits, "_", ".", "-"');

/** The agent labels a job (or a schedule's jobs) must run on: up to 20 of letters, digits and `_.:-`. */
export const JobLabels = z
  .array(z.string().regex(/^[a-zA-Z0-9_.:-]{1,100}$/))
  .max(20)
  .default([]);

export interface ParsedWorkflowRef {
  /** Absent: the caller's personal space. */
  space?: string;
  name: string;
  /** Absent: the latest version. */
  version?: number;
}

const REF_PATTERN = /^(?:([a-z_][a-z0-9_.-]{0,63})\/)?([a-z0-9][a-z0-9_-]{0,99})(?:@([1-9][0-9]{0,8}))?$/;

/**
 * Parses `NAME`, `NAME@VERSION`, `SPACE/NAME` or `SPACE/NAME@VERSION`; returns a sentence saying what is
 * wrong otherwise (a slash anywhere but between space and name, two slashes, a bad version).
 */
export function parseWorkflowRef(ref: string): ParsedWorkflowRef | { error: string } {
  const match = REF_PATTERN.exec(ref);
  if (match) {
    const [, space, name = '', version] = match;
    return {
      ...(space !== undefined ? { space } : {}),
      name,
      ...(version !== undefined ? { version: Number(version) } : {}),
    };
  }
  const slashes = ref.split('/').length - 1;
  const quoted = JSON.stringify(ref.length > 200 ? `${ref.slice(0, 200)}…` : ref);
  const at = ref.indexOf('@');
  const misplaced =
    slashes === 1 && (ref.startsWith('/') || ref.endsWith('/') || (at !== -1 && at < ref.indexOf('/')));
  const why =
    slashes > 1
      ? 'has more than one "/"; only SPACE/NAME has one'
      : misplaced
        ? 'has its "/" in the wrong place; the space comes first: SPACE/NAME@VERSION'
        : 'is not NAME, NAME@VERSION, SPACE/NAME or SPACE/NAME@VERSION (lowercase letters, digits, "_" or "-"; versions from 1)';
  return { error: `workflow ${quoted} ${why}` };
}

export const ErrorResponse = z.object({
  error: ErrorInfo.extend({ details: z.record(z.string(), z.unknown()).optional() }),
});

/** A time in a listing filter: an ISO 8601 time (`2026-01-31T12:00:00Z`) or a date (`2026-01-31`, UTC). */
export const IsoTime = z
  .string()
  .max(64)
  .refine(
    (value) =>
      /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/.test(value) &&
      !Number.isNaN(Date.parse(value)),
    'expected an ISO time like 2026-01-31T12:00:00Z, or a date like 2026-01-31',
  );

/** Epoch ms of an `IsoTime`; a time written without a zone is UTC, whatever the server's zone. */
export function parseIsoTime(value: string): number {
  const zoned = /(?:Z|[+-]\d{2}:?\d{2})$/.test(value) || !value.includes(':');
  return Date.parse(zoned ? value : `${value.replace(' ', 'T')}Z`);
}

export const Health = z.object({ status: z.literal('ok'), version: z.string(), time: z.string() });

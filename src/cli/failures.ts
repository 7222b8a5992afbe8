/**
 * How the CLI fails: every failure the user sees is one line, `steward: CODE: message`, with a stable code
 * from the protocol catalogue. Usage mistakes exit 2, everything else 1; stacks only with `--debug`.
 */
import { StewardError, isErrorCode, type ErrorCode } from '../protocol/index.js';
import { formatJson } from './output.js';

/** A wrong invocation (bad option value, missing argument): exit status 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** A failure reported by, or about, the server, with extra lines (validation issues) to print after it. */
export class CliError extends StewardError {
  readonly lines: readonly string[];
  /** The HTTP status the server (or a proxy in front of it) answered, when there was an answer. */
  readonly httpStatus: number | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    options: {
      lines?: readonly string[];
      cause?: unknown;
      details?: Record<string, unknown>;
      httpStatus?: number;
    } = {},
  ) {
    super(code, message, options);
    this.name = 'CliError';
    this.lines = options.lines ?? [];
    this.httpStatus = options.httpStatus;
  }
}

export const exitCodes = { ok: 0, failure: 1, usage: 2 } as const;

/**
 * Writes the report for `error` to stderr and returns the exit status: one line `steward: CODE: message`, or
 * with `json` one JSON document shaped like the REST API's error body, `{"error": {code, message, details}}`
 * (validation issues in `details.issues`), so a script reading `--json` output never parses prose.
 */
export function reportFailure(
  error: unknown,
  debug: boolean,
  write: (text: string) => void,
  json = false,
): number {
  if (json) return reportJsonFailure(error, debug, write);
  if (error instanceof UsageError) {
    write(`steward: ${error.message}\n`);
    if (debug && error.stack) write(`${error.stack}\n`);
    return exitCodes.usage;
  }
  if (error instanceof StewardError) {
    write(`steward: ${error.code}: ${oneLine(error.message)}\n`);
    if (error instanceof CliError) for (const line of error.lines) write(`  ${line}\n`);
    if (debug) writeDebug(error, write);
    return exitCodes.failure;
  }
  const code: ErrorCode = isErrorCode((error as { code?: unknown } | null)?.code)
    ? (error as { code: ErrorCode }).code
    : 'STEWARD_INTERNAL';
  const message = error instanceof Error ? error.message : String(error);
  write(`steward: ${code}: ${oneLine(message)}\n`);
  if (debug) writeDebug(error, write);
  return exitCodes.failure;
}

function reportJsonFailure(error: unknown, debug: boolean, write: (text: string) => void): number {
  const usage = error instanceof UsageError;
  const code: ErrorCode = usage
    ? 'STEWARD_BAD_REQUEST'
    : error instanceof StewardError
      ? error.code
      : isErrorCode((error as { code?: unknown } | null)?.code)
        ? (error as { code: ErrorCode }).code
        : 'STEWARD_INTERNAL';
  const message = error instanceof Error ? error.message : String(error);
  const details: Record<string, unknown> = {
    ...(error instanceof StewardError && error.details ? error.details : {}),
    ...(error instanceof CliError && error.lines.length > 0 ? { issues: error.lines } : {}),
    ...(error instanceof CliError && error.httpStatus !== undefined ? { httpStatus: error.httpStatus } : {}),
  };
  write(formatJson({ error: { code, message, details } }));
  if (debug) writeDebug(error, write);
  return usage ? exitCodes.usage : exitCodes.failure;
}

function writeDebug(error: unknown, write: (text: string) => void): void {
  let current: unknown = error;
  let prefix = '';
  while (current !== undefined && current !== null) {
    write(
      `${prefix}${current instanceof Error ? (current.stack ?? current.message) : JSON.stringify(current)}\n`,
    );
    current = current instanceof Error ? current.cause : undefined;
    prefix = 'caused by: ';
  }
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}

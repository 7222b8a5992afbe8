import { z } from 'zod';

const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses durations written by people: `250ms`, `30s`, `30m`, `2h`, `7d`, or a bare number of milliseconds. */
export function parseDuration(text: string | number): number {
  if (typeof text === 'number') {
    if (!Number.isFinite(text) || text < 0) throw new Error(`expected a duration like "30m", got ${text}`);
    return text;
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!match) throw new Error(`expected a duration like "30s", "30m" or "2h", got ${JSON.stringify(text)}`);
  return Math.round(Number(match[1]) * units[match[2] ?? 'ms']!);
}

/**
 * The exact text of a duration in the largest unit that divides it (`2m`, `90s`, `1500ms`): what
 * `parseDuration` reads back to the same value. For messages that quote a setting or a limit as it would be
 * written in a config or a workflow file. Not for elapsed times shown to people: see the CLI's
 * `formatElapsed`, which rounds (`4m05s`).
 */
export function formatExactDuration(ms: number): string {
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    if (ms !== 0 && ms % units[unit]! === 0) return `${ms / units[unit]!}${unit}`;
  }
  return `${ms}ms`;
}

/** A zod schema that accepts a human duration and yields milliseconds. */
export const Duration = z.union([z.string(), z.number()]).transform((value, ctx) => {
  try {
    return parseDuration(value);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
    return z.NEVER;
  }
});

/**
 * `server.retention`: how long the server keeps what ended jobs left behind. Two horizons, counted from a
 * job's end: `results` (its result files, step logs and input files) and `records` (the job's row, steps and
 * attempts, which `steward jobs` lists). Per-space overrides are keyed by space name (a personal space is
 * named after its user). Pinned jobs are never touched. Without the section nothing is ever removed.
 */
import { z } from 'zod';
import { Duration, formatExactDuration, StewardError } from '../protocol/index.js';

/** A horizon: a duration (`30d`, `12h`) or `forever`. */
const Horizon = z.union([z.literal('forever'), Duration]);

const Horizons = z
  .object({
    /** Result files, logs and inputs of a job are removed this long after it ended. Default: `records`. */
    results: Horizon.optional(),
    /** The job's record goes this long after it ended (at least `results`). Default `forever`. */
    records: Horizon.optional(),
  })
  .strict();

export const RetentionConfig = Horizons.extend({
  /** Overrides by space name: `{team-a: {results: 7d}}`; what a space leaves out is the default's. */
  spaces: z.record(z.string().min(1).max(100), Horizons).default({}),
  /** How often the background sweep runs. Default `1h`; at least `1m`. */
  sweepInterval: Duration.default(3_600_000).refine((ms) => ms >= 60_000, 'expected at least 1m'),
  /** Jobs handled per batch (one query and one commit each). Default 200. */
  batchSize: z.number().int().min(1).max(10_000).default(200),
}).strict();
export type RetentionConfig = z.input<typeof RetentionConfig>;

/** Milliseconds after a job's end, or null for "kept forever". */
export interface RetentionHorizons {
  readonly resultsMs: number | null;
  readonly recordsMs: number | null;
}

export interface CompiledRetentionConfig extends RetentionHorizons {
  /** Per-space horizons, each already merged with the defaults. */
  readonly spaces: ReadonlyMap<string, RetentionHorizons>;
  readonly sweepIntervalMs: number;
  readonly batchSize: number;
}

/** Undefined when there is no retention section (nothing is ever removed). Takes the section as parsed. */
export function compileRetentionConfig(
  c: z.output<typeof RetentionConfig> | undefined,
): CompiledRetentionConfig | undefined {
  if (c === undefined) return undefined;
  const toMs = (value: number | 'forever' | undefined, fallback: number | null): number | null =>
    value === undefined ? fallback : value === 'forever' ? null : value;
  // An unset `results` follows `records` (files go at the latest with the record).
  const recordsMs = toMs(c.records, null);
  const defaults = check('server.retention', { resultsMs: toMs(c.results, recordsMs), recordsMs });
  const spaces = new Map<string, RetentionHorizons>();
  for (const [space, horizons] of Object.entries(c.spaces)) {
    const spaceRecordsMs = toMs(horizons.records, defaults.recordsMs);
    spaces.set(
      space,
      check(`server.retention.spaces.${space}`, {
        resultsMs: toMs(horizons.results, shorter(defaults.resultsMs, spaceRecordsMs)),
        recordsMs: spaceRecordsMs,
      }),
    );
  }
  return Object.freeze({
    ...defaults,
    spaces,
    sweepIntervalMs: c.sweepInterval,
    batchSize: c.batchSize,
  });
}

/** The shorter of two horizons (null: forever). */
function shorter(a: number | null, b: number | null): number | null {
  if (a === null) return b;
  if (b === null) return a;
  return Math.min(a, b);
}

/** A record never goes before its files: `records` at least `results` (forever outlasts everything). */
function check(what: string, horizons: RetentionHorizons): RetentionHorizons {
  const { resultsMs, recordsMs } = horizons;
  if (recordsMs !== null && (resultsMs === null || recordsMs < resultsMs))
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      `${what}: records (${formatExactDuration(recordsMs)}) must be at least results (${
        resultsMs === null ? 'forever' : formatExactDuration(resultsMs)
      }): a job's record outlives its files`,
    );
  return Object.freeze({ resultsMs, recordsMs });
}

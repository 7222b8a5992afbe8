/**
 * Retention of ended jobs (`server.retention`): a background sweep removes the result files, step logs and
 * input files of jobs ended longer ago than `results`, and later the job records (`records`), oldest first
 * in bounded batches; pinned jobs are never touched. With several servers one sweeps at a time (the store's
 * `exclusively`: a PostgreSQL advisory lock). Each sweep that removed something, and every sweep an admin
 * asks for (`steward cleanup --server [--dry-run]`), is one audit entry with its counts.
 *
 * Order per job: the store first records that its files are gone (a conditional write that re-checks the
 * pin), then the files are removed. A crash in between leaves files nobody points at (harmless, and rare),
 * never a record pointing at files that are gone without saying so, nor a pinned job's files removed.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { CompiledRetentionConfig, RetentionHorizons } from '../config/index.js';
import { StewardError, type RetentionReport } from '../protocol/index.js';
import type { Clock, ExpiredJob, ExpiryRule, JobRecord, Store } from '../store/index.js';
import type { AuditLog } from './audit.js';
import type { Principal } from './auth.js';
import type { JobService } from './jobs/index.js';
import type { ServerMetrics } from './metrics/index.js';
import { iso } from './views.js';

/** Batches one sweep handles per phase at most; the next sweep continues where it stopped. */
const MAX_BATCHES = 50;
/** What a job id must look like before it names a directory to remove. */
const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

export interface RetentionDeps {
  store: Store;
  sharedDir: string;
  config: CompiledRetentionConfig | undefined;
  audit: AuditLog;
  jobs: JobService;
  metrics: ServerMetrics;
  logger: Logger;
  clock: Clock;
}

export class RetentionService {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<RetentionReport> | undefined;

  constructor(private readonly deps: RetentionDeps) {}

  /** Starts the background sweep (when retention is configured). */
  start(): void {
    const { config } = this.deps;
    if (!config || this.timer) return;
    this.timer = setInterval(() => {
      this.sweep({ dryRun: false, actor: 'system' }).catch((error: unknown) =>
        this.deps.logger.error({ err: error }, 'retention sweep failed'),
      );
    }, config.sweepIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /**
   * One sweep now. `dryRun` lists what a sweep would remove and changes nothing. A sweep already running on
   * this server is shared; one running on another server makes this one report `ran: false`.
   */
  sweep(options: {
    dryRun: boolean;
    actor: string;
    source?: string;
    now?: number;
  }): Promise<RetentionReport> {
    if (options.dryRun) return this.run(options);
    this.running ??= this.run(options).finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /** Pins (never removed) or unpins a job the caller may see: its owner or an admin. */
  async setPinned(principal: Principal, id: string, pinned: boolean, source: string): Promise<JobRecord> {
    await this.deps.jobs.visibleJob(principal, id, source);
    const job = await this.deps.store.retention.setPinned(id, pinned);
    if (!job) throw new StewardError('STEWARD_NOT_FOUND', `no job ${id}`);
    await this.deps.audit.record({
      actor: principal.user,
      action: pinned ? 'job.pin' : 'job.unpin',
      target: id,
      source,
    });
    return job;
  }

  private async run(options: {
    dryRun: boolean;
    actor: string;
    source?: string;
    now?: number;
  }): Promise<RetentionReport> {
    const { config, store } = this.deps;
    const now = options.now ?? this.deps.clock();
    const empty: RetentionReport = {
      dryRun: options.dryRun,
      ran: true,
      files: [],
      records: [],
      truncated: false,
    };
    if (!config) return empty;
    const outcome = options.dryRun
      ? { ran: true as const, value: await this.plan(config, now) }
      : await store.retention.exclusively(() => this.remove(config, now));
    if (!outcome.ran) return { ...empty, ran: false };
    const report: RetentionReport = { ...outcome.value, dryRun: options.dryRun, ran: true };
    const changed = report.files.length + report.records.length > 0;
    if (!options.dryRun) {
      this.deps.metrics.countRetention('files', report.files.length);
      this.deps.metrics.countRetention('records', report.records.length);
    }
    if (changed || options.actor !== 'system')
      await this.deps.audit.record({
        actor: options.actor,
        action: options.dryRun ? 'retention.dry-run' : 'retention.sweep',
        source: options.source ?? null,
        detail: { files: report.files.length, records: report.records.length, truncated: report.truncated },
      });
    return report;
  }

  /** What a sweep at `now` would remove: the same reads, with the same bounds, changing nothing. */
  private async plan(
    config: CompiledRetentionConfig,
    now: number,
  ): Promise<Omit<RetentionReport, 'dryRun' | 'ran'>> {
    const cap = config.batchSize * MAX_BATCHES;
    const retention = this.deps.store.retention;
    const files = await retention.listExpired('files', rulesFor(config, 'resultsMs', now), cap);
    const records = await retention.listExpired('records', rulesFor(config, 'recordsMs', now), cap);
    return {
      files: files.map(view),
      records: records.map(view),
      truncated: files.length >= cap || records.length >= cap,
    };
  }

  /** Removes files, then records, a batch at a time. */
  private async remove(
    config: CompiledRetentionConfig,
    now: number,
  ): Promise<Omit<RetentionReport, 'dryRun' | 'ran'>> {
    const retention = this.deps.store.retention;
    const files: ExpiredJob[] = [];
    const records: ExpiredJob[] = [];
    let truncated = false;
    const fileRules = rulesFor(config, 'resultsMs', now);
    for (let batch = 0; ; batch++) {
      if (batch === MAX_BATCHES) {
        truncated = true;
        break;
      }
      const due = await retention.listExpired('files', fileRules, config.batchSize);
      const marked = new Set(
        await retention.markFilesPurged(
          due.map((job) => job.id),
          now,
        ),
      );
      for (const job of due.filter((candidate) => marked.has(candidate.id))) {
        await this.removeFiles(job.id);
        files.push(job);
      }
      if (due.length < config.batchSize) break;
    }
    const recordRules = rulesFor(config, 'recordsMs', now);
    for (let batch = 0; ; batch++) {
      if (batch === MAX_BATCHES) {
        truncated = true;
        break;
      }
      const due = await retention.listExpired('records', recordRules, config.batchSize);
      const deleted = new Set(await retention.deleteRecords(due.map((job) => job.id)));
      for (const job of due.filter((candidate) => deleted.has(candidate.id))) {
        // Normally gone already (files expire first); a job whose horizons are equal loses both at once.
        await this.removeFiles(job.id);
        records.push(job);
      }
      if (due.length < config.batchSize) break;
    }
    return { files: files.map(view), records: records.map(view), truncated };
  }

  /** A job's result files, step logs and inputs (`<sharedDir>/results/<id>`, `<sharedDir>/jobs/<id>`). */
  private async removeFiles(id: string): Promise<void> {
    if (!SAFE_ID.test(id)) {
      this.deps.logger.warn({ jobId: id }, 'retention: not removing the files of a job with an unusual id');
      return;
    }
    for (const dir of [
      path.join(this.deps.sharedDir, 'results', id),
      path.join(this.deps.sharedDir, 'jobs', id),
    ]) {
      try {
        await rm(dir, { recursive: true, force: true });
      } catch (error) {
        this.deps.logger.warn({ err: error, jobId: id, dir }, 'retention: could not remove a job directory');
      }
    }
  }
}

/**
 * The store's expiry rules at `now` for one horizon: each overridden space on its own, and the default for
 * every other space. A horizon of `forever` (null) makes no rule.
 */
export function rulesFor(
  config: CompiledRetentionConfig,
  horizon: keyof RetentionHorizons,
  now: number,
): ExpiryRule[] {
  const rules: ExpiryRule[] = [];
  const overridden = [...config.spaces.keys()];
  const base = config[horizon];
  if (base !== null) rules.push({ finishedBefore: now - base, exceptSpaces: overridden });
  for (const [space, horizons] of config.spaces) {
    const ms = horizons[horizon];
    if (ms !== null) rules.push({ finishedBefore: now - ms, space });
  }
  return rules;
}

function view(job: ExpiredJob): RetentionReport['files'][number] {
  return { id: job.id, user: job.user, space: job.space, finishedAt: iso(job.finishedAt) };
}

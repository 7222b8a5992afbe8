/**
 * Live updates across servers: the store announces every committed job and step change on PostgreSQL
 * (NOTIFY); this feeds the changes other servers made into the local JobWatch, so an SSE stream on server A
 * follows a job whose events server B consumed. A notice carries ids only; the record is re-read, so a
 * listener always gets the committed state (possibly skipping an intermediate one, never a stale one).
 */
import type { Logger } from 'pino';
import type { ChangeListener, JobChangeNotice, Store } from '../store/index.js';
import type { JobWatch, LiveLogChunk } from './watch.js';

export class RemoteChanges {
  private listener: ChangeListener | undefined;
  /** Per job, the tail of its chain of reads, so one job's changes reach listeners in notice order. */
  private readonly chains = new Map<string, Promise<void>>();

  constructor(
    private readonly store: Store,
    private readonly watch: JobWatch,
    private readonly logger: Logger,
    /** Reads the bytes of a live log another server announced (see live-logs.ts). */
    private readonly readLog?: (
      jobId: string,
      log: NonNullable<JobChangeNotice['log']>,
    ) => Promise<LiveLogChunk | undefined>,
    /** Told when the LISTEN connection is lost (the metrics count it as a store connection error). */
    private readonly onConnectionLost?: () => void,
  ) {}

  /** No-op on SQLite (a single server hears all its own changes). */
  async start(): Promise<void> {
    this.listener = await this.store.listenForChanges({
      onNotice: (notice) => this.onNotice(notice),
      onReconnect: () => {
        this.logger.info('LISTEN connection to PostgreSQL re-established; refreshing watched jobs');
        // Notices sent while the connection was down are lost: re-read every watched job instead, and
        // have the jobs list streams re-read theirs.
        for (const jobId of this.watch.watchedJobIds()) this.onNotice({ origin: '', jobId });
        this.watch.publishResync();
      },
      onError: (error) => {
        this.onConnectionLost?.();
        this.logger.warn({ err: error }, 'LISTEN connection to PostgreSQL lost; reconnecting');
      },
    });
  }

  async stop(): Promise<void> {
    await this.listener?.close();
    this.listener = undefined;
  }

  private onNotice(notice: JobChangeNotice): void {
    if (!this.watch.isWatched(notice.jobId)) return;
    if (notice.stepId !== undefined && !this.watch.wantsSteps(notice.jobId)) return;
    const previous = this.chains.get(notice.jobId) ?? Promise.resolve();
    const run = previous.then(() => this.deliver(notice));
    this.chains.set(notice.jobId, run);
    void run.then(() => {
      if (this.chains.get(notice.jobId) === run) this.chains.delete(notice.jobId);
    });
  }

  /** Never rejects: a failed read is logged; the next notice or the stream's own end re-reads. */
  private async deliver(notice: JobChangeNotice): Promise<void> {
    try {
      if (notice.log !== undefined) {
        const chunk = await this.readLog?.(notice.jobId, notice.log);
        if (chunk) this.watch.publishLog(notice.jobId, chunk);
        return;
      }
      if (notice.stepId !== undefined) {
        const step = (await this.store.listSteps(notice.jobId)).find((s) => s.id === notice.stepId);
        if (step) this.watch.publishStep(step);
        return;
      }
      const job = await this.store.getJob(notice.jobId);
      if (job) this.watch.publishJob(job);
    } catch (error) {
      this.logger.warn({ err: error, jobId: notice.jobId }, 'could not read a job changed by another server');
    }
  }
}

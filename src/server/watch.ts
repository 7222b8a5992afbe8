/**
 * In-process fan-out of job and step changes to live listeners (SSE streams). The event consumer and the
 * job service publish here after the store has committed, so a listener never sees an uncommitted change.
 * With several servers on PostgreSQL, `RemoteChanges` (remote.ts) publishes here too what the other servers
 * applied, so a stream on any server follows a job whichever server consumed its events.
 */
import type { Logger } from 'pino';
import type { JobRecord, StepRecord } from '../store/index.js';

/** A piece of a running step's log: `text` is the stored log's bytes from `offset` (see live-logs.ts). */
export interface LiveLogChunk {
  stepId: string;
  stream: 'stdout' | 'stderr';
  offset: number;
  text: string;
}

export type JobChange =
  { type: 'job'; job: JobRecord } | { type: 'step'; step: StepRecord } | { type: 'log'; log: LiveLogChunk };
export type JobListener = (change: JobChange) => void;

/** A listener to every job's changes (the jobs list stream); steps are not sent to it. */
export interface AllJobsListener {
  job(job: JobRecord): void;
  /** Changes may have been missed (the LISTEN connection was down): re-read what you show. */
  resync(): void;
}

export class JobWatch {
  private readonly listeners = new Map<string, Set<JobListener>>();
  private readonly allJobs = new Set<AllJobsListener>();

  constructor(private readonly logger: Logger) {}

  subscribe(jobId: string, listener: JobListener): () => void {
    let set = this.listeners.get(jobId);
    if (!set) {
      set = new Set();
      this.listeners.set(jobId, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.listeners.delete(jobId);
    };
  }

  subscribeAll(listener: AllJobsListener): () => void {
    this.allJobs.add(listener);
    return () => {
      this.allJobs.delete(listener);
    };
  }

  /** Whether anyone listens to this job (remote changes are read from the store only then). */
  isWatched(jobId: string): boolean {
    return this.listeners.has(jobId) || this.allJobs.size > 0;
  }

  /** Whether anyone listens to this job's steps (only streams of that one job do). */
  wantsSteps(jobId: string): boolean {
    return this.listeners.has(jobId);
  }

  /** Tells every all-jobs listener that changes may have been missed. */
  publishResync(): void {
    for (const listener of [...this.allJobs]) {
      try {
        listener.resync();
      } catch (error) {
        this.logger.warn({ err: error }, 'jobs listener failed');
      }
    }
  }

  /** The jobs with listeners now. */
  watchedJobIds(): string[] {
    return [...this.listeners.keys()];
  }

  publishJob(job: JobRecord): void {
    this.emit(job.id, { type: 'job', job });
    for (const listener of [...this.allJobs]) {
      try {
        listener.job(job);
      } catch (error) {
        this.logger.warn({ err: error, jobId: job.id }, 'jobs listener failed');
      }
    }
  }

  publishStep(step: StepRecord): void {
    this.emit(step.jobId, { type: 'step', step });
  }

  publishLog(jobId: string, log: LiveLogChunk): void {
    this.emit(jobId, { type: 'log', log });
  }

  /** A listener that throws must not stop the others (or the consumer that published). */
  private emit(jobId: string, change: JobChange): void {
    const set = this.listeners.get(jobId);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(change);
      } catch (error) {
        this.logger.warn({ err: error, jobId }, 'job listener failed');
      }
    }
  }
}

/** Every job state change the job service makes goes through here: the store's checked transition, then live listeners. */
import type { Logger } from 'pino';
import type { CompiledServerConfig } from '../../config/index.js';
import type { JobState } from '../../protocol/index.js';
import type { JobPatch, JobRecord, Store, TransitionResult } from '../../store/index.js';
import type { AuditLog } from '../audit.js';
import type { JobWatch } from '../watch.js';
import type { OfferPublisher } from './offers.js';

export type TransitionJob = (
  id: string,
  to: JobState,
  patch?: JobPatch,
  options?: { from?: readonly JobState[]; attempt?: number },
) => Promise<TransitionResult>;

/** Told of every job state change this server committed, with the state the job left (the metrics). */
export type TransitionObserver = (job: JobRecord, from: JobState) => void;

/** Moves a job (see `Store.transitionJob`) and, once committed, tells live listeners and `observe`. */
export function jobTransitions(store: Store, watch: JobWatch, observe?: TransitionObserver): TransitionJob {
  return async (id, to, patch = {}, options = {}) => {
    const result = await store.transitionJob(id, to, patch, options);
    if (result.ok) {
      watch.publishJob(result.job);
      observe?.(result.job, result.from);
    }
    return result;
  };
}

/** What every part of the job service works with. */
export interface JobPartDeps {
  store: Store;
  audit: AuditLog;
  watch: JobWatch;
  config: CompiledServerConfig;
  logger: Logger;
  offers: OfferPublisher;
  transition: TransitionJob;
}

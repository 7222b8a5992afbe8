/**
 * The life of one offer at the agent, keyed by (job, attempt), as one discriminated union; every
 * transition is a method of `OfferTable`, and an illegal one throws naming both states.
 *
 *     (none) ──park──▶ parked ──unpark (hand-back, revoked)──▶ (none)
 *        │               │
 *        └────accept─────┴──▶ loading ──loaded──▶ running
 *                               │   │                │
 *            (none) ◀─handBack──┘   └──────end───────┴──▶ ended
 *
 * A taken job (loading, running, ended) is this agent's: a replay of its offer is refused and a
 * redelivery settled, never run again. Its offer delivery is held until the executor reports the workflow
 * loaded; should the broker take the delivery back first (a connection drop), the job keeps loading and
 * awaits its redelivery (`hold: 'taken-back'`, or `awaitingRedelivery` once ended).
 */
import type { Delivery } from '../bus/index.js';
import type { ExecutorIdentity, JobOffer } from '../protocol/index.js';
import type { JobCgroup } from './cgroups.js';
import type { PooledExecutor } from './collaborators.js';

/** Whose the offer's delivery is while a job is taken. */
export type OfferHold =
  /** This agent still owes the bus a settle (acked once the job loads or ends). */
  | { kind: 'held'; delivery: Delivery<unknown> }
  /** The broker took it back before the ack: its redelivery to this agent is settled, not run. */
  | { kind: 'taken-back' }
  /** No longer owed: acked, handed back, or its redelivery was settled. */
  | { kind: 'released' };

/** A job taken by this agent (loading or running); mutable per-job details live here. */
export interface ActiveJob {
  readonly key: string;
  readonly offer: JobOffer;
  hold: OfferHold;
  seq: number;
  cancelRequested: boolean;
  executor?: PooledExecutor;
  identity?: ExecutorIdentity;
  /** The executor cgroup's OOM-kill count when the job started, to attribute a later kill to it. */
  oomKillsBefore: number;
  /** When the offer reached this agent (monotonic ms), for the start-latency record. */
  readonly receivedAt: number;
  /** Whether the user had no executor here when the job was placed (a cold start). */
  coldStart: boolean;
  firstStepLogged: boolean;
  timing?: Record<string, number>;
  sentAt?: number;
  /** The job's own cgroup (every process of the job), when cgroups are in force. */
  cgroup?: JobCgroup;
  /** Ends the job from the agent when the executor overruns the time limit or a cancel (see enforce). */
  enforcer?: NodeJS.Timeout;
}

export interface ParkedOffer {
  readonly offer: JobOffer;
  readonly delivery: Delivery<unknown>;
  readonly receivedAt: number;
  readonly timer: NodeJS.Timeout;
}

export type OfferState =
  | ({ kind: 'parked' } & ParkedOffer)
  | { kind: 'loading'; job: ActiveJob }
  | { kind: 'running'; job: ActiveJob }
  | { kind: 'ended'; awaitingRedelivery: boolean };

export type OfferStateKind = OfferState['kind'];

export class IllegalOfferTransition extends Error {
  constructor(key: string, from: OfferStateKind | 'none', to: OfferStateKind | 'none') {
    super(`offer ${key}: illegal transition from ${from} to ${to}`);
    this.name = 'IllegalOfferTransition';
  }
}

export function offerKey(offer: Pick<JobOffer, 'jobId' | 'attempt'>): string {
  return `${offer.jobId}:${offer.attempt}`;
}

/** Ended offers remembered (to refuse replays, settle redeliveries); the oldest are forgotten beyond. */
const MAX_ENDED = 100_000;

export class OfferTable {
  private readonly states = new Map<string, OfferState>();
  /**
   * The loading and running jobs, apart: `states` also remembers up to `maxEnded` ended offers, and each
   * executor message looks its job up among the active ones.
   */
  private readonly active = new Set<ActiveJob>();
  private endedCount = 0;
  /**
   * The keys of parked offers, apart for the same reason: every job's end looks for parked offers to place,
   * and a walk over `states` grew with the ended offers remembered (a long-running agent's every job end
   * would have walked up to `maxEnded` of them).
   */
  private readonly parkedKeys = new Set<string>();

  constructor(private readonly maxEnded = MAX_ENDED) {}

  get(key: string): OfferState | undefined {
    return this.states.get(key);
  }

  /** Jobs loading or running (they hold a slot). */
  get jobs(): number {
    return this.active.size;
  }

  get parkedOffers(): number {
    return this.parkedKeys.size;
  }

  /** The job under `key` if it is this very job and still loading or running. */
  activeJob(key: string): ActiveJob | undefined {
    const state = this.states.get(key);
    return state?.kind === 'loading' || state?.kind === 'running' ? state.job : undefined;
  }

  isCurrent(job: ActiveJob): boolean {
    return this.activeJob(job.key) === job;
  }

  isLoading(job: ActiveJob): boolean {
    const state = this.states.get(job.key);
    return state?.kind === 'loading' && state.job === job;
  }

  activeJobs(): IterableIterator<ActiveJob> {
    return this.active.values();
  }

  *parked(): IterableIterator<ParkedOffer & { key: string }> {
    for (const key of this.parkedKeys) {
      const state = this.states.get(key);
      if (state?.kind === 'parked') yield { ...state, key };
    }
  }

  // --- transitions ---------------------------------------------------------------------------------------

  /** (none) → parked. */
  park(key: string, parked: ParkedOffer): void {
    this.expect(key, [undefined], 'parked');
    this.states.set(key, { kind: 'parked', ...parked });
    this.parkedKeys.add(key);
  }

  /** parked → (none), if `delivery` is still the parked one; returns the parked offer. */
  unpark(key: string, delivery?: Delivery<unknown>): ParkedOffer | undefined {
    const state = this.states.get(key);
    if (state?.kind !== 'parked' || (delivery && state.delivery !== delivery)) return undefined;
    this.states.delete(key);
    this.parkedKeys.delete(key);
    return state;
  }

  /** (none) | parked → loading. The parked entry, if any, must have been unparked first. */
  accept(job: ActiveJob): void {
    this.expect(job.key, [undefined], 'loading');
    this.states.set(job.key, { kind: 'loading', job });
    this.active.add(job);
  }

  /** loading → running: the executor reported the workflow loaded. */
  loaded(job: ActiveJob): void {
    if (!this.isLoading(job)) throw this.illegal(job.key, 'running');
    this.states.set(job.key, { kind: 'running', job });
  }

  /** loading | running → ended; false (and nothing changes) when the job is no longer current. */
  end(job: ActiveJob): boolean {
    if (!this.isCurrent(job)) return false;
    this.states.set(job.key, { kind: 'ended', awaitingRedelivery: job.hold.kind === 'taken-back' });
    this.active.delete(job);
    this.endedCount += 1;
    this.forgetOldEnded();
    return true;
  }

  /** loading → (none): handed back (the executor died before the load); a redelivery is a fresh offer. */
  handBack(job: ActiveJob): boolean {
    if (!this.isLoading(job)) return false;
    this.states.delete(job.key);
    this.active.delete(job);
    return true;
  }

  /**
   * The broker took back the job's held delivery: the job keeps loading (or has just ended) and its
   * redelivery is settled. Returns whether the offer is still this agent's.
   */
  takenBack(job: ActiveJob, delivery: Delivery<unknown>): boolean {
    if (job.hold.kind !== 'held' || job.hold.delivery !== delivery) return false;
    job.hold = { kind: 'taken-back' };
    const state = this.states.get(job.key);
    if (state?.kind === 'ended') {
      state.awaitingRedelivery = true;
      return true;
    }
    return this.isCurrent(job);
  }

  /** Whether a delivery of `key` is a redelivery of this agent's own job (to settle, not run). */
  isRedelivery(key: string, deliveryCount: number): boolean {
    const state = this.states.get(key);
    if (state === undefined || state.kind === 'parked') return false;
    const awaiting = state.kind === 'ended' ? state.awaitingRedelivery : state.job.hold.kind === 'taken-back';
    return awaiting || deliveryCount > 1;
  }

  /**
   * A redelivery of this agent's own job arrived (see `isRedelivery`): the offer no longer awaits one. A
   * loading job whose delivery was taken back holds the new one until it loads, and is returned; any other
   * redelivery is for the caller to ack.
   */
  redelivered(key: string, delivery: Delivery<unknown>): ActiveJob | undefined {
    const state = this.states.get(key);
    if (state?.kind === 'ended') state.awaitingRedelivery = false;
    if (state?.kind !== 'loading' && state?.kind !== 'running') return undefined;
    const { job } = state;
    if (state.kind === 'loading' && job.hold.kind !== 'held') {
      job.hold = { kind: 'held', delivery };
      return job;
    }
    if (job.hold.kind === 'taken-back') job.hold = { kind: 'released' };
    return undefined;
  }

  /** held → released: returns the delivery the caller now settles (ack, or requeue on a hand-back). */
  release(job: ActiveJob): Delivery<unknown> | undefined {
    if (job.hold.kind !== 'held') return undefined;
    const { delivery } = job.hold;
    job.hold = { kind: 'released' };
    return delivery;
  }

  private forgetOldEnded(): void {
    if (this.endedCount <= this.maxEnded) return;
    for (const [key, state] of this.states) {
      if (state.kind !== 'ended') continue;
      this.states.delete(key);
      this.endedCount -= 1;
      return;
    }
  }

  private expect(key: string, from: readonly (OfferStateKind | undefined)[], to: OfferStateKind): void {
    if (!from.includes(this.states.get(key)?.kind)) throw this.illegal(key, to);
  }

  private illegal(key: string, to: OfferStateKind | 'none'): IllegalOfferTransition {
    return new IllegalOfferTransition(key, this.states.get(key)?.kind ?? 'none', to);
  }
}

/**
 * Placement: what the agent does with an offer whose signature, version and deadline have verified — a pure
 * decision over what the agent knows of the offer and of itself (no I/O; the agent carries it out). In
 * order: a redelivery of a job this agent took is settled, never run again; a replay is refused; a newer
 * attempt of a job whose older attempt still runs here waits (two attempts of one job never run side by
 * side: same workspace, same results); an offer not for this agent goes round to others; one that does not
 * fit the load right now is parked; the rest is accepted.
 */

export type OfferAction =
  /** This agent's own job, delivered again after a broker drop: settle it (see `Agent.redelivered`). */
  | { kind: 'redelivered' }
  /** Taken (or parked) here already: dead-letter it as a replay. */
  | { kind: 'replayed' }
  /** An older attempt of the job is held here: stop it, and hand this offer back after HOLD_PAUSE_MS. */
  | { kind: 'older-attempt-held' }
  /** Missing labels, or the agent drained or stopping: hand it back after REJECT_PAUSE_MS. */
  | { kind: 'not-for-us' }
  /** Fits the labels but not the load now: hold it until a job ends. */
  | { kind: 'park'; reason: string }
  | { kind: 'accept' };

export interface OfferFacts {
  /** Whether the delivery is a redelivery of a job this agent took (see `OfferTable.isRedelivery`). */
  redelivery: boolean;
  /** Whether this agent knows the (job, attempt) already: parked, taken or ended here. */
  known: boolean;
  /** Whether an older attempt of the same job is loading or running here. */
  olderAttemptHeld: boolean;
  /** The offer's labels this agent lacks. */
  missingLabels: readonly string[];
  /** Whether the agent takes new jobs (not drained, not stopping). */
  open: boolean;
  freeSlots: number;
  /**
   * Why the offer does not fit the load now, or undefined when it fits. Called last, and only with a free
   * slot: it may make room (evict an idle executor).
   */
  room: () => string | undefined;
}

export function decideOffer(facts: OfferFacts): OfferAction {
  if (facts.redelivery) return { kind: 'redelivered' };
  if (facts.known) return { kind: 'replayed' };
  if (facts.olderAttemptHeld) return { kind: 'older-attempt-held' };
  if (facts.missingLabels.length > 0 || !facts.open) return { kind: 'not-for-us' };
  const reason = facts.freeSlots === 0 ? 'no free slot' : facts.room();
  return reason ? { kind: 'park', reason } : { kind: 'accept' };
}

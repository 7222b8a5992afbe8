/**
 * The agent's prefetch on the offers queue, as pure arithmetic. It is the free slots plus the offer
 * deliveries the agent still holds for its loading jobs: the bus counts those held deliveries against the
 * prefetch already, and counting them as busy slots too would let only half the free slots load at once.
 *
 * A larger prefetch applies at once. A smaller one waits a moment: every job lowers it when it loads and
 * raises it again when it ends, and each change costs a re-consume (three broker round trips); for short
 * jobs the two cancel out before the pause is over. An offer that arrives meanwhile with no room is parked
 * and placed when the next job ends, as any offer over capacity is.
 */

/** How long a decrease of the prefetch waits, in case a job ending raises it again. */
export const PREFETCH_SHRINK_DELAY_MS = 250;

export interface SlotUse {
  /** Whether the agent takes new jobs (not drained, not stopped). */
  open: boolean;
  /** Configured job slots. */
  slots: number;
  /** Jobs taken and not ended (loading or running). */
  jobs: number;
}

/** Slots a new job may take now. */
export function freeSlots({ open, slots, jobs }: SlotUse): number {
  return open ? Math.max(0, slots - jobs) : 0;
}

/** The prefetch the agent wants: free slots plus the offer deliveries it holds for loading jobs. */
export function wantedPrefetch(use: SlotUse & { holding: number }): number {
  if (!use.open) return 0;
  return freeSlots(use) + use.holding;
}

export type PrefetchChange =
  | { kind: 'apply'; prefetch: number }
  /** A decrease: apply the then-wanted prefetch after PREFETCH_SHRINK_DELAY_MS. */
  | { kind: 'shrink-later' };

/** What to do with the prefetch now: a rise (or a drop to 0: nothing more may come) applies at once. */
export function prefetchChange(want: number, applied: number): PrefetchChange {
  if (want > 0 && want < applied) return { kind: 'shrink-later' };
  return { kind: 'apply', prefetch: want };
}

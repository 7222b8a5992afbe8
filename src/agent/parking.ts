/**
 * Parking: what the agent does with an offer that fits this machine's labels but not its load right now.
 * Pure arithmetic (no timers, no bus): the agent holds the offer unacked, places it when a job ends, and
 * only hands it back after a pause spread over the offer's remaining deliveries and time, so waiting for
 * capacity does not exhaust the delivery limit (which is for offers no agent can take at all).
 */

/** Bounds of the pause before a parked offer (no room here now) is handed back to other agents. */
export const PARK_MS = [2_000, 30_000] as const;

/** Pause before handing back an offer that is not for this agent (labels, drained, stopping). */
export const REJECT_PAUSE_MS = [150, 450] as const;

/**
 * Pause before handing back a newer attempt of a job whose older attempt is still stopping here. Longer than a
 * plain reject: every hand-back counts towards the offer's delivery limit, and stopping an executor's job may
 * take until the TERM → KILL escalation.
 */
export const HOLD_PAUSE_MS = [1000, 2000] as const;

/** A uniformly random pause within `[low, high)`. */
export function jitteredPause(
  [low, high]: readonly [number, number],
  random: () => number = Math.random,
): number {
  return low + random() * (high - low);
}

export interface ParkInput {
  /** The offer's load deadline (epoch ms). */
  deadline: number;
  /** Now (epoch ms). */
  now: number;
  /** Deliveries after which the bus dead-letters the offer. */
  deliveryLimit: number;
  /** This delivery's number (1 for the first). */
  deliveryCount: number;
}

/**
 * How long a parked offer is held before it goes back to other agents: its remaining time divided by its
 * remaining deliveries, within PARK_MS, with ±20 % jitter so parked offers of many agents do not return
 * together.
 */
export function parkPause(input: ParkInput, random: () => number = Math.random): number {
  const remainingMs = Math.max(0, input.deadline - input.now);
  const deliveriesLeft = Math.max(1, input.deliveryLimit - input.deliveryCount);
  const [low, high] = PARK_MS;
  return Math.min(high, Math.max(low, remainingMs / deliveriesLeft)) * (0.8 + random() * 0.4);
}

export interface ParkedRank {
  /** The parked delivery's number: an offer that came back often is closest to its delivery limit. */
  deliveryCount: number;
  /** When it reached this agent (monotonic ms). */
  receivedAt: number;
}

/** The order in which parked offers are tried when room frees up: most-delivered first, then oldest. */
export function placementOrder<T extends ParkedRank>(parked: Iterable<T>): T[] {
  return [...parked].sort((a, b) => b.deliveryCount - a.deliveryCount || a.receivedAt - b.receivedAt);
}

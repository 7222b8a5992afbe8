import { describe, expect, it } from 'vitest';
import {
  HOLD_PAUSE_MS,
  PARK_MS,
  REJECT_PAUSE_MS,
  jitteredPause,
  parkPause,
  placementOrder,
} from '../../src/agent/parking.js';

const middle = () => 0.5;

describe('agent parking', () => {
  it("spreads a parked offer's remaining deliveries over its remaining time", () => {
    // 120 s left, delivery 1 of 20: 19 deliveries left → about 6.3 s each.
    const pause = parkPause({ deadline: 120_000, now: 0, deliveryLimit: 20, deliveryCount: 1 }, middle);
    expect(pause).toBeCloseTo(120_000 / 19, 5);
  });

  it('keeps the pause within its bounds, with ±20 % jitter', () => {
    const expired = { deadline: 0, now: 10_000, deliveryLimit: 20, deliveryCount: 1 };
    expect(parkPause(expired, () => 0)).toBeCloseTo(PARK_MS[0] * 0.8, 6);
    const far = { deadline: 3_600_000, now: 0, deliveryLimit: 20, deliveryCount: 1 };
    expect(parkPause(far, () => 1)).toBeCloseTo(PARK_MS[1] * 1.2, 6);
    // Past the delivery limit the whole remaining time is one pause, still capped.
    const last = { deadline: 10_000, now: 0, deliveryLimit: 20, deliveryCount: 25 };
    expect(parkPause(last, middle)).toBeCloseTo(10_000, 6);
  });

  it('tries the most-delivered parked offer first, then the oldest', () => {
    const order = placementOrder([
      { id: 'new-once', deliveryCount: 1, receivedAt: 30 },
      { id: 'old-once', deliveryCount: 1, receivedAt: 10 },
      { id: 'often', deliveryCount: 5, receivedAt: 40 },
      { id: 'twice', deliveryCount: 2, receivedAt: 20 },
    ]);
    expect(order.map((entry) => entry.id)).toEqual(['often', 'twice', 'old-once', 'new-once']);
  });

  it('jitters hand-back pauses within their range', () => {
    expect(jitteredPause(REJECT_PAUSE_MS, () => 0)).toBe(REJECT_PAUSE_MS[0]);
    expect(jitteredPause(REJECT_PAUSE_MS, middle)).toBe(300);
    expect(jitteredPause(HOLD_PAUSE_MS, () => 0.999)).toBeLessThan(HOLD_PAUSE_MS[1]);
  });
});

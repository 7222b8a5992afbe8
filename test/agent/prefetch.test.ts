import { describe, expect, it } from 'vitest';
import { freeSlots, prefetchChange, wantedPrefetch } from '../../src/agent/prefetch.js';

describe('agent prefetch', () => {
  it('has no free slot when drained or stopped, and never fewer than none', () => {
    expect(freeSlots({ open: true, slots: 4, jobs: 1 })).toBe(3);
    expect(freeSlots({ open: false, slots: 4, jobs: 1 })).toBe(0);
    expect(freeSlots({ open: true, slots: 2, jobs: 3 })).toBe(0);
  });

  it('counts the offer deliveries held for loading jobs on top of the free slots', () => {
    // 4 slots, 3 jobs of which 2 still loading (their deliveries unacked): 1 free + 2 held.
    expect(wantedPrefetch({ open: true, slots: 4, jobs: 3, holding: 2 })).toBe(3);
    expect(wantedPrefetch({ open: false, slots: 4, jobs: 3, holding: 2 })).toBe(0);
  });

  it('applies a rise or a drop to zero at once and delays any other decrease', () => {
    expect(prefetchChange(5, 3)).toEqual({ kind: 'apply', prefetch: 5 });
    expect(prefetchChange(3, 3)).toEqual({ kind: 'apply', prefetch: 3 });
    expect(prefetchChange(0, 3)).toEqual({ kind: 'apply', prefetch: 0 });
    expect(prefetchChange(2, 3)).toEqual({ kind: 'shrink-later' });
  });
});

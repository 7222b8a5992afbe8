import { describe, expect, it } from 'vitest';
import { decideOffer, type OfferFacts } from '../../src/agent/placement.js';

function facts(overrides: Partial<OfferFacts> = {}): OfferFacts {
  return {
    redelivery: false,
    known: false,
    olderAttemptHeld: false,
    missingLabels: [],
    open: true,
    freeSlots: 1,
    room: () => undefined,
    ...overrides,
  };
}

describe('agent placement', () => {
  it('accepts an offer it has room for', () => {
    expect(decideOffer(facts())).toEqual({ kind: 'accept' });
  });

  it('settles a redelivery of its own job before anything else, and refuses a replay', () => {
    expect(decideOffer(facts({ redelivery: true, known: true, open: false }))).toEqual({
      kind: 'redelivered',
    });
    expect(decideOffer(facts({ known: true, olderAttemptHeld: true }))).toEqual({ kind: 'replayed' });
  });

  it('holds a newer attempt back while an older one of the same job is here, even when drained', () => {
    expect(decideOffer(facts({ olderAttemptHeld: true, open: false }))).toEqual({
      kind: 'older-attempt-held',
    });
  });

  it('hands back an offer whose labels it lacks, or any offer while drained', () => {
    expect(decideOffer(facts({ missingLabels: ['gpu'] }))).toEqual({ kind: 'not-for-us' });
    expect(decideOffer(facts({ open: false }))).toEqual({ kind: 'not-for-us' });
  });

  it('parks an offer without a free slot without asking for room, and one that does not fit with the reason', () => {
    let asked = 0;
    const room = () => {
      asked += 1;
      return 'user alice already runs 1 job(s), the per-user cap';
    };
    expect(decideOffer(facts({ freeSlots: 0, room }))).toEqual({ kind: 'park', reason: 'no free slot' });
    expect(asked).toBe(0);
    expect(decideOffer(facts({ room }))).toEqual({
      kind: 'park',
      reason: 'user alice already runs 1 job(s), the per-user cap',
    });
    expect(asked).toBe(1);
  });
});

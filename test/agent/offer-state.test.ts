import { describe, expect, it } from 'vitest';
import type { Delivery } from '../../src/bus/index.js';
import { IllegalOfferTransition, OfferTable, offerKey, type ActiveJob } from '../../src/agent/offer-state.js';
import { PROTOCOL_VERSION, type JobOffer } from '../../src/protocol/index.js';

function offer(jobId: string, attempt = 1): JobOffer {
  return {
    v: PROTOCOL_VERSION,
    jobId,
    attempt,
    user: 'alice',
    workflow: { name: 'wf', version: 1, digest: 'd' },
    params: {},
    labels: [],
    jobToken: 'x'.repeat(32),
    serverUrl: 'http://127.0.0.1:1',
    limits: {},
    deadline: 0,
    issuedAt: 0,
  };
}

function delivery(deliveryCount = 1): Delivery<unknown> {
  return {
    body: null,
    deliveryCount,
    ack: async () => undefined,
    requeue: async () => undefined,
    deadLetter: async () => undefined,
    onRevoked: () => undefined,
  };
}

function job(jobId: string, held = delivery()): ActiveJob {
  const o = offer(jobId);
  return {
    key: offerKey(o),
    offer: o,
    hold: { kind: 'held', delivery: held },
    seq: 0,
    cancelRequested: false,
    oomKillsBefore: 0,
    receivedAt: 0,
    coldStart: false,
    firstStepLogged: false,
  };
}

describe('agent offer state', () => {
  it('takes a job through loading, running and ended, counting its slot until it ends', () => {
    const table = new OfferTable();
    const j = job('j1');
    table.accept(j);
    expect(table.get(j.key)?.kind).toBe('loading');
    expect(table.jobs).toBe(1);
    table.loaded(j);
    expect(table.get(j.key)?.kind).toBe('running');
    expect(table.release(j)).toBeDefined();
    expect(table.release(j)).toBeUndefined();
    expect(table.end(j)).toBe(true);
    expect(table.end(j)).toBe(false);
    expect(table.get(j.key)).toEqual({ kind: 'ended', awaitingRedelivery: false });
    expect(table.jobs).toBe(0);
  });

  it('refuses an illegal transition, naming both states', () => {
    const table = new OfferTable();
    const j = job('j1');
    table.accept(j);
    expect(() => table.accept(j)).toThrow(IllegalOfferTransition);
    expect(() => table.accept(j)).toThrow('offer j1:1: illegal transition from loading to loading');
    table.loaded(j);
    expect(() => table.loaded(j)).toThrow('from running to running');
    expect(() =>
      table.park(j.key, {
        offer: j.offer,
        delivery: delivery(),
        receivedAt: 0,
        timer: setTimeout(() => undefined, 0),
      }),
    ).toThrow('from running to parked');
  });

  it('unparks only the delivery that was parked', () => {
    const table = new OfferTable();
    const parkedDelivery = delivery();
    const timer = setTimeout(() => undefined, 0);
    table.park('j1:1', { offer: offer('j1'), delivery: parkedDelivery, receivedAt: 0, timer });
    expect(table.parkedOffers).toBe(1);
    expect(table.unpark('j1:1', delivery())).toBeUndefined();
    expect(table.unpark('j1:1', parkedDelivery)?.delivery).toBe(parkedDelivery);
    expect(table.get('j1:1')).toBeUndefined();
    expect(table.parkedOffers).toBe(0);
  });

  it('lists the parked offers alone, in the order they were parked, among running and ended ones', () => {
    const table = new OfferTable();
    for (const id of ['e1', 'e2', 'r1']) {
      const j = job(id);
      table.accept(j);
      if (id !== 'r1') expect(table.end(j)).toBe(true);
    }
    const timer = setTimeout(() => undefined, 0);
    const park = (id: string) =>
      table.park(`${id}:1`, { offer: offer(id), delivery: delivery(), receivedAt: 0, timer });
    park('p2');
    park('p1');
    park('p3');
    expect(table.unpark('p1:1')).toBeDefined();
    expect([...table.parked()].map((entry) => entry.key)).toEqual(['p2:1', 'p3:1']);
    // Accepted once unparked: no longer listed.
    expect(table.unpark('p2:1')).toBeDefined();
    table.accept(job('p2'));
    expect([...table.parked()].map((entry) => entry.key)).toEqual(['p3:1']);
    expect(table.parkedOffers).toBe(1);
  });

  it('settles a redelivery of a job whose delivery the broker took back, holding it while the job loads', () => {
    const table = new OfferTable();
    const first = delivery();
    const j = job('j1', first);
    table.accept(j);
    expect(table.isRedelivery(j.key, 1)).toBe(false);
    expect(table.takenBack(j, delivery())).toBe(false);
    expect(table.takenBack(j, first)).toBe(true);
    expect(j.hold).toEqual({ kind: 'taken-back' });
    expect(table.isRedelivery(j.key, 1)).toBe(true);
    const second = delivery(2);
    expect(table.redelivered(j.key, second)).toBe(j);
    expect(j.hold).toEqual({ kind: 'held', delivery: second });
    table.loaded(j);
    expect(table.release(j)).toBe(second);
  });

  it('remembers that an ended job still awaits its redelivery, and forgets it once it came', () => {
    const table = new OfferTable();
    const first = delivery();
    const j = job('j1', first);
    table.accept(j);
    table.loaded(j);
    expect(table.end(j)).toBe(true);
    // Taken back between the end and the ack.
    expect(table.takenBack(j, first)).toBe(true);
    expect(table.get(j.key)).toEqual({ kind: 'ended', awaitingRedelivery: true });
    expect(table.isRedelivery(j.key, 1)).toBe(true);
    expect(table.redelivered(j.key, delivery(2))).toBeUndefined();
    expect(table.isRedelivery(j.key, 1)).toBe(false);
    expect(table.isRedelivery(j.key, 2)).toBe(true);
  });

  it('forgets a job handed back while loading, so its redelivery is a fresh offer', () => {
    const table = new OfferTable();
    const j = job('j1');
    table.accept(j);
    expect(table.handBack(j)).toBe(true);
    expect(table.get(j.key)).toBeUndefined();
    expect(table.jobs).toBe(0);
    expect(table.isRedelivery(j.key, 2)).toBe(false);
    expect(table.release(j)).toBeDefined();
  });

  it('keeps at most the configured number of ended offers, forgetting the oldest', () => {
    const table = new OfferTable(2);
    const running = job('long');
    table.accept(running);
    for (const id of ['a', 'b', 'c']) {
      const j = job(id);
      table.accept(j);
      table.end(j);
    }
    expect(table.get('a:1')).toBeUndefined();
    expect(table.get('b:1')?.kind).toBe('ended');
    expect(table.get('c:1')?.kind).toBe('ended');
    expect(table.activeJob('long:1')).toBe(running);
  });
});

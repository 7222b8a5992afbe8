import { describe, expect, it } from 'vitest';
import {
  createOfferSigner,
  createOfferVerifier,
  generateSigningKeyPem,
  type JobOffer,
} from '../../src/protocol/index.js';

const offer = (overrides: Partial<JobOffer> = {}): JobOffer => ({
  v: 1,
  jobId: 'job-1',
  attempt: 1,
  user: 'alice',
  workflow: { name: 'w', version: 1, digest: 'd' },
  params: { region: 'EU' },
  labels: [],
  jobToken: 'x'.repeat(32),
  serverUrl: 'http://127.0.0.1:8080',
  limits: {},
  deadline: Date.now() + 60_000,
  issuedAt: Date.now(),
  ...overrides,
});

describe('offer signing', () => {
  const keys = generateSigningKeyPem();
  const signer = createOfferSigner(keys.privateKeyPem);
  const verifier = createOfferVerifier([keys.publicKeyPem]);

  it('verifies an offer signed by the server key', () => {
    expect(verifier.verify(signer.sign(offer())).user).toBe('alice');
  });

  it('refuses a tampered payload', () => {
    const signed = signer.sign(offer());
    const tampered = { ...signed, payload: signed.payload.replace('alice', 'root') };
    expect(() => verifier.verify(tampered)).toThrow(/does not verify/);
  });

  it('refuses an offer signed by another key', () => {
    const forged = createOfferSigner(generateSigningKeyPem().privateKeyPem).sign(offer());
    expect(() => verifier.verify(forged)).toThrow(/unknown key/);
  });

  it('refuses an unsigned or malformed envelope', () => {
    expect(() => verifier.verify({ v: 1, payload: JSON.stringify(offer()) })).toThrow(/not a signed offer/);
    expect(() => verifier.verify('garbage')).toThrow(/not a signed offer/);
  });

  it('refuses an expired offer', () => {
    const signed = signer.sign(offer({ deadline: Date.now() - 1 }));
    expect(() => verifier.verify(signed)).toThrow(/expired/);
  });
});

import { describe, expect, it } from 'vitest';
import {
  createOfferSigner,
  createOfferVerifier,
  generateSigningKeyPem,
  signDaskWorkerOffer,
  verifyDaskWorkerOffer,
  type DaskWorkerOffer,
  type JobOffer,
} from '../../src/protocol/index.js';

const workerOffer = (overrides: Partial<DaskWorkerOffer> = {}): DaskWorkerOffer => ({
  v: 1,
  kind: 'dask-worker',
  jobId: 'job-1',
  attempt: 1,
  step: 'agg',
  index: 2,
  count: 4,
  user: 'alice',
  schedulerAddress: 'tls://10.0.0.12:40123',
  threads: 1,
  memoryBytes: 512 * 1024 * 1024,
  serverUrl: 'http://127.0.0.1:8080',
  workerToken: 'std_' + 'x'.repeat(40),
  deadline: Date.now() + 60_000,
  issuedAt: Date.now(),
  ...overrides,
});

const jobOffer: JobOffer = {
  v: 1,
  jobId: 'job-1',
  attempt: 1,
  user: 'alice',
  workflow: { name: 'w', version: 1, digest: 'd' },
  params: {},
  labels: [],
  jobToken: 'x'.repeat(32),
  serverUrl: 'http://127.0.0.1:8080',
  limits: {},
  deadline: Date.now() + 60_000,
  issuedAt: Date.now(),
};

describe('Dask worker offers', () => {
  const keys = generateSigningKeyPem();
  const signer = createOfferSigner(keys.privateKeyPem);
  const verifier = createOfferVerifier([keys.publicKeyPem]);

  it('verifies a worker offer signed by the server key', () => {
    const offer = workerOffer();
    expect(verifyDaskWorkerOffer(verifier, signDaskWorkerOffer(signer, offer), Date.now())).toEqual(offer);
  });

  it('refuses a worker offer as a job offer and a job offer as a worker offer', () => {
    expect(() => verifier.verify(signDaskWorkerOffer(signer, workerOffer()))).toThrow(
      expect.objectContaining({ code: 'STEWARD_MESSAGE_INVALID' }),
    );
    expect(() => verifyDaskWorkerOffer(verifier, signer.sign(jobOffer), Date.now())).toThrow(
      expect.objectContaining({ code: 'STEWARD_MESSAGE_INVALID' }),
    );
  });

  it('refuses a tampered, a foreign-key and an expired worker offer', () => {
    const signed = signDaskWorkerOffer(signer, workerOffer());
    const tampered = { ...signed, payload: signed.payload.replace('"alice"', '"root"') };
    expect(() => verifyDaskWorkerOffer(verifier, tampered, Date.now())).toThrow(
      expect.objectContaining({ code: 'STEWARD_OFFER_SIGNATURE_INVALID' }),
    );
    const other = createOfferSigner(generateSigningKeyPem().privateKeyPem);
    expect(() =>
      verifyDaskWorkerOffer(verifier, signDaskWorkerOffer(other, workerOffer()), Date.now()),
    ).toThrow(expect.objectContaining({ code: 'STEWARD_OFFER_SIGNATURE_INVALID' }));
    const expired = signDaskWorkerOffer(signer, workerOffer({ deadline: Date.now() - 1 }));
    expect(() => verifyDaskWorkerOffer(verifier, expired, Date.now())).toThrow(
      expect.objectContaining({ code: 'STEWARD_OFFER_EXPIRED' }),
    );
  });

  it('refuses a scheduler address that is not tls://host:port', () => {
    expect(() =>
      signDaskWorkerOffer(signer, workerOffer({ schedulerAddress: 'tcp://10.0.0.12:1' })),
    ).toThrow();
  });
});

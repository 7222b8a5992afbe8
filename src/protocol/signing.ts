import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign,
  verify,
  type KeyObject,
} from 'node:crypto';
import { createHash } from 'node:crypto';
import { StewardError } from './errors.js';
import { DaskWorkerOffer } from './dask.js';
import { JobOffer, SignedOffer, PROTOCOL_VERSION } from './messages.js';

/**
 * Offers are signed with the server's Ed25519 key; agents hold only the public key, so write access to the
 * bus alone does not let anyone run code as another user.
 */
export interface OfferSigner {
  readonly keyId: string;
  sign(offer: JobOffer): SignedOffer;
  /** Signs any other offer's exact JSON text (a Dask worker offer: see dask.ts), in the same envelope. */
  signText(payload: string): SignedOffer;
}

export interface OfferVerifier {
  /** Returns the offer or throws STEWARD_OFFER_SIGNATURE_INVALID / STEWARD_MESSAGE_INVALID / STEWARD_OFFER_EXPIRED. */
  verify(signed: unknown, now?: number): JobOffer;
  /** Checks the envelope's signature only and returns its payload text (the caller parses it). */
  verifyText(signed: unknown): string;
}

export function generateSigningKeyPem(): { privateKeyPem: string; publicKeyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

export function keyIdOf(publicKey: KeyObject): string {
  const der = publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('hex').slice(0, 16);
}

/**
 * The fingerprint of a public key (PEM) as agents report it in heartbeats and `steward cluster check`
 * compares it: the key id that signed offers carry.
 */
export function publicKeyFingerprint(publicKeyPem: string): string {
  return keyIdOf(createPublicKey(publicKeyPem));
}

export function createOfferSigner(privateKeyPem: string): OfferSigner {
  const privateKey = createPrivateKey(privateKeyPem);
  const keyId = keyIdOf(createPublicKey(privateKey));
  return {
    keyId,
    sign(offer) {
      return this.signText(JSON.stringify(JobOffer.parse(offer)));
    },
    signText(payload) {
      const signature = sign(null, Buffer.from(payload), privateKey).toString('base64');
      return { v: PROTOCOL_VERSION, payload, signature, keyId };
    },
  };
}

export function createOfferVerifier(publicKeyPems: readonly string[]): OfferVerifier {
  const keys = new Map(
    publicKeyPems.map((pem) => {
      const key = createPublicKey(pem);
      return [keyIdOf(key), key] as const;
    }),
  );
  return {
    verifyText(raw) {
      const envelope = SignedOffer.safeParse(raw);
      if (!envelope.success) {
        throw new StewardError('STEWARD_OFFER_SIGNATURE_INVALID', 'offer is not a signed offer envelope');
      }
      const key = keys.get(envelope.data.keyId);
      if (!key)
        throw new StewardError(
          'STEWARD_OFFER_SIGNATURE_INVALID',
          `offer signed with unknown key ${envelope.data.keyId}`,
        );
      const ok = verify(
        null,
        Buffer.from(envelope.data.payload),
        key,
        Buffer.from(envelope.data.signature, 'base64'),
      );
      if (!ok) throw new StewardError('STEWARD_OFFER_SIGNATURE_INVALID', 'offer signature does not verify');
      return envelope.data.payload;
    },
    verify(raw, now = Date.now()) {
      const payload = this.verifyText(raw);
      let json: unknown;
      try {
        json = JSON.parse(payload);
      } catch {
        throw new StewardError('STEWARD_MESSAGE_INVALID', 'signed offer payload is not JSON');
      }
      const offer = JobOffer.safeParse(json);
      if (!offer.success)
        throw new StewardError(
          'STEWARD_MESSAGE_INVALID',
          `signed offer payload invalid: ${offer.error.issues[0]?.message ?? ''}`,
        );
      if (offer.data.deadline < now) {
        throw new StewardError(
          'STEWARD_OFFER_EXPIRED',
          `offer for job ${offer.data.jobId} expired at ${new Date(offer.data.deadline).toISOString()}`,
        );
      }
      return offer.data;
    },
  };
}

// Dask worker offers (dask.ts): the same key and envelope, a payload of their own.

export function signDaskWorkerOffer(signer: OfferSigner, offer: DaskWorkerOffer): SignedOffer {
  return signer.signText(JSON.stringify(DaskWorkerOffer.parse(offer)));
}

/**
 * The worker offer in a signed envelope, or STEWARD_OFFER_SIGNATURE_INVALID / STEWARD_MESSAGE_INVALID /
 * STEWARD_OFFER_EXPIRED.
 */
export function verifyDaskWorkerOffer(verifier: OfferVerifier, raw: unknown, now: number): DaskWorkerOffer {
  const payload = verifier.verifyText(raw);
  let json: unknown;
  try {
    json = JSON.parse(payload);
  } catch {
    throw new StewardError('STEWARD_MESSAGE_INVALID', 'signed worker offer payload is not JSON');
  }
  const offer = DaskWorkerOffer.safeParse(json);
  if (!offer.success)
    throw new StewardError(
      'STEWARD_MESSAGE_INVALID',
      `signed worker offer invalid: ${offer.error.issues[0]?.path.join('.') ?? ''} ${offer.error.issues[0]?.message ?? ''}`,
    );
  if (offer.data.deadline < now)
    throw new StewardError(
      'STEWARD_OFFER_EXPIRED',
      `worker offer for job ${offer.data.jobId} expired at ${new Date(offer.data.deadline).toISOString()}`,
    );
  return offer.data;
}

/**
 * Webhook signatures: HMAC-SHA256 over `<timestamp>.<body>`, sent as `Steward-Signature: t=…,v1=…`. Kept
 * apart from the notification schemas because it needs node:crypto, and the portal's types import those.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

/** The header carrying the signature: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`. */
export const SIGNATURE_HEADER = 'Steward-Signature';
/** The header carrying the delivery's id: the same on every retry of one delivery, for de-duplication. */
export const DELIVERY_HEADER = 'Steward-Delivery';
/** The header naming the message's type (`job.ended`, `notification.test`). */
export const EVENT_HEADER = 'Steward-Event';

/** `v1` of the signature: hex HMAC-SHA256 with the rule's secret over `<timestamp>.<body>`. */
export function webhookSignature(secret: string, timestamp: number, body: string): string {
  return createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
}

/** The `Steward-Signature` header's value for `body` sent at `timestamp` (unix seconds). */
export function signatureHeader(secret: string, timestamp: number, body: string): string {
  return `t=${timestamp},v1=${webhookSignature(secret, timestamp, body)}`;
}

/**
 * What a receiver does (and the tests): checks the header against the body as received, in constant time,
 * and that the timestamp is within `toleranceSeconds` of `now` (default 5 minutes) to refuse replays.
 */
export function verifySignatureHeader(
  secret: string,
  header: string,
  body: string,
  nowSeconds: number = Math.floor(Date.now() / 1000),
  toleranceSeconds = 300,
): boolean {
  const parts = new Map(
    header.split(',').map((part) => {
      const at = part.indexOf('=');
      return [part.slice(0, at).trim(), part.slice(at + 1).trim()] as const;
    }),
  );
  const timestamp = Number(parts.get('t'));
  const given = parts.get('v1');
  if (!Number.isInteger(timestamp) || given === undefined || !/^[0-9a-f]{64}$/.test(given)) return false;
  if (Math.abs(nowSeconds - timestamp) > toleranceSeconds) return false;
  const expected = Buffer.from(webhookSignature(secret, timestamp, body), 'hex');
  return timingSafeEqual(expected, Buffer.from(given, 'hex'));
}

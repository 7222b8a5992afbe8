/**
 * Sending a webhook: one signed JSON POST. Redirects are not followed (a 3xx is a failure naming the
 * target, so a rule never ends up posting to a host its owner did not name), the whole exchange has a time
 * limit, and at most `MAX_RESPONSE_BYTES` of the answer are read (for the error message).
 */
import {
  DELIVERY_HEADER,
  EVENT_HEADER,
  SIGNATURE_HEADER,
  signatureHeader,
  type NotificationMessage,
} from '../../protocol/index.js';

/** How much of a receiver's answer is read: enough for an error message. */
const MAX_RESPONSE_BYTES = 4096;
/** How much of it goes into the delivery's recorded error. */
const MAX_ERROR_TEXT = 200;

export type SendResult = { ok: true } | { ok: false; error: string };

export interface WebhookRequest {
  url: string;
  secret: string;
  message: NotificationMessage;
  timeoutMs: number;
  userAgent: string;
  /** Aborts the request (the server is stopping). */
  signal?: AbortSignal;
  /** Unix seconds for the signature. Default: now. */
  timestamp?: number;
}

export async function postWebhook(request: WebhookRequest): Promise<SendResult> {
  const body = JSON.stringify(request.message);
  const timestamp = request.timestamp ?? Math.floor(Date.now() / 1000);
  const timeout = AbortSignal.timeout(request.timeoutMs);
  const signal = request.signal ? AbortSignal.any([timeout, request.signal]) : timeout;
  let response: Response;
  try {
    response = await fetch(request.url, {
      method: 'POST',
      redirect: 'manual',
      signal,
      headers: {
        'content-type': 'application/json',
        'user-agent': request.userAgent,
        [SIGNATURE_HEADER]: signatureHeader(request.secret, timestamp, body),
        [DELIVERY_HEADER]: request.message.deliveryId,
        [EVENT_HEADER]: request.message.type,
      },
      body,
    });
  } catch (error) {
    return { ok: false, error: describeFailure(error, timeout, request.timeoutMs) };
  }
  let text: string;
  try {
    text = await readBounded(response);
  } catch (error) {
    return { ok: false, error: describeFailure(error, timeout, request.timeoutMs) };
  }
  if (response.status >= 200 && response.status < 300) return { ok: true };
  if (response.status >= 300 && response.status < 400) {
    const location = response.headers.get('location');
    return {
      ok: false,
      error: `HTTP ${response.status}: redirects are not followed${location ? ` (to ${clean(location)}); set the rule's URL to the final one` : ''}`,
    };
  }
  return { ok: false, error: `HTTP ${response.status}${text ? `: ${clean(text)}` : ''}` };
}

/** The start of the answer's body; the rest is dropped unread (leaving the loop cancels the stream). */
async function readBounded(response: Response): Promise<string> {
  if (!response.body) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
    chunks.push(chunk);
    size += chunk.byteLength;
    if (size >= MAX_RESPONSE_BYTES) break;
  }
  return Buffer.concat(chunks).subarray(0, MAX_RESPONSE_BYTES).toString('utf8');
}

function describeFailure(error: unknown, timeout: AbortSignal, timeoutMs: number): string {
  if (timeout.aborted) return `no answer within ${timeoutMs} ms`;
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  const detail = cause?.code ?? cause?.message ?? (error instanceof Error ? error.message : String(error));
  return `request failed: ${clean(detail)}`;
}

/** One line of printable text, cut to `MAX_ERROR_TEXT` characters. */
function clean(text: string): string {
  const line = text.replace(/[\p{Cc}\s]+/gu, ' ').trim();
  return line.length <= MAX_ERROR_TEXT ? line : `${line.slice(0, MAX_ERROR_TEXT)}…`;
}

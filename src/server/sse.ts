/** Server-Sent Events responses: the one way a route takes its response over for a stream. */
import type { ServerResponse } from 'node:http';
import type { FastifyReply } from 'fastify';

/**
 * Takes the response over from Fastify and sends the stream's headers (the security headers are already on
 * the raw response: the portal's onRequest hook sets them). Returns the raw response to write events to.
 */
export function openEventStream(reply: FastifyReply): ServerResponse {
  reply.hijack();
  reply.raw.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  return reply.raw;
}

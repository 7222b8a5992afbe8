/** The handler a route of `apiRoutes` gets, typed from its entry. */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import type { ApiRoutes, RouteName } from '../../protocol/index.js';
import type { JobRecord } from '../../store/index.js';
import type { Principal } from '../auth.js';

export type Input<R, K extends 'params' | 'query' | 'body'> = R extends {
  [P in K]: infer S extends z.ZodType;
}
  ? z.output<S>
  : undefined;

export interface HandlerContext<R> {
  params: Input<R, 'params'>;
  query: Input<R, 'query'>;
  body: Input<R, 'body'>;
  /** Set on `user` and `admin` routes. */
  principal: R extends { auth: 'user' | 'admin' } ? Principal : undefined;
  /** Set on `job` routes: the job the token belongs to. */
  job: R extends { auth: 'job' } ? JobRecord : undefined;
  /** The raw body for routes without a body schema (streamed uploads). */
  rawBody: unknown;
  /** Client address, for the audit log. */
  source: string;
  request: FastifyRequest;
  reply: FastifyReply;
}

/** A handler returns the JSON body, or the reply when it sent the response itself (streams, SSE). */
export type Handler<R> = (ctx: HandlerContext<R>) => Promise<unknown>;
export type Handlers = { [K in RouteName]: Handler<ApiRoutes[K]> };

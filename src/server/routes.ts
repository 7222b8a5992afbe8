/**
 * Every REST route, registered from `apiRoutes` (src/protocol/api.ts): the table decides method, path,
 * auth and schemas; this file only supplies a handler per entry. The `Handlers` type makes a missing
 * handler a compile error, and a test checks it at run time too.
 */
import type { FastifyInstance } from 'fastify';
import { apiRoutes, StewardError, type ApiRoute, type RouteName } from '../protocol/index.js';
import type { JobRecord } from '../store/index.js';
import type { Principal } from './auth.js';
import type { ServerContext } from './context.js';
import { adminHandlers } from './handlers/admin.js';
import { clustersHandlers } from './handlers/clusters.js';
import { daskHandlers } from './handlers/dask.js';
import { execHandlers } from './handlers/exec.js';
import { identityHandlers } from './handlers/identity.js';
import { jobsHandlers } from './handlers/jobs.js';
import { notificationsHandlers } from './handlers/notifications.js';
import { retentionHandlers } from './handlers/retention.js';
import { schedulesHandlers } from './handlers/schedules.js';
import type { Handler, HandlerContext, Handlers } from './handlers/types.js';
import { workflowsHandlers } from './handlers/workflows.js';
import { parseInput } from './validation.js';

export type { HandlerContext, Handlers } from './handlers/types.js';

/** One handler per route, by area (`handlers/`); the `Handlers` type makes a missing one a compile error. */
export function buildHandlers(ctx: ServerContext): Handlers {
  return {
    ...identityHandlers(ctx),
    ...workflowsHandlers(ctx),
    ...jobsHandlers(ctx),
    ...notificationsHandlers(ctx),
    ...schedulesHandlers(ctx),
    ...adminHandlers(ctx),
    ...clustersHandlers(ctx),
    ...retentionHandlers(ctx),
    ...execHandlers(ctx),
    ...daskHandlers(ctx),
  };
}

/** Registers every route of `apiRoutes` with its auth check, input validation and status. */
export function registerRoutes(app: FastifyInstance, ctx: ServerContext, handlers: Handlers): void {
  for (const [name, route] of Object.entries(apiRoutes) as [RouteName, ApiRoute][]) {
    const handler = handlers[name] as Handler<ApiRoute> | undefined;
    if (!handler) throw new Error(`no handler for route ${name}`);
    app.route({
      method: route.method,
      url: route.path,
      handler: async (request, reply) => {
        const source = request.ip;
        let principal: Principal | undefined;
        let job: JobRecord | undefined;
        if (route.auth === 'user' || route.auth === 'admin') {
          principal = await ctx.sessions.authenticateRequest(request, source);
          if (route.auth === 'admin' && principal.role !== 'admin') {
            await ctx.audit.record({
              actor: principal.user,
              action: 'forbidden',
              target: `${route.method} ${request.url}`,
              source,
            });
            throw new StewardError(
              'STEWARD_FORBIDDEN',
              'this needs the admin role; ask an admin to do it, or to grant you the role (`steward user role NAME admin`)',
            );
          }
        }
        const params: unknown = route.params ? parseInput(route.params, request.params, 'params') : undefined;
        if (route.auth === 'job') {
          const jobId = (params as { id?: unknown } | undefined)?.id;
          if (typeof jobId !== 'string') throw new Error(`job route ${name} has no :id parameter`);
          job = await ctx.jobs.authenticateJob(request.headers.authorization, jobId);
        }
        const query: unknown = route.query ? parseInput(route.query, request.query, 'query') : undefined;
        const body: unknown = route.body ? parseInput(route.body, request.body, 'body') : undefined;
        const result = await handler({
          params,
          query,
          body,
          principal,
          job,
          rawBody: route.body ? undefined : request.body,
          source,
          request,
          reply,
        } as HandlerContext<ApiRoute>);
        if (result === reply || reply.sent) return reply;
        if (route.status === 204 || result === undefined) return reply.code(route.status ?? 204).send();
        return reply.code(route.status ?? 200).send(result);
      },
    });
  }
}

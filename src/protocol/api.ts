/**
 * REST API schemas: the single source for request validation (server), the OpenAPI document and the CLI's
 * types. Paths are listed in `apiRoutes` so the OpenAPI document is generated, never hand-written. Each area
 * keeps its schemas and routes in `api/<area>.ts`; this module joins the route table and re-exports them.
 */
import { adminRoutes, systemRoutes } from './api/admin.js';
import { clusterRoutes } from './api/clusters.js';
import { daskRoutes } from './api/dask.js';
import { execRoutes } from './api/exec.js';
import { identityRoutes } from './api/identity.js';
import { jobRoutes } from './api/jobs.js';
import { notificationRoutes } from './api/notifications.js';
import { retentionRoutes } from './api/retention.js';
import { scheduleRoutes } from './api/schedules.js';
import { spaceRoutes } from './api/spaces.js';
import { workflowRoutes } from './api/workflows.js';

export * from './api/admin.js';
export * from './api/clusters.js';
export * from './api/common.js';
export * from './api/dask.js';
export * from './api/identity.js';
export * from './api/jobs.js';
export * from './api/notifications.js';
export * from './api/retention.js';
export type { ApiRoute } from './api/route.js';
export * from './api/schedules.js';
export * from './api/spaces.js';
export * from './api/workflows.js';

/** Every public REST route. The server registers handlers against this list; a test checks none is missing. */
export const apiRoutes = {
  ...systemRoutes,
  ...identityRoutes,
  ...workflowRoutes,
  ...spaceRoutes,
  ...jobRoutes,
  ...notificationRoutes,
  ...scheduleRoutes,
  ...adminRoutes,
  ...clusterRoutes,
  ...retentionRoutes,
  ...execRoutes,
  ...daskRoutes,
};

export type ApiRoutes = typeof apiRoutes;
export type RouteName = keyof ApiRoutes;

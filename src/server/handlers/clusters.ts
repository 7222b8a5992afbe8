/** Route handlers: clusters (admins only; every change audited by `ClusterService`). */
import type { ServerContext } from '../context.js';
import type { Handlers } from './types.js';

export function clustersHandlers(ctx: ServerContext) {
  const { clusters } = ctx;
  return {
    listClusters: async () => ({ clusters: await clusters.service.list() }),

    addCluster: ({ principal, body, source }) => clusters.service.add(principal, body, source),

    clusterAgentConfig: async ({ params }) => ({ yaml: await clusters.service.agentConfig(params.name) }),

    checkCluster: ({ params }) => clusters.service.check(params.name),

    attachCluster: ({ principal, params, body, source }) =>
      clusters.service.attach(principal, params.name, body.force, source),

    detachCluster: ({ principal, params, source }) => clusters.service.detach(principal, params.name, source),

    removeCluster: async ({ principal, params, source }) => {
      await clusters.service.remove(principal, params.name, source);
      return { name: params.name, removed: true as const };
    },
  } satisfies Partial<Handlers>;
}

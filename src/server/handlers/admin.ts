/** Route handlers: the audit log and the agents. */
import { parseIsoTime } from '../../protocol/index.js';
import type { ServerContext } from '../context.js';
import { auditView, iso } from '../views.js';
import { controlAgent } from './support.js';
import type { Handlers } from './types.js';

export function adminHandlers(ctx: ServerContext) {
  const { store } = ctx;

  return {
    listAudit: async ({ query }) => {
      const page = await store.listings.audit({
        limit: query.limit,
        ...(query.actor !== undefined ? { actor: query.actor } : {}),
        ...(query.action !== undefined ? { action: query.action } : {}),
        ...(query.target !== undefined ? { target: query.target } : {}),
        ...(query.before !== undefined ? { before: query.before } : {}),
        ...(query.since !== undefined ? { since: parseIsoTime(query.since) } : {}),
        ...(query.until !== undefined ? { until: parseIsoTime(query.until) } : {}),
      });
      return { entries: page.items.map(auditView), next: page.next ?? null };
    },

    listAgents: async ({ principal }) => {
      // Agents heartbeat every few seconds; one silent for five minutes is not listed at all, and one silent
      // past its lease is offline: its last heartbeat's executors are gone or about to be.
      const now = Date.now();
      const agents = await store.listAgents(now - 5 * 60_000);
      // Other users' executors would tell a non-admin who works here, their uids and pids: admins only.
      const visible = (executor: { user: string }): boolean =>
        principal.role === 'admin' || executor.user === principal.user;
      return {
        agents: agents.map((a) => {
          const offline = now - a.lastSeen > ctx.config.agentLeaseMs;
          return {
            id: a.id,
            labels: a.labels,
            isolation: a.isolation,
            lastSeen: iso(a.lastSeen),
            capacity: offline ? { slots: a.capacity.slots, free: 0 } : a.capacity,
            executors: offline ? [] : a.executors.filter(visible),
            draining: a.draining,
            cluster: a.cluster,
            state: offline ? ('offline' as const) : a.draining ? ('draining' as const) : ('active' as const),
          };
        }),
      };
    },

    drainAgent: ({ principal, params, source }) => controlAgent(ctx, principal, params.id, 'drain', source),

    resumeAgent: ({ principal, params, source }) => controlAgent(ctx, principal, params.id, 'resume', source),
  } satisfies Partial<Handlers>;
}

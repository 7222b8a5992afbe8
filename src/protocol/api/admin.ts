/** System routes, the audit log and the agents. */
import { z } from 'zod';
import { Health, IsoTime } from './common.js';
import type { ApiRoute } from './route.js';
import { AgentId } from '../messages.js';

export const AuditEntry = z.object({
  id: z.number().int(),
  time: z.string(),
  actor: z.string(),
  action: z.string(),
  target: z.string().nullable(),
  source: z.string().nullable(),
  detail: z.record(z.string(), z.unknown()).nullable(),
});
export const AuditQuery = z
  .object({
    actor: z.string().max(256).optional(),
    action: z.string().max(100).optional(),
    /** Exactly this target (a job id, a user name, `METHOD /path` of a refusal…). */
    target: z.string().max(512).optional(),
    /** At or after this time. */
    since: IsoTime.optional(),
    /** Before this time. */
    until: IsoTime.optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(100),
    /** The `next` of the previous page (older entries follow). */
    before: z.coerce.number().int().min(1).optional(),
  })
  .strict();
export const AuditList = z.object({
  /** Newest first. */
  entries: z.array(AuditEntry),
  /** Pass as `before` for the following (older) page; null on the last page. */
  next: z.number().int().nullable(),
});

export const AgentInfo = z.object({
  id: z.string(),
  labels: z.array(z.string()),
  isolation: z.enum(['per-user', 'single-user']),
  /** Drained by an administrator: takes no new jobs, finishes those it has (as of its last heartbeat). */
  draining: z.boolean(),
  /** The cluster whose bus its heartbeats come through. */
  cluster: z.string(),
  /**
   * `offline`: no heartbeat within the server's agent lease (`server.agentLease`), so it runs nothing the
   * server counts on and its executors are not listed; else `draining` or `active`. (Servers older than
   * this field do not send it: read `draining`.)
   */
  state: z.enum(['active', 'draining', 'offline']).optional(),
  lastSeen: z.string(),
  capacity: z.object({ slots: z.number().int(), free: z.number().int() }),
  executors: z.array(
    z.object({
      user: z.string(),
      uid: z.number().int(),
      pid: z.number().int(),
      jobs: z.number().int(),
      /** When the executor became idle, as epoch milliseconds (null while it runs a job). Not a duration. */
      idleSinceMs: z.number().int().nullable(),
      rssBytes: z.number().int().nullable(),
    }),
  ),
});

const AgentParams = z.object({ id: AgentId }).strict();
/** What a drain or resume sent: the agent applies it when the message reaches it (see `draining`). */
const AgentControlResponse = z.object({ id: z.string(), action: z.enum(['drain', 'resume']) });

/** Liveness and the API's own description. */
export const systemRoutes = {
  health: {
    method: 'GET',
    path: '/api/health',
    summary: 'Liveness check',
    tag: 'system',
    auth: 'none',
    response: Health,
  },
  openapi: {
    method: 'GET',
    path: '/api/openapi.json',
    summary: 'This OpenAPI document',
    tag: 'system',
    auth: 'none',
    responseMediaType: 'application/json',
  },
} as const satisfies Record<string, ApiRoute>;

/** The audit log and agent control. */
export const adminRoutes = {
  listAudit: {
    method: 'GET',
    path: '/api/audit',
    summary: 'Audit log (admins)',
    tag: 'audit',
    auth: 'admin',
    query: AuditQuery,
    response: AuditList,
  },
  listAgents: {
    method: 'GET',
    path: '/api/agents',
    summary: 'Live agents from their heartbeats; non-admins see only their own executors',
    tag: 'agents',
    auth: 'user',
    response: z.object({ agents: z.array(AgentInfo) }),
  },
  drainAgent: {
    method: 'POST',
    path: '/api/agents/:id/drain',
    summary:
      'Drain an agent (admins): it takes no new jobs and hands back offers it parked; jobs it has run to their end',
    tag: 'agents',
    auth: 'admin',
    params: AgentParams,
    response: AgentControlResponse,
    status: 202,
  },
  resumeAgent: {
    method: 'POST',
    path: '/api/agents/:id/resume',
    summary: 'Let a drained agent take jobs again (admins)',
    tag: 'agents',
    auth: 'admin',
    params: AgentParams,
    response: AgentControlResponse,
    status: 202,
  },
  // Executor-facing routes: a job-scoped token, valid only while its job attempt is live.
} as const satisfies Record<string, ApiRoute>;

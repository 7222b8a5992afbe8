/**
 * Every REST route, registered from `apiRoutes` (src/protocol/api.ts): the table decides method, path,
 * auth and schemas; this file only supplies a handler per entry. The `Handlers` type makes a missing
 * handler a compile error, and a test checks it at run time too.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import {
  apiRoutes,
  isTerminal,
  parseIsoTime,
  PROTOCOL_VERSION,
  StewardError,
  type ApiRoute,
  type ApiRoutes,
  type JobDetail,
  type RouteName,
} from '../protocol/index.js';
import type { JobDetailRecord, JobRecord } from '../store/index.js';
import type { Principal } from './auth.js';
import type { ServerContext } from './context.js';
import { listJobPage, streamJobList } from './job-list.js';
import { contentDisposition } from './results.js';
import { rerunJob } from './rerun.js';
import { parseInput } from './validation.js';
import {
  auditView,
  groupView,
  iso,
  jobDetailView,
  jobInputView,
  jobView,
  resultView,
  spaceMemberView,
  spaceView,
  stepView,
  tokenView,
  uploadView,
  userView,
  workflowDetailView,
  workflowVersionView,
} from './views.js';

type Input<R, K extends 'params' | 'query' | 'body'> = R extends { [P in K]: infer S extends z.ZodType }
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
type Handler<R> = (ctx: HandlerContext<R>) => Promise<unknown>;
export type Handlers = { [K in RouteName]: Handler<ApiRoutes[K]> };

const KEEPALIVE_MS = 15_000;

export function buildHandlers(ctx: ServerContext): Handlers {
  const { store, auth, jobs, workflows, results, spaces } = ctx;

  async function listSpaceWorkflows(principal: Principal, space: string) {
    await spaces.require(principal, space, 'view');
    return {
      workflows: (await store.listWorkflows(space)).map((w) => ({
        space: w.space,
        name: w.name,
        latestVersion: w.latestVersion,
        description: w.description,
        updatedAt: iso(w.updatedAt),
        updatedBy: w.updatedBy,
      })),
    };
  }

  async function ownJob(principal: Principal, id: string, source: string): Promise<JobRecord> {
    return jobs.visibleJob(principal, id, source);
  }

  return {
    health: async () => ({ status: 'ok', version: ctx.version, time: new Date().toISOString() }),

    openapi: async () => ctx.openApiDocument(),

    login: async ({ body, source }) => {
      const session = await auth.login(body.user, body.password, source);
      return {
        token: session.token,
        user: session.user,
        role: session.role,
        expiresAt: iso(session.expiresAt),
      };
    },

    createSession: async ({ body, source, request, reply }) =>
      ctx.sessions.signIn(request, reply, body, source),

    getSession: async ({ source, request, reply }) => ctx.sessions.current(request, reply, source),

    deleteSession: async ({ source, request, reply }) => {
      await ctx.sessions.signOut(request, reply, source);
      return undefined;
    },

    me: async ({ principal }) => {
      const [user, token] = await Promise.all([
        store.getUser(principal.user),
        store.getToken(principal.tokenId),
      ]);
      return {
        user: principal.user,
        role: principal.role,
        ...(user ? { source: user.source } : {}),
        ...(token
          ? { token: { id: token.id, kind: token.kind, name: token.name, expiresAt: iso(token.expiresAt) } }
          : {}),
      };
    },

    createToken: async ({ principal, body, source }) => {
      const { token, record } = await auth.createApiToken(principal, body.name, body.expiresInDays, source);
      return { ...tokenView(record), token };
    },

    listTokens: async ({ principal, query, source }) => {
      const user = query.user ?? principal.user;
      if (user !== principal.user && principal.role !== 'admin') {
        await ctx.audit.record({
          actor: principal.user,
          action: 'forbidden',
          target: `tokens of ${user}`,
          source,
        });
        throw new StewardError(
          'STEWARD_FORBIDDEN',
          "only admins can list another user's tokens; an admin grants the admin role (`steward user role NAME admin`)",
        );
      }
      return { tokens: (await store.listTokens(user)).map(tokenView) };
    },

    revokeToken: async ({ principal, params, source }) => {
      await auth.revokeApiToken(principal, params.id, source);
      return undefined;
    },

    createUser: async ({ principal, body, source }) => {
      await auth.createUser(principal, body, source);
      const user = await store.getUser(body.name);
      return userView(user!);
    },

    listUsers: async ({ query }) => ({
      users: (await store.listUsers())
        .filter((user) => query.deleted === 'true' || user.deletedAt === null)
        .map(userView),
    }),

    disableUser: async ({ principal, params, source }) => {
      const { user, canceledJobs } = await ctx.users.disable(principal, params.name, source);
      return { ...userView(user), canceledJobs };
    },

    enableUser: async ({ principal, params, source }) =>
      userView(await ctx.users.enable(principal, params.name, source)),

    setUserRole: async ({ principal, params, body, source }) =>
      userView(await ctx.users.setRole(principal, params.name, body.role, source)),

    setUserPassword: async ({ principal, params, body, source }) => {
      await auth.changePassword(principal, params.name, body, source);
      return undefined;
    },

    deleteUser: async ({ principal, params, source }) => {
      await ctx.users.delete(principal, params.name, source);
      return undefined;
    },

    pushWorkflow: async ({ principal, body, source }) =>
      workflowVersionView(await workflows.push(principal, body, source)),

    listWorkflows: async ({ principal }) =>
      listSpaceWorkflows(principal, (await spaces.ownPersonal(principal)).name),

    showWorkflow: async ({ principal, params }) =>
      workflowDetailView(await workflows.resolve(principal, { space: principal.user, name: params.name })),

    showWorkflowVersion: async ({ principal, params }) =>
      workflowDetailView(
        await workflows.resolve(principal, {
          space: principal.user,
          name: params.name,
          version: params.version,
        }),
      ),

    listWorkflowVersions: async ({ principal, params }) => ({
      versions: (await workflows.versions(principal, { space: principal.user, name: params.name })).map(
        workflowVersionView,
      ),
    }),

    deleteWorkflow: async ({ principal, params, source }) =>
      workflows.delete(principal, { space: principal.user, name: params.name }, source),

    createSpace: async ({ principal, body, source }) =>
      spaceView(await spaces.createShared(principal, body.name, body.description, source), null),

    listSpaces: async ({ principal }) => ({
      spaces: (await spaces.visible(principal)).map(({ space, role }) => spaceView(space, role)),
    }),

    showSpace: async ({ principal, params }) => {
      const { space, role } = await spaces.require(principal, params.space, 'view');
      return {
        ...spaceView(space, role),
        members: (await store.spaces.listMembers(space.name)).map(spaceMemberView),
        workflows: await store.countWorkflows(space.name),
      };
    },

    deleteSpace: async ({ principal, params, source }) => {
      await spaces.deleteShared(principal, params.space, source);
      return undefined;
    },

    setSpaceMember: async ({ principal, params, body, source }) =>
      spaceMemberView(await spaces.setMember(principal, params.space, body, source)),

    removeSpaceMember: async ({ principal, params, query, source }) => {
      await spaces.removeMember(principal, params.space, query, source);
      return undefined;
    },

    pushSpaceWorkflow: async ({ principal, params, body, source }) =>
      workflowVersionView(await workflows.push(principal, body, source, params.space)),

    listSpaceWorkflows: async ({ principal, params }) => listSpaceWorkflows(principal, params.space),

    showSpaceWorkflow: async ({ principal, params }) =>
      workflowDetailView(await workflows.resolve(principal, { space: params.space, name: params.name })),

    listSpaceWorkflowVersions: async ({ principal, params }) => ({
      versions: (await workflows.versions(principal, { space: params.space, name: params.name })).map(
        workflowVersionView,
      ),
    }),

    showSpaceWorkflowVersion: async ({ principal, params }) =>
      workflowDetailView(
        await workflows.resolve(principal, {
          space: params.space,
          name: params.name,
          version: params.version,
        }),
      ),

    deleteSpaceWorkflow: async ({ principal, params, source }) =>
      workflows.delete(principal, { space: params.space, name: params.name }, source),

    createGroup: async ({ principal, body, source }) =>
      groupView(await spaces.createGroup(principal, body.name, body.description, source)),

    listGroups: async () => ({ groups: (await store.spaces.listGroups()).map(groupView) }),

    addGroupMember: async ({ principal, params, source }) =>
      groupView(await spaces.addGroupMember(principal, params.group, params.user, source)),

    removeGroupMember: async ({ principal, params, source }) =>
      groupView(await spaces.removeGroupMember(principal, params.group, params.user, source)),

    submitJob: async ({ principal, body, source }) => jobView(await jobs.submit(principal, body, source)),

    listJobs: async ({ principal, query }) => listJobPage(ctx, principal, query),

    jobStream: async ({ principal, request, reply }) => streamJobList(ctx, principal, request, reply),

    rerunJob: async ({ principal, params, source }) =>
      jobView(await rerunJob(ctx, principal, params.id, source)),

    showJob: async ({ principal, params, source }) => {
      const job = await ownJob(principal, params.id, source);
      return readJobDetailView(ctx, job.id);
    },

    jobEvents: async ({ principal, params, source, request, reply }) => {
      const job = await ownJob(principal, params.id, source);
      return streamJobEvents(ctx, job, request, reply);
    },

    jobLogs: async ({ principal, params, query, source }) => {
      const job = await ownJob(principal, params.id, source);
      return { jobId: job.id, logs: await results.listLogs(job.id, query.maxBytes) };
    },

    jobLog: async ({ principal, params, query, source, reply }) => {
      const job = await ownJob(principal, params.id, source);
      const slice = await results.logSlice(job.id, params.step, params.stream, query);
      reply
        .header('content-type', 'text/plain; charset=utf-8')
        .header('content-length', String(slice.end - slice.start))
        .header('x-steward-log-size', String(slice.size))
        .header('x-steward-log-offset', String(slice.start));
      // Streamed from disk in 64 KiB pieces: a reader costs no more memory however large the log.
      if (slice.end === slice.start) {
        await slice.handle.close();
        return reply.send('');
      }
      return reply.send(slice.handle.createReadStream({ start: slice.start, end: slice.end - 1 }));
    },

    jobInput: async ({ principal, params, source, reply }) => {
      const job = await ownJob(principal, params.id, source);
      const { file, input } = await ctx.uploads.locateInput(job.id, params.param);
      const info = await stat(file).catch(() => undefined);
      if (!info)
        throw new StewardError(
          'STEWARD_NOT_FOUND',
          `input ${params.param} of job ${job.id} is missing on disk`,
        );
      await ctx.audit.record({
        actor: principal.user,
        action: 'input.download',
        target: `${job.id}/${params.param}`,
        source,
        detail: { size: info.size },
      });
      reply
        .header('content-type', 'application/octet-stream')
        .header('content-length', String(info.size))
        .header('content-disposition', contentDisposition(input.name));
      return reply.send(createReadStream(file));
    },

    createUpload: async ({ principal, query, rawBody, request, source }) => {
      const upload = await ctx.uploads.create(principal.user, query.name, rawBody, contentLength(request));
      await ctx.audit.record({
        actor: principal.user,
        action: 'upload.create',
        target: upload.id,
        source,
        detail: { name: upload.name, size: upload.size, sha256: upload.sha256 },
      });
      return uploadView(upload);
    },

    cancelJob: async ({ principal, params, source }) =>
      jobView(await jobs.cancel(principal, params.id, source)),

    listResults: async ({ principal, params, source }) => {
      const job = await ownJob(principal, params.id, source);
      return { results: (await store.listResults(job.id)).map(resultView) };
    },

    downloadResult: async ({ principal, params, source, reply }) => {
      const job = await ownJob(principal, params.id, source);
      const located = await results.locate(job.id, params.name);
      const info = await stat(located.file).catch(() => undefined);
      if (!info)
        throw new StewardError(
          'STEWARD_NOT_FOUND',
          `result file ${params.name} of job ${job.id} is missing on disk`,
        );
      await ctx.audit.record({
        actor: principal.user,
        action: 'result.download',
        target: `${job.id}/${located.downloadName}`,
        source,
        detail: { size: info.size },
      });
      reply
        .header('content-type', located.contentType)
        .header('content-length', String(info.size))
        .header('content-disposition', contentDisposition(located.downloadName));
      return reply.send(createReadStream(located.file));
    },

    previewResult: async ({ principal, params, query, source }) => {
      const job = await ownJob(principal, params.id, source);
      return results.preview(job.id, params.name, query.limit, query.offset);
    },

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
      // Agents heartbeat every few seconds; one silent for five minutes is not "live".
      const agents = await store.listAgents(Date.now() - 5 * 60_000);
      // Other users' executors would tell a non-admin who works here, their uids and pids: admins only.
      const visible = (executor: { user: string }): boolean =>
        principal.role === 'admin' || executor.user === principal.user;
      return {
        agents: agents.map((a) => ({
          id: a.id,
          labels: a.labels,
          isolation: a.isolation,
          lastSeen: iso(a.lastSeen),
          capacity: a.capacity,
          executors: a.executors.filter(visible),
          draining: a.draining,
        })),
      };
    },

    drainAgent: ({ principal, params, source }) => controlAgent(ctx, principal, params.id, 'drain', source),

    resumeAgent: ({ principal, params, source }) => controlAgent(ctx, principal, params.id, 'resume', source),

    execWorkflow: async ({ job, query }) => {
      // The fetch is the claim: it happens once per job before any user code runs (an executor of an
      // older version sends no agent and claims nothing).
      if (query.agent !== undefined) await jobs.claim(job, query.agent);
      // Exactly the version pinned at submit, even if the workflow was deleted or pushed again since.
      const record = await workflows.pinned(job.workflow);
      return {
        jobId: job.id,
        attempt: job.attempt,
        user: job.user,
        source: record.source,
        format: record.format,
        params: job.params,
        assets: record.assets,
        limits: { stepLogBytes: results.stepLogLimitBytes },
        inputs: (await ctx.uploads.listInputs(job.id)).map(jobInputView),
      };
    },

    execReleaseClaim: async ({ job, query }) => {
      await jobs.releaseClaim(job, query.agent);
      return undefined;
    },

    execAsset: async ({ job, params, reply }) => {
      const asset = await store.workflowHasAsset(job.workflow, params.digest);
      if (!asset)
        throw new StewardError('STEWARD_NOT_FOUND', `job ${job.id}'s workflow has no asset ${params.digest}`);
      reply.header('content-type', 'application/octet-stream').header('content-length', String(asset.size));
      return reply.send(createReadStream(workflows.assetPath(asset.digest)));
    },

    execInput: async ({ job, params, reply }) => {
      const { file, input } = await ctx.uploads.locateInput(job.id, params.param);
      reply.header('content-type', 'application/octet-stream').header('content-length', String(input.size));
      return reply.send(createReadStream(file));
    },

    execLogChunk: async ({ job, params, query, rawBody, request }) =>
      ctx.liveLogs.append(job.id, params.step, params.stream, query.offset, rawBody, contentLength(request)),

    execUploadResult: async ({ job, params, query, rawBody, request }) => {
      await results.upload(job.id, params.name, query, rawBody, contentLength(request));
      return undefined;
    },

    execUploadLog: async ({ job, params, rawBody, request }) => {
      await results.uploadLog(job.id, params.step, params.stream, rawBody, contentLength(request));
      return undefined;
    },
  };
}

function contentLength(request: FastifyRequest): number | undefined {
  const header = request.headers['content-length'];
  return header === undefined ? undefined : Number(header);
}

/**
 * Sends a drain or resume to an agent the registry knows (one that ever sent a heartbeat): to its own
 * control queue, where it waits if the agent is away. Audited.
 */
async function controlAgent(
  ctx: ServerContext,
  principal: Principal,
  agentId: string,
  action: 'drain' | 'resume',
  source: string,
): Promise<{ id: string; action: 'drain' | 'resume' }> {
  const known = (await ctx.store.listAgents()).some((agent) => agent.id === agentId);
  if (!known)
    throw new StewardError('STEWARD_NOT_FOUND', `no agent ${agentId} has ever reported to this server`);
  await ctx.bus.publishControl(agentId, { v: PROTOCOL_VERSION, type: action });
  await ctx.audit.record({ actor: principal.user, action: `agent.${action}`, target: agentId, source });
  return { id: agentId, action };
}

/** A job with its steps and attempts from one snapshot (see `Store.getJobDetail`). */
async function readJobDetail(ctx: ServerContext, id: string): Promise<JobDetailRecord> {
  const detail = await ctx.store.getJobDetail(id);
  if (!detail) throw new StewardError('STEWARD_NOT_FOUND', `no job ${id}`);
  return detail;
}

/** The job's detail as the API shows it, with who pushed the version it pinned. */
async function readJobDetailView(ctx: ServerContext, id: string): Promise<JobDetail> {
  return detailView(ctx, await readJobDetail(ctx, id));
}

async function detailView(ctx: ServerContext, detail: JobDetailRecord): Promise<JobDetail> {
  const [pinned, inputs] = await Promise.all([
    ctx.workflows.pinned(detail.job.workflow).catch(() => undefined),
    ctx.uploads.listInputs(detail.job.id),
  ]);
  return jobDetailView(detail, pinned?.createdBy ?? null, inputs);
}

/**
 * SSE: `snapshot` (JobDetail) first, then `job`/`step` on every change, `end` (JobDetail) once the job is
 * terminal, then the stream closes. The subscription is taken before the snapshot is read, so no change
 * can fall between the two.
 */
async function streamJobEvents(
  ctx: ServerContext,
  job: JobRecord,
  request: FastifyRequest,
  reply: FastifyReply,
): Promise<FastifyReply> {
  const pending: (() => void)[] = [];
  let ready = false;
  let closed = false;
  const raw = reply.raw;
  const send = (event: string, data: unknown): void => {
    if (!closed) raw.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  };
  const timers: { keepalive?: NodeJS.Timeout } = {};
  let unsubscribe: () => void = () => {};
  const finish = (): void => {
    if (closed) return;
    closed = true;
    if (timers.keepalive) clearInterval(timers.keepalive);
    unsubscribe();
    raw.end();
  };
  const end = async (): Promise<void> => {
    try {
      send('end', await readJobDetailView(ctx, job.id));
    } catch (error) {
      request.log.warn({ err: error, jobId: job.id }, 'could not send the final job event');
    }
    finish();
  };
  unsubscribe = ctx.watch.subscribe(job.id, (change) => {
    const deliver = (): void => {
      if (closed) return;
      if (change.type === 'step') {
        send('step', stepView(change.step));
        return;
      }
      if (change.type === 'log') {
        send('log', change.log);
        return;
      }
      send('job', jobView(change.job));
      if (isTerminal(change.job.state)) void end();
    };
    if (ready) deliver();
    else pending.push(deliver);
  });

  reply.hijack();
  raw.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  request.raw.on('close', finish);
  let current: JobRecord;
  try {
    const detail = await readJobDetail(ctx, job.id);
    current = detail.job;
    send('snapshot', await detailView(ctx, detail));
  } catch (error) {
    // Headers are out: the error shape cannot be sent any more, so log it and end the stream.
    request.log.error({ err: error, jobId: job.id }, 'could not send the job snapshot');
    finish();
    return reply;
  }
  if (isTerminal(current.state)) {
    await end();
    return reply;
  }
  ready = true;
  for (const deliver of pending.splice(0)) deliver();
  timers.keepalive = setInterval(() => {
    if (!closed) raw.write(': keep-alive\n\n');
  }, KEEPALIVE_MS);
  timers.keepalive.unref();
  return reply;
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

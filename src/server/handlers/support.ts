/** What several route handlers share: job detail reads, the job's live event stream, agent control. */
import { openEventStream } from '../sse.js';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { isTerminal, PROTOCOL_VERSION, StewardError, type JobDetail } from '../../protocol/index.js';
import type { JobDetailRecord, JobRecord } from '../../store/index.js';
import type { Principal } from '../auth.js';
import type { ServerContext } from '../context.js';
import { jobDetailView, jobView, stepView } from '../views.js';

const KEEPALIVE_MS = 15_000;

export function contentLength(request: FastifyRequest): number | undefined {
  const header = request.headers['content-length'];
  return header === undefined ? undefined : Number(header);
}

/**
 * Sends a drain or resume to an agent the registry knows (one that ever sent a heartbeat): to its own
 * control queue, where it waits if the agent is away. Audited.
 */
export async function controlAgent(
  ctx: ServerContext,
  principal: Principal,
  agentId: string,
  action: 'drain' | 'resume',
  source: string,
): Promise<{ id: string; action: 'drain' | 'resume' }> {
  const known = (await ctx.store.listAgents()).some((agent) => agent.id === agentId);
  if (!known)
    throw new StewardError('STEWARD_NOT_FOUND', `no agent ${agentId} has ever reported to this server`);
  const bus = await ctx.clusters.registry.busOfAgent(agentId);
  await bus.publishControl(agentId, { v: PROTOCOL_VERSION, type: action });
  await ctx.audit.record({ actor: principal.user, action: `agent.${action}`, target: agentId, source });
  return { id: agentId, action };
}

/** A job with its steps and attempts from one snapshot (see `Store.getJobDetail`). */
export async function readJobDetail(ctx: ServerContext, id: string): Promise<JobDetailRecord> {
  const detail = await ctx.store.getJobDetail(id);
  if (!detail) throw new StewardError('STEWARD_NOT_FOUND', `no job ${id}`);
  return detail;
}

/** The job's detail as the API shows it, with who pushed the version it pinned. */
export async function readJobDetailView(ctx: ServerContext, id: string): Promise<JobDetail> {
  return detailView(ctx, await readJobDetail(ctx, id));
}

export async function detailView(ctx: ServerContext, detail: JobDetailRecord): Promise<JobDetail> {
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
export async function streamJobEvents(
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
  // `known`: the terminal detail when it was just read (a job that had ended when the stream opened).
  const end = async (known?: JobDetail): Promise<void> => {
    try {
      send('end', known ?? (await readJobDetailView(ctx, job.id)));
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

  openEventStream(reply);
  request.raw.on('close', finish);
  let current: JobRecord;
  let snapshot: JobDetail;
  try {
    const detail = await readJobDetail(ctx, job.id);
    current = detail.job;
    snapshot = await detailView(ctx, detail);
    send('snapshot', snapshot);
  } catch (error) {
    // Headers are out: the error shape cannot be sent any more, so log it and end the stream.
    request.log.error({ err: error, jobId: job.id }, 'could not send the job snapshot');
    finish();
    return reply;
  }
  if (isTerminal(current.state)) {
    // Nothing of an ended job changes any more: the snapshot is its end too.
    await end(snapshot);
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

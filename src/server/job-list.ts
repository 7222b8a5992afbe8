/**
 * The jobs list: one page of the jobs a caller may see (`GET /api/jobs`), and the live stream of their
 * changes (`GET /api/jobs/stream`). Users see their own jobs, admins everyone's.
 */
import { openEventStream } from './sse.js';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import { StewardError, parseIsoTime, type ListJobsQuery } from '../protocol/index.js';
import { decodeJobCursor, encodeJobCursor, type JobPageFilter, type JobRecord } from '../store/index.js';
import type { Principal } from './auth.js';
import type { ServerContext } from './context.js';
import { jobView } from './views.js';

const KEEPALIVE_MS = 15_000;
/**
 * A client that reads slower than jobs change: past this many unread bytes its stream is ended (it
 * reconnects and re-reads the list), so one stalled browser cannot hold a growing buffer.
 */
const MAX_BUFFERED_BYTES = 1024 * 1024;

export async function listJobPage(
  ctx: ServerContext,
  principal: Principal,
  query: z.output<typeof ListJobsQuery>,
): Promise<{ jobs: ReturnType<typeof jobView>[]; next: string | null }> {
  // Users see their own jobs; admins may filter by user. Asking for someone else's is refused rather than
  // answered with one's own jobs, which looked like that user's.
  if (principal.role !== 'admin' && query.user !== undefined && query.user !== principal.user)
    throw new StewardError(
      'STEWARD_FORBIDDEN',
      `only admins may list other users' jobs; you see your own (user ${JSON.stringify(principal.user)})`,
      { details: { user: query.user } },
    );
  const user = principal.role === 'admin' ? query.user : principal.user;
  const filter: JobPageFilter = { limit: query.limit };
  if (user !== undefined) filter.user = user;
  if (query.state !== undefined) filter.state = query.state;
  if (query.workflow !== undefined) filter.workflow = query.workflow;
  if (query.space !== undefined) filter.space = query.space;
  if (query.since !== undefined) filter.since = parseIsoTime(query.since);
  if (query.until !== undefined) filter.until = parseIsoTime(query.until);
  if (query.before !== undefined) {
    // A job id instead of a cursor: the page starts after that job.
    filter.before = decodeJobCursor(query.before) ?? (await cursorOfJob(ctx, query.before));
  }
  const page = await ctx.store.listings.jobs(filter);
  return { jobs: page.items.map(jobView), next: page.next ? encodeJobCursor(page.next) : null };
}

/** The cursor just after a job given by id (an unknown id starts the page at the id's position). */
async function cursorOfJob(ctx: ServerContext, id: string): Promise<{ createdAt: number; id: string }> {
  const job = await ctx.store.getJob(id);
  return { createdAt: job?.createdAt ?? Number.MAX_SAFE_INTEGER, id };
}

/**
 * SSE: `event: job` with a `Job` whenever a job the caller may see changes state, from any server (remote.ts
 * feeds other servers' changes in on PostgreSQL). `event: resync` when changes may have been missed: the
 * client re-reads its page. The stream ends when the caller's token stops being valid (checked with each
 * keepalive), so a revoked session or a disabled user stops receiving.
 */
export function streamJobList(
  ctx: ServerContext,
  principal: Principal,
  request: FastifyRequest,
  reply: FastifyReply,
): FastifyReply {
  const raw = reply.raw;
  let closed = false;
  const visible = (job: JobRecord): boolean => principal.role === 'admin' || job.user === principal.user;
  const send = (event: string, data: unknown): void => {
    if (closed) return;
    raw.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    if (raw.writableLength > MAX_BUFFERED_BYTES) finish();
  };
  const unsubscribe = ctx.watch.subscribeAll({
    job: (job) => {
      if (visible(job)) send('job', jobView(job));
    },
    resync: () => send('resync', {}),
  });
  const keepalive = setInterval(() => {
    if (closed) return;
    raw.write(': keep-alive\n\n');
    void stillValid(ctx, principal).then(
      (valid) => {
        if (!valid) finish();
      },
      (error: unknown) => request.log.warn({ err: error }, 'could not re-check a jobs stream'),
    );
  }, KEEPALIVE_MS);
  keepalive.unref();
  function finish(): void {
    if (closed) return;
    closed = true;
    clearInterval(keepalive);
    unsubscribe();
    raw.end();
  }
  openEventStream(reply);
  // A first comment, so the client sees the stream open (and is subscribed) before any job changes.
  raw.write(': connected\n\n');
  request.raw.on('close', finish);
  return reply;
}

/** The principal's token is live and its role unchanged (a demoted admin must not keep seeing all jobs). */
async function stillValid(ctx: ServerContext, principal: Principal): Promise<boolean> {
  const [token, user] = await Promise.all([
    ctx.store.getToken(principal.tokenId),
    ctx.store.getUser(principal.user),
  ]);
  if (!token || token.revoked || (token.expiresAt !== null && token.expiresAt <= Date.now())) return false;
  return user !== undefined && !user.disabled && user.role === principal.role;
}

/**
 * Claims taken by agents' `loading` events. An agent reports `loading` when it takes an offer; the server
 * applies that report as the attempt's claim (see docs/architecture.md, "Claims"): the first agent whose
 * `loading` is applied holds the attempt, as the first executor to fetch the workflow did before. Events of
 * one agent reach the server in publish order through one queue, so an agent that waited for the broker's
 * confirm of its `loading` before running anything is ahead of any agent given the offer again later.
 */
import type { JobEvent } from '../protocol/index.js';
import type { StoreContext } from './context.js';

/** Job states in which an attempt can still be claimed (nothing of it ran yet, or its agent reports it). */
const CLAIMABLE = ['queued', 'offered', 'loading'] as const;

/**
 * For each `loading` event, in order, in one transaction: claims its attempt for its agent unless the
 * attempt moved on or another agent holds it (one conditional UPDATE each, as `claimAttempt`). Other events
 * are skipped. The event itself is applied afterwards as usual (and refused when another agent holds the
 * claim).
 */
export async function claimByLoadingEvents(
  ctx: StoreContext,
  events: readonly JobEvent[],
  now = ctx.clock(),
): Promise<void> {
  const loading = events.filter((event) => event.type === 'state' && event.state === 'loading');
  if (loading.length === 0) return;
  await ctx.db.transaction().execute(async (trx) => {
    for (const event of loading)
      await trx
        .updateTable('jobs')
        .set({ claimed_by: event.agentId, agent_id: event.agentId, updated_at: now })
        .where('id', '=', event.jobId)
        .where('attempt', '=', event.attempt)
        .where('claimed_by', 'is', null)
        .where('state', 'in', CLAIMABLE)
        .execute();
  });
}

/**
 * The sweeps' queries: jobs that some server must end, adopt or offer again because whoever was moving
 * them stopped (an expired load deadline, an offer never confirmed published, a job left `queued`, an agent
 * gone silent). They only read; what is done with each job goes through transitions and attempts, so two
 * servers sweeping at once cannot both act on one job. Timers live in the database (the load deadline is
 * stored with the job), so any server's sweeper can end a job another server submitted.
 */
import type { StoreContext } from './context.js';
import { toJob, type JobRecord } from './job-records.js';

/** The most jobs one sweep query returns; the next sweep takes the rest. */
const SWEEP_BATCH = 500;

export class SweepStore {
  constructor(private readonly ctx: StoreContext) {}

  /**
   * Jobs waiting for an executor whose load deadline has passed, including `queued` ones: a server that died
   * between storing a job and publishing its offer leaves it queued, and another server must end it.
   */
  async listJobsPastLoadDeadline(now: number, limit = SWEEP_BATCH): Promise<JobRecord[]> {
    const rows = await this.ctx.db
      .selectFrom('jobs')
      .selectAll()
      .where('state', 'in', ['queued', 'offered', 'loading'])
      .where('load_deadline', 'is not', null)
      .where('load_deadline', '<', now)
      .orderBy('load_deadline')
      .limit(limit)
      .execute();
    return rows.map(toJob);
  }

  /** `offered` jobs whose offer was never confirmed published, unchanged since `updatedBefore`. */
  async listUnpublishedOffers(updatedBefore: number, limit = SWEEP_BATCH): Promise<JobRecord[]> {
    const rows = await this.ctx.db
      .selectFrom('jobs')
      .selectAll()
      .where('state', '=', 'offered')
      .where('offer_published_at', 'is', null)
      .where('updated_at', '<', updatedBefore)
      .orderBy('updated_at')
      .limit(limit)
      .execute();
    return rows.map(toJob);
  }

  /** Jobs still `queued` that were created before `createdBefore` (left behind by a server that died). */
  async listQueuedJobsCreatedBefore(createdBefore: number, limit = SWEEP_BATCH): Promise<JobRecord[]> {
    const rows = await this.ctx.db
      .selectFrom('jobs')
      .selectAll()
      .where('state', '=', 'queued')
      .where('created_at', '<', createdBefore)
      .orderBy('created_at')
      .limit(limit)
      .execute();
    return rows.map(toJob);
  }

  /**
   * Jobs whose agent's last heartbeat is older than `lastSeenBefore` (or that never sent one): the candidates
   * for `lost` or a retry. Running jobs count by the agent that reported them running; loading jobs only
   * once an agent claimed them (by the claim's agent): the bus would hand their offer to another agent by
   * itself, but that agent's fetch is refused while the claim stands, so nothing else would ever run them.
   * Loading jobs nobody claimed are left to the bus.
   *
   * A job changed since `lastSeenBefore` is not a candidate either: its claim or its last event is a sign of
   * its agent's life as good as a heartbeat. A new agent's executor can claim a job before the server has
   * applied that agent's first heartbeat; without this, a sweep in between would retry the job it just
   * started loading.
   */
  async listRunningJobsOfSilentAgents(lastSeenBefore: number, limit = SWEEP_BATCH): Promise<JobRecord[]> {
    const rows = await this.ctx.db
      .selectFrom('jobs')
      .selectAll()
      .where('updated_at', '<', lastSeenBefore)
      .where((eb) => {
        const live = eb.selectFrom('agents').select('id').where('last_seen', '>=', lastSeenBefore);
        return eb.or([
          eb.and([
            eb('state', '=', 'running'),
            eb('agent_id', 'is not', null),
            eb.not(eb('agent_id', 'in', live)),
          ]),
          // Claimed and not started: `loading`, or still `offered` when the agent died before its
          // `loading` event reached a server.
          eb.and([
            eb('state', 'in', ['loading', 'offered']),
            eb('claimed_by', 'is not', null),
            eb.not(eb('claimed_by', 'in', live)),
          ]),
        ]);
      })
      .orderBy('id')
      .limit(limit)
      .execute();
    return rows.map(toJob);
  }
}

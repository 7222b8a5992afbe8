/**
 * A job's life at the agent once taken: placing it on the user's executor, relaying its events, acking its
 * offer once it loaded, handing the offer back when the executor dies before that, ending it (reported by
 * the executor, or by the agent itself when a time limit or a cancel is overrun) and freeing its slot.
 * Each step moves the job's `OfferState` through the `OfferTable` (offer-state.ts).
 */
import path from 'node:path';
import type { Logger } from 'pino';
import type { Delivery } from '../bus/index.js';
import type { CompiledAgentConfig } from '../config/index.js';
import {
  coerceError,
  type ErrorInfo,
  type ExecutorToAgent,
  type JobOffer,
  type JobState,
} from '../protocol/index.js';
import type { AgentClock, AgentHost, AgentPool, PooledExecutor } from './collaborators.js';
import { roundMs, type Launcher } from './launcher.js';
import type { ActiveJob, OfferTable } from './offer-state.js';
import { ExecutorCgroupGoneError } from './cgroups.js';
import { ExecutorExitedError, outOfMemory } from './pool.js';
import type { Reporter } from './reporter.js';
import type { ExitInfo } from './spawner.js';

/** How long a hand-back keeps trying to release its claim on a server that does not answer. */
const CLAIM_RELEASE_TIMEOUT_MS = 5_000;
/** Between the two releases of a hand-back: time for a fetch the dead executor sent to reach the server. */
const CLAIM_RELEASE_SETTLE_MS = 250;

/**
 * The server's answers to a load that say this copy of the offer is not the job's to run: another agent
 * holds the attempt, or the attempt's job token no longer opens the job (a newer attempt replaced it, or the
 * job ended). On the executor routes these come only from the job token and the claim (`server/jobs/claims.ts`).
 */
const COPY_REFUSALS = new Set(['STEWARD_ATTEMPT_CLAIMED', 'STEWARD_UNAUTHENTICATED', 'STEWARD_FORBIDDEN']);

function isCopyRefusal(error: ErrorInfo | undefined): error is ErrorInfo {
  return error !== undefined && COPY_REFUSALS.has(error.code);
}

function formatSeconds(ms: number): string {
  return `${Math.round(ms / 100) / 10} s`;
}

/** What the agent does when a job's slot or held delivery changes. */
export interface SlotEvents {
  /** Recompute the offers prefetch. */
  updatePrefetch(): Promise<void>;
  /** A slot freed up: place parked offers that fit now. */
  placeParked(): Promise<void>;
}

export interface JobRunnerDeps {
  config: CompiledAgentConfig;
  log: Logger;
  clock: AgentClock;
  host: AgentHost;
  pool: AgentPool;
  table: OfferTable;
  report: Reporter;
  launcher: Launcher;
  slots: SlotEvents;
}

export class JobRunner {
  private readonly config: CompiledAgentConfig;
  private readonly log: Logger;
  private readonly clock: AgentClock;
  private readonly host: AgentHost;
  private readonly pool: AgentPool;
  private readonly table: OfferTable;
  private readonly report: Reporter;
  private readonly launcher: Launcher;
  private readonly slots: SlotEvents;

  constructor(deps: JobRunnerDeps) {
    this.config = deps.config;
    this.log = deps.log;
    this.clock = deps.clock;
    this.host = deps.host;
    this.pool = deps.pool;
    this.table = deps.table;
    this.report = deps.report;
    this.launcher = deps.launcher;
    this.slots = deps.slots;
  }

  /** A revocation of the job's held delivery (a broker drop) drops the hold quietly; the job goes on. */
  watchRevocation(job: ActiveJob, delivery: Delivery<unknown>): void {
    delivery.onRevoked(() => {
      // Still ours if still running here (or ended here): its redelivery is settled, not run again.
      if (this.table.takenBack(job, delivery))
        this.log.info(
          { event: 'offer.taken-back', jobId: job.offer.jobId },
          'broker took back a loading offer; keeping the job',
        );
    });
  }

  /** Settles the job's offer delivery (ack) if this agent still holds it. */
  private async release(job: ActiveJob): Promise<void> {
    await this.table.release(job)?.ack();
  }

  async accept(key: string, offer: JobOffer, delivery: Delivery<unknown>, receivedAt: number): Promise<void> {
    const job: ActiveJob = {
      key,
      offer,
      hold: { kind: 'held', delivery },
      // Each delivery of an offer numbers its events in its own range: when an agent died after reporting and
      // the offer went to another agent, the new agent's events must not look like duplicates of the old ones.
      seq: (delivery.deliveryCount - 1) * 1_000_000,
      cancelRequested: false,
      oomKillsBefore: 0,
      receivedAt,
      coldStart: false,
      firstStepLogged: false,
    };
    this.table.accept(job);
    this.watchRevocation(job, delivery);
    await this.slots.updatePrefetch();
    // `loading` claims the attempt once the server applies it. Placing goes on meanwhile; the job is handed
    // to the executor once the broker confirmed the event (see claimMode). The offer stays unacked until
    // `loaded`, so a crash before that leads to redelivery.
    const loading = this.report.state(job, 'loading');
    try {
      await this.place(job, this.claimMode(job, delivery, loading));
    } catch (error) {
      // Handed back already when the executor's exit reached the pool first.
      if (error instanceof ExecutorExitedError && !this.table.isCurrent(job)) return;
      if (error instanceof ExecutorExitedError) {
        // Killed while becoming the user: a crash before the load, handed back like one during it.
        this.log.warn(
          { event: 'job.start-interrupted', jobId: offer.jobId, cause: error.exit.cause },
          error.message,
        );
        this.handBackLoading(job, error.exit);
        return;
      }
      const failure = coerceError(error, 'STEWARD_EXECUTOR_START_FAILED');
      this.log.warn({ event: 'job.start-failed', jobId: offer.jobId, code: failure.code }, failure.message);
      // Identity refusals and start failures end the job with a clear reason: no retry loop.
      await this.finish(job, 'failed', { code: failure.code, message: failure.message });
    }
  }

  /**
   * How the job's attempt is claimed (see the `job` message). A first delivery reaches one agent only: the
   * broker gives the offer to another agent only after taking it back from this one, and this agent's
   * `loading`, confirmed before that, is ahead of the other agent's in the events queue, so the server
   * grants the claim to this agent. Otherwise (a redelivery, an unconfirmed `loading`, a delivery taken
   * back meanwhile) another agent may hold it, and the executor's fetch checks the claim before anything
   * runs.
   */
  private async claimMode(
    job: ActiveJob,
    delivery: Delivery<unknown>,
    loading: Promise<boolean>,
  ): Promise<'event' | 'await-event'> {
    const confirmed = await loading;
    const held = job.hold.kind === 'held' && job.hold.delivery === delivery;
    return confirmed && held && delivery.deliveryCount === 1 ? 'event' : 'await-event';
  }

  private async place(job: ActiveJob, claim: Promise<'event' | 'await-event'>): Promise<void> {
    const { executor } = await this.launcher.executorFor(job);
    if (job.cancelRequested) {
      await this.finish(job, 'canceled', {
        code: 'STEWARD_JOB_CANCELED',
        message: 'canceled before it started',
      });
      return;
    }
    job.executor = executor;
    job.identity = executor.identity;
    job.oomKillsBefore = executor.cgroup?.oomKills() ?? 0;
    const placed = this.clock.monotonic();
    // Made by root, writable (its cgroup.procs only) by the user: every step of the job starts in it.
    try {
      job.cgroup = await executor.cgroup?.takeJob();
    } catch (error) {
      if (error instanceof ExecutorCgroupGoneError) throw executorGone(executor);
      throw error;
    }
    this.pool.jobStarted(executor, job.offer.jobId);
    const cgroupDone = this.clock.monotonic();
    const claimMode = await claim;
    if (job.timing) {
      job.timing.cgroup = roundMs(cgroupDone - placed);
      // What the job still waited for the broker's confirm of `loading` once its executor was ready.
      job.timing.confirmWait = roundMs(this.clock.monotonic() - cgroupDone);
    }
    // An executor that exited since it was resolved has no pipe any more: handed back like a death while
    // loading (its exit reached the pool before this job was counted as its).
    const sent = executor.process.send({
      type: 'job',
      jobId: job.offer.jobId,
      attempt: job.offer.attempt,
      serverUrl: job.offer.serverUrl,
      jobToken: job.offer.jobToken,
      agentId: this.config.id,
      claim: claimMode,
      // Carried on only when nothing needs checking: a redelivery's executor fetches (the fetch checks the claim).
      ...(claimMode === 'event' && job.offer.inline ? { workflow: job.offer.inline } : {}),
      params: job.offer.params,
      ...(job.offer.limits.timeoutMs ? { timeoutMs: job.offer.limits.timeoutMs } : {}),
      ...(job.cgroup ? { cgroupProcs: job.cgroup.procsFile } : {}),
    });
    if (!sent) throw executorGone(executor);
    job.sentAt = this.clock.monotonic();
    // A cancel that came while the executor was being prepared is the executor's to honour now.
    if (job.cancelRequested) this.requestCancel(job);
  }

  onExecutorMessage(executor: PooledExecutor, message: ExecutorToAgent): void {
    if (message.type !== 'loaded' && message.type !== 'step' && message.type !== 'finished') return;
    const job = this.findJob(message.jobId, executor);
    if (!job) return;
    switch (message.type) {
      case 'loaded':
        void this.loaded(job);
        return;
      case 'step':
        if (message.step.state === 'running' && !job.firstStepLogged) {
          job.firstStepLogged = true;
          // Offer arrival → first step running: the figure `bench/cold-start.mjs` reports.
          this.log.info(
            {
              event: 'job.first-step',
              jobId: job.offer.jobId,
              attempt: job.offer.attempt,
              user: executor.account.name,
              coldStart: job.coldStart,
              ...(job.coldStart && executor.origin ? { executorOrigin: executor.origin } : {}),
              startLatencyMs: roundMs(this.clock.monotonic() - job.receivedAt),
              ...(job.cgroup ? { cgroup: path.basename(job.cgroup.dir) } : {}),
              phasesMs: job.timing,
            },
            'first step started',
          );
          // Now that the start is over, what it took from the spares is replaced.
          this.pool.replenish();
        }
        void this.report.step(job, message.step);
        return;
      case 'finished':
        if (this.table.isLoading(job) && isCopyRefusal(message.error)) {
          void this.dropClaimed(job, message.error);
          return;
        }
        void this.finish(job, message.state, message.error);
        return;
    }
  }

  private async loaded(job: ActiveJob): Promise<void> {
    if (!this.table.isLoading(job)) return;
    if (job.timing && job.sentAt !== undefined)
      job.timing.load = roundMs(this.clock.monotonic() - job.sentAt);
    this.table.loaded(job);
    // The engine's clock for the time limit starts now; the agent's runs alongside, plus the grace.
    const { timeoutMs } = job.offer.limits;
    if (timeoutMs && !job.enforcer) {
      job.enforcer = setTimeout(
        () =>
          void this.endByAgent(
            job,
            'failed',
            `the job exceeded its time limit of ${formatSeconds(timeoutMs)} and the executor had not ended it ${formatSeconds(this.config.deadlineGraceMs)} later`,
          ),
        timeoutMs + this.config.deadlineGraceMs,
      );
      job.enforcer.unref();
    }
    // `running` is confirmed before the ack, so the broker has it before anything can make the offer go
    // elsewhere; the final state, published later on the same channel, can never overtake it. It takes its
    // number and time now, before any await: the executor runs steps from `loaded` on, and their events must
    // come after it. It may wait for the job's steps and end to travel with it (see EventBatcher); the ack
    // waits with it, off the job's path.
    const running = this.report.state(job, 'running');
    await this.slots.updatePrefetch();
    await running;
    await this.release(job);
  }

  /**
   * The executor died under a job: before the ack the offer goes back for redelivery (saying why, so that a
   * job that kills every executor loading it is reported as poison once the bus gives up on it); after the
   * ack, the job failed and the server decides whether to retry it.
   */
  executorLost(jobId: string, exit: ExitInfo): void {
    const { cause } = exit;
    for (const job of [...this.table.activeJobs()]) {
      if (job.offer.jobId !== jobId) continue;
      const user = job.identity?.osUser ?? job.offer.user;
      if (this.table.isLoading(job)) {
        this.handBackLoading(job, exit);
      } else if (exit.kind === 'unresponsive') {
        this.launcher.leftBehind(job);
        void this.finish(job, job.cancelRequested ? 'canceled' : 'failed', {
          code: 'STEWARD_AGENT_ENDED_JOB',
          message: `agent ${this.config.id} ended the job: the executor for ${user} was ${cause}, so the agent killed it and every process of the job`,
        });
      } else {
        const oom = exit.kind === 'out-of-memory';
        void this.finish(job, 'failed', {
          code: oom ? 'STEWARD_OUT_OF_MEMORY' : 'STEWARD_EXECUTOR_CRASHED',
          message: oom
            ? `${cause}: the executor for ${user} was killed by the kernel`
            : `executor for ${user} ended during the job: ${cause}`,
        });
      }
    }
  }

  /**
   * The job's executor died before the workflow loaded: the offer goes back to the bus (its delivery count
   * grows, so an offer that kills every executor ends at the delivery limit as poison), with an `offered`
   * event that says why.
   */
  private handBackLoading(job: ActiveJob, exit: Pick<ExitInfo, 'kind' | 'cause'>): void {
    const { cause } = exit;
    if (!this.table.handBack(job)) return;
    this.dropJobResources(job);
    // Without a hold (the broker took the delivery back in a drop) the redelivery is a fresh offer.
    const delivery = this.table.release(job);
    const handBack = async (): Promise<void> => {
      // The claim is freed over HTTP, alongside the event: the event waits behind any backlog in the events
      // queue, and an agent given the redelivered offer before it lands would be refused. Twice: the dead
      // executor's fetch may still be on its way and claim the attempt after the first release. The second
      // cannot free a newer claim of this agent's: it holds the delivery until the requeue below.
      const released = this.releaseClaim(job)
        .then(() => new Promise((resolve) => setTimeout(resolve, CLAIM_RELEASE_SETTLE_MS)))
        .then(() => this.releaseClaim(job));
      await this.report.state(job, 'offered', {
        code: exit.kind === 'out-of-memory' ? 'STEWARD_OUT_OF_MEMORY' : 'STEWARD_EXECUTOR_CRASHED',
        message: `agent ${this.config.id}: the executor for ${job.identity?.osUser ?? job.offer.user} ended while loading the job (${cause}); offer handed back after delivery ${delivery?.deliveryCount ?? '?'}`,
      });
      await released;
      if (delivery) await delivery.requeue(0);
      await this.slots.updatePrefetch();
      await this.slots.placeParked();
    };
    void handBack();
  }

  /**
   * Gives up this agent's claim on a job's attempt that never started (a no-op on the server when the
   * executor had not fetched yet). A failure is only logged: the hand-back event frees the claim too, later.
   */
  private async releaseClaim(job: ActiveJob): Promise<void> {
    const { offer } = job;
    try {
      await this.host.releaseClaim(offer, AbortSignal.timeout(CLAIM_RELEASE_TIMEOUT_MS));
    } catch (error) {
      this.log.warn(
        { event: 'claim.release-failed', jobId: offer.jobId, attempt: offer.attempt, err: error },
        "could not release this agent's claim on the job; another agent may load it only once the hand-back event reaches the server",
      );
    }
  }

  /**
   * The server refused this agent's load. Either another agent holds the attempt (the broker gave it the
   * same offer after taking it back from this agent in a connection drop, or the other way round), or the
   * attempt is no longer the job's (the server gave it up for a newer one, or the job ended, before this
   * copy's first fetch). The job is another's: settle this agent's delivery, if it still holds one, and free
   * the slot, without a state event (the job's record is not this copy's to write). The offer stays `ended`
   * here: should the broker bring it here again, it is settled, not loaded.
   */
  private async dropClaimed(job: ActiveJob, error: ErrorInfo): Promise<void> {
    if (!this.table.end(job)) return;
    this.dropJobResources(job);
    if (job.executor) this.pool.jobEnded(job.executor, job.offer.jobId);
    this.log.info(
      {
        event: 'job.copy-dropped',
        jobId: job.offer.jobId,
        attempt: job.offer.attempt,
        held: job.hold.kind === 'held',
      },
      `another agent loads the job; dropping this agent's copy (${error.message})`,
    );
    await this.release(job);
    await this.slots.placeParked();
    await this.slots.updatePrefetch();
  }

  private async finish(job: ActiveJob, state: JobState, error?: ErrorInfo): Promise<void> {
    if (!this.table.end(job)) return;
    if (job.enforcer) clearTimeout(job.enforcer);
    // Everything of the job dies with it — daemons that left the step's process group included — before
    // the end is reported; and anything of a job that slipped out of its job's cgroup goes too.
    if (job.cgroup) {
      const killed = await (job.executor?.cgroup?.endJob(job.cgroup) ?? job.cgroup.remove()).catch(() => 0);
      if (killed > 0)
        this.log.info(
          { event: 'job.strays-killed', jobId: job.offer.jobId, killed },
          'killed processes the job left behind in its cgroup',
        );
    }
    if (job.executor?.cgroup) await job.executor.cgroup.killStrays(job.executor.pid).catch(() => 0);
    const cgroup = job.executor?.cgroup;
    if (state === 'failed' && error?.code !== 'STEWARD_OUT_OF_MEMORY' && cgroup) {
      // A step the kernel killed for the memory limit looks like any killed process to the engine; the
      // cgroup's own counter says what happened.
      if (cgroup.oomKills() > job.oomKillsBefore) {
        error = {
          code: 'STEWARD_OUT_OF_MEMORY',
          message: `${outOfMemory(cgroup.limits)}${error ? `: ${error.message}` : ''}`,
        };
      }
    }
    if (job.executor) this.pool.jobEnded(job.executor, job.offer.jobId);
    // Final state first, then ack: if we die in between, a redelivered offer finds the job ended.
    await this.report.state(job, state, error);
    await this.release(job);
    await this.slots.placeParked();
    await this.slots.updatePrefetch();
  }

  /**
   * Asks the job's executor to cancel it, and holds the cancel: should the executor not end the job within
   * the grace, the agent ends it itself.
   */
  requestCancel(job: ActiveJob): void {
    job.cancelRequested = true;
    if (!job.executor) return; // Still being placed: place() passes the cancel on.
    job.executor.process.send({ type: 'cancel', jobId: job.offer.jobId });
    if (job.enforcer) clearTimeout(job.enforcer);
    job.enforcer = setTimeout(
      () =>
        void this.endByAgent(
          job,
          'canceled',
          `the executor had not ended the job ${formatSeconds(this.config.deadlineGraceMs)} after its cancel`,
        ),
      this.config.deadlineGraceMs,
    );
    job.enforcer.unref();
  }

  /**
   * The executor did not end the job in time (a time limit or a cancel, plus the grace): the agent does.
   * It kills every process of the job; an executor that does not answer either (stopped, hung) is killed too,
   * with everything it runs. The job ends `failed` or `canceled` with STEWARD_AGENT_ENDED_JOB, and its slot
   * is free.
   */
  private async endByAgent(job: ActiveJob, state: 'failed' | 'canceled', why: string): Promise<void> {
    if (!this.table.isCurrent(job)) return;
    const executor = job.executor;
    const unresponsive = executor !== undefined && !this.pool.responsive(executor);
    this.log.warn(
      {
        event: 'job.ended-by-agent',
        jobId: job.offer.jobId,
        attempt: job.offer.attempt,
        user: executor?.account.name,
        unresponsive,
      },
      `ending the job from the agent: ${why}`,
    );
    if (executor && (unresponsive || !job.cgroup)) {
      this.launcher.leftBehind(job);
      // Without a job cgroup the executor's is the only way to reach every process of the job.
      this.pool.killHung(
        executor,
        unresponsive ? 'unresponsive (ended by the agent)' : 'killed by the agent to end a job',
      );
    }
    await this.finish(job, state, {
      code: 'STEWARD_AGENT_ENDED_JOB',
      message: `agent ${this.config.id} ended the job: ${why}${unresponsive ? '; the executor did not answer and was killed' : ''}`,
    });
  }

  /** Stops the job's enforcement timer and removes its cgroup with anything in it (in the background). */
  private dropJobResources(job: ActiveJob): void {
    if (job.enforcer) clearTimeout(job.enforcer);
    void job.cgroup?.remove().catch(() => 0);
  }

  private findJob(jobId: string, executor: PooledExecutor): ActiveJob | undefined {
    for (const job of this.table.activeJobs())
      if (job.offer.jobId === jobId && job.executor === executor) return job;
    return undefined;
  }
}

/** The error of a job whose executor exited between being resolved and being given the job. */
function executorGone(executor: PooledExecutor): ExecutorExitedError {
  const cause = 'exited before the job was handed to it';
  return new ExecutorExitedError(`the executor for ${executor.account.name} ${cause}`, {
    kind: 'exited',
    code: null,
    signal: null,
    cause,
  });
}

/**
 * What the agent tells the server: a job's state and step events (numbered per job, through the event
 * batcher: those ready together leave in one message) and the agent's heartbeat. A failed publish is
 * logged, never thrown: the caller's job goes on, and heartbeats repeat.
 */
import type { Logger } from 'pino';
import type { Bus } from '../bus/index.js';
import {
  PROTOCOL_VERSION,
  type ErrorInfo,
  type ExecutorIdentity,
  type Heartbeat,
  type JobEvent,
  type JobOffer,
  type JobState,
  type StepEvent,
} from '../protocol/index.js';
import type { AgentClock } from './collaborators.js';
import { EventBatcher } from './event-batcher.js';

/** The parts of a job an event names. */
export interface ReportedJob {
  readonly offer: Pick<JobOffer, 'jobId' | 'attempt'>;
  /** The job's last event number; each event takes the next. */
  seq: number;
  identity?: ExecutorIdentity;
}

export class Reporter {
  private readonly events: EventBatcher;

  constructor(
    private readonly agentId: string,
    private readonly bus: Bus,
    private readonly clock: AgentClock,
    private readonly log: Logger,
  ) {
    this.events = new EventBatcher(agentId, (message) => this.bus.publishEvent(message));
  }

  /** Resolves with whether the broker confirmed the event (a failure is logged, not thrown). */
  async state(job: ReportedJob, state: JobState, error?: ErrorInfo): Promise<boolean> {
    return this.publish({
      ...this.next(job),
      type: 'state',
      state,
      ...(error ? { error } : {}),
      ...(job.identity ? { executor: job.identity } : {}),
    });
  }

  async step(job: ReportedJob, step: StepEvent): Promise<void> {
    await this.publish({ ...this.next(job), type: 'step', step });
  }

  /** The fields every event of the job carries, with the job's next event number. */
  private next(job: ReportedJob) {
    return {
      v: PROTOCOL_VERSION,
      jobId: job.offer.jobId,
      attempt: job.offer.attempt,
      seq: ++job.seq,
      time: this.clock.now(),
      agentId: this.agentId,
    } as const;
  }

  /** Through the bus's heartbeats queue: no backlog of job events delays it (servers older than it miss it). */
  async heartbeat(fields: Omit<Heartbeat, 'v' | 'type' | 'agentId' | 'time'>): Promise<void> {
    const heartbeat: Heartbeat = {
      v: PROTOCOL_VERSION,
      type: 'heartbeat',
      agentId: this.agentId,
      time: this.clock.now(),
      ...fields,
    };
    try {
      await this.bus.publishHeartbeat(heartbeat);
    } catch (error) {
      this.log.error({ event: 'heartbeat.publish-failed', err: error }, 'could not publish heartbeat');
    }
  }

  private async publish(event: JobEvent): Promise<boolean> {
    try {
      await this.events.send(event);
      return true;
    } catch (error) {
      this.log.error(
        { event: 'event.publish-failed', err: error, type: event.type },
        'could not publish event',
      );
      return false;
    }
  }
}

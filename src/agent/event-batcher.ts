/**
 * Sends an agent's job events to the server in as few broker messages as order allows. Events handed in
 * during one turn of the event loop (in a burst, many jobs' events) leave together as one `events` message:
 * one publish and one confirm for the broker, one delivery for the server, instead of one each. `running`
 * and step events wait up to `EVENT_WINDOW_MS` for more, so a short job's `running`, steps and end travel
 * as one message; any other state event sends what waits at once. A lone event leaves as it is.
 *
 * Order is kept: messages are published in the order their events were handed in, on the bus's one confirm
 * channel, so the server still sees each job's events in order. Each caller's promise settles with the
 * confirm of the message that carried its event.
 */
import {
  MAX_BATCH_EVENTS,
  MAX_MESSAGE_BYTES,
  PROTOCOL_VERSION,
  type AgentMessage,
  type JobEvent,
} from '../protocol/index.js';

interface Pending {
  event: JobEvent;
  bytes: number;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** Room kept in a message for the batch's own fields around its events. */
const ENVELOPE_BYTES = 1024;

/**
 * Longest a `running` or step event waits for company. A short job's whole life after `loading` (running,
 * its steps, its end) then leaves as one message; a longer job's progress shows this much later.
 */
export const EVENT_WINDOW_MS = 10;

/**
 * Whether an event leaves at the end of this turn rather than after the window: every state but `running`.
 * `loading` claims the attempt (the agent waits for its confirm), and an end is what a client waits for and
 * what the offer's ack follows; either one takes whatever waits with it.
 */
function isUrgent(event: JobEvent): boolean {
  return event.type === 'state' && event.state !== 'running';
}

export class EventBatcher {
  private pending: Pending[] = [];
  private immediate = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly agentId: string,
    private readonly publish: (message: AgentMessage) => Promise<void>,
    private readonly maxBytes = MAX_MESSAGE_BYTES,
    private readonly windowMs = EVENT_WINDOW_MS,
  ) {}

  send(event: JobEvent): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ event, bytes: Buffer.byteLength(JSON.stringify(event)) + 1, resolve, reject });
      if (isUrgent(event) || this.windowMs === 0) this.flushSoon();
      else this.timer ??= setTimeout(() => this.flush(), this.windowMs);
    });
  }

  /** At the end of this turn, with everything waiting (the order of events is kept). */
  private flushSoon(): void {
    if (this.immediate) return;
    this.immediate = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.immediate = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const pending = this.pending;
    this.pending = [];
    let start = 0;
    while (start < pending.length) {
      let end = start;
      let bytes = ENVELOPE_BYTES;
      while (
        end < pending.length &&
        end - start < MAX_BATCH_EVENTS &&
        (end === start || bytes + pending[end]!.bytes <= this.maxBytes)
      ) {
        bytes += pending[end]!.bytes;
        end += 1;
      }
      this.sendChunk(pending.slice(start, end));
      start = end;
    }
  }

  private sendChunk(chunk: Pending[]): void {
    const message: AgentMessage =
      chunk.length === 1
        ? chunk[0]!.event
        : { v: PROTOCOL_VERSION, type: 'events', agentId: this.agentId, events: chunk.map((p) => p.event) };
    this.publish(message).then(
      () => {
        for (const item of chunk) item.resolve();
      },
      (error: unknown) => {
        for (const item of chunk) item.reject(error);
      },
    );
  }
}

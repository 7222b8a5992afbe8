/**
 * Sends an agent's job events to the server in as few broker messages as order allows. Events handed in
 * during one turn of the event loop (the executor's step and final messages usually arrive together; in a
 * burst, many jobs' events do) leave together as one `events` message: one publish and one confirm for
 * the broker, one delivery for the server, instead of one each. A lone event leaves as it is.
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

export class EventBatcher {
  private pending: Pending[] = [];
  private scheduled = false;

  constructor(
    private readonly agentId: string,
    private readonly publish: (message: AgentMessage) => Promise<void>,
    private readonly maxBytes = MAX_MESSAGE_BYTES,
  ) {}

  send(event: JobEvent): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ event, bytes: Buffer.byteLength(JSON.stringify(event)) + 1, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
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

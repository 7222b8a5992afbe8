/**
 * The executor's messages to the agent leave at the end of the turn of the event loop that made them,
 * together and in order: a short job's `loaded` and first step, and its last step and `finished`, each wake
 * the agent once instead of twice (one write on the pipe, one read, one parse). Nothing waits longer than
 * the turn: a message made before a long step leaves before the step's result comes back.
 */
import { MAX_EXECUTOR_BATCH, type ExecutorFrame, type ExecutorToAgent } from '../protocol/index.js';

export class Outbox {
  private queued: ExecutorToAgent[] = [];

  /** `write` sends one frame on the pipe (false: the pipe is gone, and what was queued is dropped). */
  constructor(private readonly write: (frame: ExecutorFrame) => boolean) {}

  send(message: ExecutorToAgent): void {
    this.queued.push(message);
    if (this.queued.length === 1) setImmediate(() => this.flush());
  }

  /** Sends what is queued now (also before the process exits). */
  flush(): void {
    const messages = this.queued;
    this.queued = [];
    for (let start = 0; start < messages.length; start += MAX_EXECUTOR_BATCH) {
      const part = messages.slice(start, start + MAX_EXECUTOR_BATCH);
      if (!this.write(part.length === 1 ? part[0]! : { type: 'batch', messages: part })) return;
    }
  }
}

/**
 * The live view of a followed job. On a terminal: a compact table of step states redrawn in place (and
 * refreshed every second so running durations count up). Elsewhere (logs, CI): one line per change.
 */
import type { JobDetail } from '../protocol/index.js';
import type { Change } from './follow.js';
import { formatCount, formatElapsed, formatTable, spanMs, stripControl } from './output.js';

export interface ProgressView {
  update(detail: JobDetail, change: Change): void;
  /** Stops refreshing and leaves the last table on screen. */
  close(): void;
}

export function createProgressView(stream: NodeJS.WriteStream): ProgressView {
  return stream.isTTY ? new RedrawView(stream) : new LineView(stream);
}

export function renderJobTable(detail: JobDetail, now = Date.now()): string {
  const header = `${stripControl(
    `job ${detail.id}  ${detail.workflow.space}/${detail.workflow.name}@${detail.workflow.version}  ${detail.state}  ${formatElapsed(spanMs(detail.startedAt ?? detail.createdAt, detail.finishedAt, now))}`,
    false,
  )}\n`;
  if (detail.steps.length === 0) return header;
  return (
    header +
    formatTable(
      ['step', 'state', 'rows', 'duration'],
      detail.steps.map((step) => [
        step.id,
        step.state,
        formatCount(step.rows),
        formatElapsed(step.durationMs ?? spanMs(step.startedAt, step.finishedAt, now)),
      ]),
    )
  );
}

class RedrawView implements ProgressView {
  private lines = 0;
  private last: JobDetail | null = null;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly stream: NodeJS.WriteStream) {
    this.timer = setInterval(() => this.draw(), 1000);
    this.timer.unref();
  }

  update(detail: JobDetail): void {
    this.last = detail;
    this.draw();
  }

  close(): void {
    clearInterval(this.timer);
    this.draw();
  }

  private draw(): void {
    if (this.last === null) return;
    const columns = this.stream.columns || 120;
    const text = renderJobTable(this.last)
      .split('\n')
      .filter((line, index, all) => index < all.length - 1 || line !== '')
      .map((line) => (line.length > columns - 1 ? `${line.slice(0, columns - 2)}…` : line));
    // Move to the start of the previous drawing and clear everything below it.
    const rewind = this.lines > 0 ? `\x1b[${this.lines}F\x1b[J` : '';
    this.stream.write(`${rewind}${text.join('\n')}\n`);
    this.lines = text.length;
  }
}

class LineView implements ProgressView {
  private jobState: string | null = null;
  private readonly stepStates = new Map<string, string>();

  constructor(private readonly stream: NodeJS.WriteStream) {}

  update(detail: JobDetail): void {
    if (detail.state !== this.jobState) {
      this.jobState = detail.state;
      const where = detail.executor
        ? ` on ${detail.agentId ?? '?'} as ${detail.executor.osUser} (uid ${detail.executor.uid})`
        : '';
      this.stream.write(`${stripControl(`job ${detail.id} ${detail.state}${where}`, false)}\n`);
    }
    for (const step of detail.steps) {
      if (this.stepStates.get(step.id) === step.state) continue;
      if (step.state === 'pending' && !this.stepStates.has(step.id)) {
        this.stepStates.set(step.id, step.state);
        continue;
      }
      this.stepStates.set(step.id, step.state);
      const facts = [
        step.rows === null ? null : `${formatCount(step.rows)} rows`,
        step.durationMs === null ? null : formatElapsed(step.durationMs),
        // A failed step's message is not repeated here: the summary at the end prints it once.
      ].filter((fact) => fact !== null);
      this.stream.write(
        `${stripControl(`step ${step.id} ${step.state}${facts.length ? ` (${facts.join(', ')})` : ''}`, false)}\n`,
      );
    }
  }

  close(): void {}
}

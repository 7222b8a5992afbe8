/**
 * A placed Dask worker's output on its way to the step's log: the agent keeps the lines since its last
 * report (bounded: the oldest are dropped first, and the next lines say how many), and each report to the
 * server carries up to `MAX_REPORT_LOG_LINES` of them. Lines of a report the server did not get go back in
 * front, so a brief outage loses nothing but what the bound drops. The same lines also go to the user's log
 * on this machine, unbounded by this.
 */
import { MAX_REPORT_LOG_LINE, MAX_REPORT_LOG_LINES } from '../protocol/index.js';

/** Lines kept between reports (about ten reports' worth). */
const MAX_KEPT_LINES = 10 * MAX_REPORT_LOG_LINES;

export class DaskWorkerOutput {
  private lines: string[] = [];
  private dropped = 0;

  /** One line of the worker's stdout or stderr. */
  add(stream: 'stdout' | 'stderr', line: string): void {
    const text = `${stream === 'stderr' ? '' : '(stdout) '}${line}`;
    this.lines.push(text.length > MAX_REPORT_LOG_LINE ? `${text.slice(0, MAX_REPORT_LOG_LINE - 1)}…` : text);
    if (this.lines.length > MAX_KEPT_LINES) {
      this.lines.shift();
      this.dropped += 1;
    }
  }

  /** The lines for the next report (with a note of dropped ones first); `putBack` them if it failed. */
  take(): string[] {
    const note = this.dropped > 0 ? [`(${this.dropped} lines of this worker's output dropped)`] : [];
    this.dropped = 0;
    const taken = [...note, ...this.lines.splice(0, MAX_REPORT_LOG_LINES - note.length)];
    return taken;
  }

  /** Lines of a report that did not reach the server, back in front of the newer ones. */
  putBack(lines: readonly string[]): void {
    this.lines.unshift(...lines);
    const excess = this.lines.length - MAX_KEPT_LINES;
    if (excess > 0) {
      this.lines.splice(0, excess);
      this.dropped += excess;
    }
  }

  get pending(): number {
    return this.lines.length;
  }
}

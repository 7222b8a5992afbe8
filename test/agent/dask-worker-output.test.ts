import { describe, expect, it } from 'vitest';
import { DaskWorkerOutput } from '../../src/agent/dask-worker-output.js';
import { MAX_REPORT_LOG_LINE, MAX_REPORT_LOG_LINES } from '../../src/protocol/index.js';

describe('a placed Dask worker’s output on its way to the step log', () => {
  it('hands out at most one report’s lines at a time, in order, each once', () => {
    const output = new DaskWorkerOutput();
    for (let i = 0; i < MAX_REPORT_LOG_LINES + 5; i += 1) output.add('stderr', `line ${i}`);
    const first = output.take();
    expect(first).toHaveLength(MAX_REPORT_LOG_LINES);
    expect(first[0]).toBe('line 0');
    expect(output.take()).toEqual(['line 200', 'line 201', 'line 202', 'line 203', 'line 204']);
    expect(output.take()).toEqual([]);
  });

  it('puts back the lines of a report that failed, ahead of newer ones', () => {
    const output = new DaskWorkerOutput();
    output.add('stderr', 'a');
    output.add('stdout', 'b');
    const failed = output.take();
    output.add('stderr', 'c');
    output.putBack(failed);
    expect(output.take()).toEqual(['a', '(stdout) b', 'c']);
  });

  it('keeps memory bounded: drops the oldest lines, says how many, and cuts long lines', () => {
    const output = new DaskWorkerOutput();
    const total = 20 * MAX_REPORT_LOG_LINES;
    for (let i = 0; i < total; i += 1) output.add('stderr', `line ${i}`);
    output.add('stderr', 'x'.repeat(MAX_REPORT_LOG_LINE * 3));
    const kept = 10 * MAX_REPORT_LOG_LINES;
    expect(output.pending).toBe(kept);
    const first = output.take();
    expect(first[0]).toBe(`(${total + 1 - kept} lines of this worker's output dropped)`);
    expect(first[1]).toBe(`line ${total + 1 - kept}`);
    let last = first;
    while (output.pending > 0) last = output.take();
    expect(last.at(-1)!.length).toBe(MAX_REPORT_LOG_LINE);
  });
});

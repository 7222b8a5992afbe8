/**
 * The executor's live log shipper against a real growing file and a slow receiver: one request at a time,
 * each at most a chunk, offsets contiguous, nothing past the head (half the step log limit), whole UTF-8
 * characters, and a receiver's gap answer resent from what it has.
 */
import { appendFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LiveLogShipper, completeUtf8Length } from '../../src/executor/live-logs.js';
import type { AppendLogOutcome } from '../../src/executor/server-client.js';
import { until } from '../support/wait.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'flog-shipper-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

class SlowSink {
  received = new Map<string, Buffer>();
  inFlight = 0;
  mostInFlight = 0;
  largest = 0;
  requests = 0;
  /** Answer the next request with a gap (the server lost what it had). */
  loseAt: number | undefined;

  async appendLog(stepId: string, stream: string, offset: number, bytes: Buffer): Promise<AppendLogOutcome> {
    this.inFlight++;
    this.requests++;
    this.mostInFlight = Math.max(this.mostInFlight, this.inFlight);
    this.largest = Math.max(this.largest, bytes.length);
    await new Promise((resolve) => setTimeout(resolve, 5));
    this.inFlight--;
    const key = `${stepId}/${stream}`;
    let have = this.received.get(key) ?? Buffer.alloc(0);
    if (this.loseAt !== undefined && have.length > this.loseAt) {
      have = have.subarray(0, this.loseAt);
      this.loseAt = undefined;
    }
    if (offset > have.length) {
      this.received.set(key, have);
      return { kind: 'mismatch', size: have.length };
    }
    const next = Buffer.concat([have.subarray(0, offset), bytes]);
    this.received.set(key, next.length >= have.length ? next : have);
    return { kind: 'stored', size: Math.max(next.length, have.length) };
  }
}

describe('LiveLogShipper', () => {
  it('ships a fast-growing log one bounded request at a time, up to the head, and resends after a gap', async () => {
    const stdout = path.join(dir, 'talk.stdout.log');
    const stderr = path.join(dir, 'talk.stderr.log');
    await writeFile(stdout, '');
    const sink = new SlowSink();
    const shipper = new LiveLogShipper(sink, { limitBytes: 256 * 1024, intervalMs: 10, chunkBytes: 4096 });
    const ended = shipper.watch({ stepId: 'talk', stdoutPath: stdout, stderrPath: stderr });
    // 200 KiB written far faster than the sink takes it; only the first 128 KiB (the head) go live.
    const line = 'ünïcode line of output\n';
    let written = '';
    for (let i = 0; i < 2000 && Buffer.byteLength(written) < 200 * 1024; i++) {
      const piece = line.repeat(5);
      written += piece;
      await appendFile(stdout, piece);
      if (i === 100) sink.loseAt = 1000;
    }
    ended();
    const head = Buffer.from(written).subarray(0, 128 * 1024);
    await until('the head shipped', () => sink.received.get('talk/stdout')?.length === head.length, 30_000);
    await shipper.stop();
    expect(sink.received.get('talk/stdout')!.equals(head)).toBe(true);
    expect(sink.mostInFlight).toBe(1);
    expect(sink.largest).toBeLessThanOrEqual(4096);
    expect(sink.received.has('talk/stderr')).toBe(false);
  });

  it('gives up for good when the server refuses (an older server without the route)', async () => {
    const stdout = path.join(dir, 'a.stdout.log');
    await writeFile(stdout, 'hello\n');
    let calls = 0;
    const shipper = new LiveLogShipper(
      {
        appendLog: async () => {
          calls++;
          return { kind: 'refused', status: 404 };
        },
      },
      { limitBytes: 4096, intervalMs: 5 },
    );
    shipper.watch({ stepId: 'a', stdoutPath: stdout, stderrPath: path.join(dir, 'a.stderr.log') });
    await until('a first request', () => calls > 0);
    await appendFile(stdout, 'more\n');
    await new Promise((resolve) => setTimeout(resolve, 50));
    await shipper.stop();
    expect(calls).toBe(1);
  });
});

describe('completeUtf8Length', () => {
  it('cuts a character split at the end, and only that', () => {
    const text = Buffer.from('aé€😀');
    expect(completeUtf8Length(text, text.length)).toBe(text.length);
    expect(completeUtf8Length(text, text.length - 1)).toBe(text.length - 4);
    expect(completeUtf8Length(text, 2)).toBe(1);
    expect(completeUtf8Length(text, 3)).toBe(3);
    expect(completeUtf8Length(text, 4)).toBe(3);
  });
});

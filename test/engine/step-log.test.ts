/**
 * Bounded step logs: the writer on its own (exact head, marker and tail for any chunking), and real steps
 * whose output goes through the FIFOs into it. A step stopped before its process started still has its
 * (empty) logs, which the run reports and the executor uploads.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { closeSqlAnalyzer } from '../../src/engine/index.js';
import {
  STEP_LOG_MARKER_MAX_BYTES,
  STEP_LOG_MARKER_PATTERN,
  StepLogWriter,
  stepLogMarker,
} from '../../src/engine/step-log.js';
import { runProcess } from '../../src/engine/processes.js';
import { makeJobDirs, startRun } from './helpers.js';

afterAll(async () => {
  await closeSqlAnalyzer();
});

/** Bytes 0..length-1 of a pattern no two nearby positions share, so a misplaced byte shows. */
function pattern(length: number): Buffer {
  const buffer = Buffer.alloc(length);
  for (let i = 0; i < length; i++) buffer[i] = 0x21 + ((i * 7 + Math.floor(i / 89)) % 90);
  return buffer;
}

async function store(data: Buffer, limit: number, chunkSizes: number[], file: string): Promise<Buffer> {
  const writer = await StepLogWriter.create(file, limit);
  let offset = 0;
  for (let i = 0; offset < data.length; i++) {
    const size = chunkSizes[i % chunkSizes.length]!;
    const chunk = data.subarray(offset, offset + size);
    offset += size;
    if (!writer.write(chunk)) await new Promise((resolve) => writer.once('drain', resolve));
  }
  const summary = await writer.finish();
  const stored = await readFile(file);
  expect(summary.storedBytes).toBe(stored.length);
  expect(summary.receivedBytes).toBe(data.length);
  return stored;
}

describe('step log writer', () => {
  it('stores a stream within the limit byte for byte, and a longer one as head, marker and tail', async (context) => {
    const dirs = await makeJobDirs(context.task.name);
    try {
      const limit = 4096;
      const file = path.join(dirs.workDir, 'out.log');
      for (const length of [0, 1, 2047, 2048, 4095, 4096]) {
        const data = pattern(length);
        expect((await store(data, limit, [1000], file)).equals(data)).toBe(true);
      }
      for (const [length, chunks] of [
        [4097, [4097]],
        [10_000, [1]],
        [10_000, [333, 7, 4096, 9000]],
        [1_000_000, [65_536]],
        [1_000_000, [3000, 17]],
      ] as [number, number[]][]) {
        const data = pattern(length);
        const stored = await store(data, limit, chunks, file);
        const marker = stepLogMarker(length - 4096, 2048, 2048, true);
        expect(stored.length).toBe(4096 + marker.length);
        expect(stored.length).toBeLessThanOrEqual(limit + STEP_LOG_MARKER_MAX_BYTES);
        expect(stored.subarray(0, 2048).equals(data.subarray(0, 2048))).toBe(true);
        expect(stored.subarray(2048, 2048 + marker.length).toString()).toBe(marker);
        expect(stored.subarray(2048 + marker.length).equals(data.subarray(length - 2048))).toBe(true);
        expect(STEP_LOG_MARKER_PATTERN.exec(stored.toString('latin1'))?.[1]).toBe(String(length - 4096));
      }
      // The ring beside the log is gone once the log is complete.
      expect(await readdir(dirs.workDir)).toEqual(['out.log']);
    } finally {
      await dirs.cleanup();
    }
  });

  it('puts the marker on a line of its own only when the head did not end one', async (context) => {
    const dirs = await makeJobDirs(context.task.name);
    try {
      const file = path.join(dirs.workDir, 'lines.log');
      const lines = Buffer.from('line\n'.repeat(2000));
      const stored = (await store(lines, 2000, [4096], file)).toString();
      expect(stored).toBe(
        `${'line\n'.repeat(200)}[steward: 8000 bytes dropped here; this log keeps the first 1000 and the last 1000 bytes]\n${'line\n'.repeat(200)}`,
      );
    } finally {
      await dirs.cleanup();
    }
  });
});

describe('step output capture', () => {
  it('keeps the head, a marker and the tail of a step writing 200 times its limit, with no file left beside the logs', async (context) => {
    const dirs = await makeJobDirs(context.task.name);
    try {
      const limit = 1024 * 1024;
      // 200 MiB of numbered lines on stdout, a little on stderr through /dev/stderr (a FIFO accepts the open).
      const run = startRun(
        `name: loud
steps:
  - id: loud
    shell: |
      echo "to stderr" > /dev/stderr
      seq 1 30000000
`,
        dirs,
        {},
        { logLimitBytes: limit },
      );
      const result = await run.result;
      expect(result.state, JSON.stringify(result.error)).toBe('succeeded');
      const stdout = result.logs.find((log) => log.stepId === 'loud' && log.stream === 'stdout')!;
      const stderr = result.logs.find((log) => log.stepId === 'loud' && log.stream === 'stderr')!;
      expect(await readFile(stderr.path, 'utf8')).toBe('to stderr\n');
      const text = await readFile(stdout.path, 'latin1');
      expect((await stat(stdout.path)).size).toBeLessThanOrEqual(limit + STEP_LOG_MARKER_MAX_BYTES);
      const total = (await import('node:child_process')).execSync('seq 1 30000000 | wc -c').toString().trim();
      const marker = STEP_LOG_MARKER_PATTERN.exec(text);
      expect(marker?.[1]).toBe(String(Number(total) - limit));
      expect(text.startsWith('1\n2\n3\n')).toBe(true);
      expect(text.endsWith('29999999\n30000000\n')).toBe(true);
      const logDir = path.dirname(stdout.path);
      expect((await readdir(logDir)).sort()).toEqual(['loud.stderr.log', 'loud.stdout.log']);
    } finally {
      await dirs.cleanup();
    }
  }, 120_000);

  it('stores a step failure message from the tail of a capped stderr', async (context) => {
    const dirs = await makeJobDirs(context.task.name);
    try {
      const run = startRun(
        `name: failing
steps:
  - id: noisy
    shell: |
      head -c 5000000 /dev/zero >&2
      echo "the real reason" >&2
      exit 3
`,
        dirs,
        {},
        { logLimitBytes: 64 * 1024 },
      );
      const result = await run.result;
      expect(result.state).toBe('failed');
      expect(result.error?.message).toContain('exited with code 3');
      expect(result.error?.message).toContain('the real reason');
    } finally {
      await dirs.cleanup();
    }
  });

  it('ends a step whose escaped background process keeps its stdout open', async (context) => {
    const dirs = await makeJobDirs(context.task.name);
    try {
      const started = Date.now();
      const run = startRun(
        `name: escapee
steps:
  - id: escapee
    shell: |
      echo before
      setsid sh -c 'sleep 30' &
      echo after
`,
        dirs,
      );
      const result = await run.result;
      expect(result.state).toBe('succeeded');
      expect(Date.now() - started).toBeLessThan(15_000);
      const stdout = result.logs.find((log) => log.stream === 'stdout')!;
      expect(await readFile(stdout.path, 'utf8')).toBe('before\nafter\n');
    } finally {
      await dirs.cleanup();
    }
  });

  it('falls back to socket pairs where mkfifo cannot run, and still bounds the log', async (context) => {
    const dirs = await makeJobDirs(context.task.name);
    const path0 = process.env.PATH;
    try {
      // The executor's PATH, where mkfifo is looked up, has none; the step gets its own.
      process.env.PATH = '/nonexistent';
      const run = startRun(
        `name: nofifo
steps:
  - id: nofifo
    env: {PATH: "${path0}"}
    shell: |
      ls -l /proc/self/fd/ >&2
      head -c 300000 /dev/zero | tr '\\0' y
      echo
      echo done
`,
        dirs,
        {},
        { logLimitBytes: 4096, shell: '/bin/sh' },
      );
      const result = await run.result;
      process.env.PATH = path0;
      expect(result.state, JSON.stringify(result.error)).toBe('succeeded');
      const stderr = await readFile(result.logs.find((log) => log.stream === 'stderr')!.path, 'utf8');
      expect(stderr).toMatch(/socket:\[\d+\]/);
      const stdout = await readFile(result.logs.find((log) => log.stream === 'stdout')!.path, 'utf8');
      expect(stdout).toBe(
        `${'y'.repeat(2048)}${stepLogMarker(300006 - 4096, 2048, 2048, true)}${'y'.repeat(2042)}\ndone\n`,
      );
    } finally {
      process.env.PATH = path0;
      await dirs.cleanup();
    }
  });
});

describe('a step stopped before it started', () => {
  it('has its two logs, empty, and starts nothing', async () => {
    const dirs = await makeJobDirs('stopped before start');
    try {
      const controller = new AbortController();
      controller.abort();
      const marker = path.join(dirs.workDir, 'ran');
      const outcome = await runProcess({
        argv: ['/bin/sh', '-c', `touch ${marker}`],
        cwd: dirs.workDir,
        env: { PATH: '/usr/bin:/bin' },
        stdoutPath: path.join(dirs.workDir, 'step.stdout.log'),
        stderrPath: path.join(dirs.workDir, 'step.stderr.log'),
        signal: controller.signal,
        killGraceMs: 1000,
      });
      expect(outcome.kind).toBe('stopped');
      for (const stream of ['stdout', 'stderr'])
        expect((await stat(path.join(dirs.workDir, `step.${stream}.log`))).size).toBe(0);
      expect(await stat(marker).catch(() => undefined)).toBeUndefined();
    } finally {
      await dirs.cleanup();
    }
  });

  it('is stopped when the stop comes while its process is being started', async () => {
    const dirs = await makeJobDirs('stopped while starting');
    try {
      const controller = new AbortController();
      const started = Date.now();
      const outcome = await runProcess({
        argv: ['/bin/sleep', '30'],
        cwd: dirs.workDir,
        env: { PATH: '/usr/bin:/bin' },
        stdoutPath: path.join(dirs.workDir, 'step.stdout.log'),
        stderrPath: path.join(dirs.workDir, 'step.stderr.log'),
        signal: controller.signal,
        killGraceMs: 1000,
        // The stop lands after every check before the spawn and before the step listens for it.
        spawnWrapper: (start) => {
          const child = start();
          controller.abort();
          return child;
        },
      });
      expect(outcome.kind).toBe('stopped');
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await dirs.cleanup();
    }
  });
});

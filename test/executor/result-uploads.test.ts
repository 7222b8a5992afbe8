/**
 * A run's uploads against a real local HTTP server: several at once, a table's two formats together, and a
 * failure that stops new uploads but is reported only once the started ones have ended.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { RunResult } from '../../src/engine/index.js';
import { uploadRun } from '../../src/executor/result-uploads.js';
import { ServerClient } from '../../src/executor/server-client.js';
import { freePort } from '../support/steward.js';

interface Arrival {
  url: string;
  body: string;
  answer: (status?: number) => void;
}

const servers: Server[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

/** A server that hands each complete request to the test, which answers it when it chooses. */
async function holdingServer(onRequest: (arrival: Arrival) => void): Promise<string> {
  const port = await freePort();
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    let body = '';
    request.on('data', (chunk: Buffer) => (body += chunk.toString()));
    request.on('end', () =>
      onRequest({
        url: decodeURIComponent(request.url ?? ''),
        body,
        answer: (status = 204) => {
          response.statusCode = status;
          response.setHeader('content-type', 'application/json');
          response.end(status === 204 ? undefined : JSON.stringify({ error: { message: 'disk full' } }));
        },
      }),
    );
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return `http://127.0.0.1:${port}`;
}

/** A succeeded run with `tables` output tables (files holding their own names) and one step's two logs. */
async function runWith(tables: string[]): Promise<RunResult> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'steward-uploads-'));
  dirs.push(dir);
  const file = async (name: string) => {
    const target = path.join(dir, name);
    await writeFile(target, `contents of ${name}`);
    return target;
  };
  return {
    state: 'succeeded',
    logs: [
      { stepId: 'script', stream: 'stdout', path: await file('script.stdout.log') },
      { stepId: 'script', stream: 'stderr', path: await file('script.stderr.log') },
    ],
    outputs: await Promise.all(
      tables.map(async (name) => ({
        name,
        kind: 'table' as const,
        rows: 1,
        parquetPath: await file(`${name}.parquet`),
        csvPath: await file(`${name}.csv`),
      })),
    ),
  };
}

function resultName(url: string): string {
  return /\/(results|logs)\/([^?]*)/.exec(url)![2]!;
}

describe('result uploads', () => {
  it('uploads several files at once, at most the concurrency, logs first, both formats of every table', async () => {
    const inFlight = new Set<string>();
    let most = 0;
    const completed: string[] = [];
    const bodies = new Map<string, string>();
    const held: { name: string; arrival: Arrival }[] = [];
    const url = await holdingServer((arrival) => {
      const name = resultName(arrival.url) + (/format=(\w+)/.exec(arrival.url)?.[1] ?? '');
      bodies.set(name, arrival.body);
      inFlight.add(name);
      most = Math.max(most, inFlight.size);
      // Answered only once three are waiting (or all that can still come): proof they run at once.
      const release = () => {
        for (const waiting of [...held]) {
          inFlight.delete(waiting.name);
          completed.push(waiting.name);
          waiting.arrival.answer();
        }
        held.length = 0;
      };
      held.push({ name, arrival });
      if (held.length >= 3 || completed.length + held.length >= 8) release();
    });
    const client = new ServerClient(url, 'j1', 'stj_token');
    await uploadRun(client, await runWith(['a', 'b', 'c']), 3);

    expect(most).toBe(3);
    expect(completed).toHaveLength(8);
    for (const table of ['a', 'b', 'c']) {
      expect(bodies.get(`${table}csv`)).toBe(`contents of ${table}.csv`);
      expect(bodies.get(`${table}parquet`)).toBe(`contents of ${table}.parquet`);
    }
    expect(bodies.get('script/stdout')).toBe('contents of script.stdout.log');
    // Logs go first: both are in the first group.
    expect(completed.slice(0, 3)).toEqual(expect.arrayContaining(['script/stderr', 'script/stdout']));
  });

  it("sends a table's two formats at once by default: three tables in one round", async () => {
    const held: Arrival[] = [];
    const url = await holdingServer((arrival) => {
      held.push(arrival);
      // Nothing is answered until all eight (two logs, three tables in two formats) are in flight together.
      if (held.length === 8) for (const waiting of held) waiting.answer();
    });
    await uploadRun(new ServerClient(url, 'j1', 'stj_token'), await runWith(['a', 'b', 'c']));
    expect(
      held.map((arrival) => resultName(arrival.url) + (/format=(\w+)/.exec(arrival.url)?.[1] ?? '')).sort(),
    ).toEqual(['acsv', 'aparquet', 'bcsv', 'bparquet', 'ccsv', 'cparquet', 'script/stderr', 'script/stdout']);
  });

  it('starts nothing after a failure and rejects only once the started uploads have ended', async () => {
    const arrived: string[] = [];
    let slow: Arrival | undefined;
    let slowAnswered = false;
    const url = await holdingServer((arrival) => {
      const name = resultName(arrival.url);
      arrived.push(name);
      if (name === 'script/stdout') {
        slow = arrival;
        return;
      }
      // The second upload fails while the first is still in flight.
      arrival.answer(500);
    });
    const client = new ServerClient(url, 'j1', 'stj_token', { retryForMs: 0 });
    let settled = false;
    const upload = uploadRun(client, await runWith(['a', 'b']), 2).finally(() => (settled = true));
    const outcome = upload.catch((error: unknown) => error);
    // Positive signal: the failing upload has been answered; give its rejection a turn to be seen.
    await expect.poll(() => arrived.length).toBe(2);
    await new Promise((resolve) => setImmediate(resolve));
    expect(settled).toBe(false);
    slowAnswered = true;
    slow!.answer();
    const error = await outcome;
    expect(slowAnswered).toBe(true);
    expect(String(error)).toMatch(/disk full/);
    // Nothing after the failure: neither table was started. The two logs start together, so
    // they may reach the server in either order.
    expect([...arrived].sort()).toEqual(['script/stderr', 'script/stdout']);
  });

  it('uploads only the logs of a run that failed', async () => {
    const arrived: string[] = [];
    const url = await holdingServer((arrival) => {
      arrived.push(resultName(arrival.url));
      arrival.answer();
    });
    const run = await runWith(['a']);
    await uploadRun(new ServerClient(url, 'j1', 'stj_token'), {
      ...run,
      state: 'failed',
      error: { code: 'STEWARD_STEP_FAILED', message: 'x' },
    });
    expect(arrived.sort()).toEqual(['script/stderr', 'script/stdout']);
  });
});

/**
 * The executor's HTTP client against a real local HTTP server that is down, then overloaded, then up: the
 * situation of a job whose server dies behind a load balancer while another one takes over.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ServerClient } from '../../src/executor/server-client.js';
import { StewardError } from '../../src/protocol/index.js';
import { freePort } from '../support/steward.js';

type Handler = (request: IncomingMessage, body: string, response: ServerResponse) => void;

const servers: Server[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function listen(port: number, handler: Handler): Promise<Server> {
  const server = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk: Buffer) => (body += chunk.toString()));
    request.on('end', () => handler(request, body, response));
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return server;
}

const WORKFLOW = {
  jobId: 'j1',
  attempt: 1,
  user: 'alice',
  source: 'name: x\nsteps: []\n',
  format: 'yaml',
  params: {},
  assets: [],
};

describe('executor server client', () => {
  it('retries a refused connection and 503 answers until a server accepts, then returns its answer', async () => {
    const port = await freePort();
    const client = new ServerClient(`http://127.0.0.1:${port}`, 'j1', 'stj_token', { initialBackoffMs: 50 });
    const seen: string[] = [];
    // Nothing listens yet: the first attempts are refused. A server that answers 503 comes up after 300 ms;
    // once it has refused two requests a healthy one replaces it (by count, not by time: the client's
    // backoff must not be able to skip the overloaded server).
    const started = Date.now();
    setTimeout(() => {
      let refused = 0;
      const overloaded = listen(port, (request, _body, response) => {
        seen.push(`503 ${request.url}`);
        response.writeHead(503, { connection: 'close' }).end('{"error":{"code":"STEWARD_UNAVAILABLE"}}');
        refused += 1;
        if (refused !== 2) return;
        response.on('finish', () => {
          void overloaded.then((server) => {
            server.closeAllConnections();
            server.close(() => {
              void listen(port, (next, _nextBody, answer) => {
                seen.push(`200 ${next.url} ${next.headers.authorization}`);
                answer.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(WORKFLOW));
              });
            });
          });
        });
      });
    }, 300);
    const workflow = await client.workflow();
    expect(workflow).toEqual(WORKFLOW);
    expect(seen.filter((line) => line.startsWith('503'))).toHaveLength(2);
    expect(seen.filter((line) => line.startsWith('200'))).toEqual([
      '200 /api/exec/jobs/j1/workflow Bearer stj_token',
    ]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
  });

  it('sends the whole file again when an upload is retried', async () => {
    const port = await freePort();
    const dir = await mkdtemp(path.join(os.tmpdir(), 'steward-client-'));
    dirs.push(dir);
    const file = path.join(dir, 'out.csv');
    await writeFile(file, 'x\n1\n2\n');
    const bodies: string[] = [];
    let calls = 0;
    await listen(port, (request, body, response) => {
      calls++;
      bodies.push(body);
      // The first attempt reaches a proxy whose upstream just died.
      response.writeHead(calls === 1 ? 502 : 200, { 'content-type': 'application/json' }).end('{}');
    });
    const client = new ServerClient(`http://127.0.0.1:${port}`, 'j1', 'stj_token', { initialBackoffMs: 20 });
    await client.uploadResult('out', file, { kind: 'table', format: 'csv', rows: 2 });
    expect(bodies).toEqual(['x\n1\n2\n', 'x\n1\n2\n']);
  });

  it('does not retry answers that another server would give too (404, 401)', async () => {
    const port = await freePort();
    let calls = 0;
    await listen(port, (_request, _body, response) => {
      calls++;
      response
        .writeHead(401, { 'content-type': 'application/json' })
        .end('{"error":{"code":"STEWARD_UNAUTHENTICATED","message":"invalid job token"}}');
    });
    const client = new ServerClient(`http://127.0.0.1:${port}`, 'j1', 'stj_bad', { initialBackoffMs: 20 });
    const error = await client.workflow().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StewardError);
    expect((error as StewardError).code).toBe('STEWARD_UNAUTHENTICATED');
    expect(calls).toBe(1);
  });

  it('gives up after retryForMs with an error that says how long it tried', async () => {
    const port = await freePort();
    const client = new ServerClient(`http://127.0.0.1:${port}`, 'j1', 'stj_token', {
      retryForMs: 700,
      initialBackoffMs: 50,
    });
    const started = Date.now();
    const error = await client.workflow().catch((e: unknown) => e);
    const elapsed = Date.now() - started;
    expect((error as StewardError).code).toBe('STEWARD_SERVER_UNREACHABLE');
    expect((error as StewardError).message).toMatch(/after \d+ attempt\(s\) in 1s: .*ECONNREFUSED/);
    expect(elapsed).toBeGreaterThanOrEqual(300);
    expect(elapsed).toBeLessThan(3000);
  });
  it('asks again for an attempt another agent holds, then gives up with STEWARD_ATTEMPT_CLAIMED', async () => {
    const port = await freePort();
    let refusals = 2;
    const urls: string[] = [];
    await listen(port, (request, _body, response) => {
      urls.push(request.url ?? '');
      if (request.headers.authorization === 'Bearer stj_old' && refusals <= 0) {
        response.writeHead(401, { 'content-type': 'application/json' });
        response.end(
          JSON.stringify({ error: { code: 'STEWARD_UNAUTHENTICATED', message: 'invalid job token' } }),
        );
        return;
      }
      if (refusals-- > 0 || request.url?.includes('agent=busy')) {
        response.writeHead(409, { 'content-type': 'application/json' });
        response.end(
          JSON.stringify({ error: { code: 'STEWARD_ATTEMPT_CLAIMED', message: 'held by agent b' } }),
        );
        return;
      }
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify(WORKFLOW));
    });
    const client = new ServerClient(`http://127.0.0.1:${port}`, 'j1', 'stj_token');
    // The holder handed the attempt back while the first two fetches were refused: the third gets it.
    await expect(client.workflow('agent-a')).resolves.toEqual(WORKFLOW);
    expect(urls).toEqual(Array(3).fill('/api/exec/jobs/j1/workflow?agent=agent-a'));
    // A holder that keeps it: six fetches over about 6 s, then the refusal is the answer.
    urls.length = 0;
    const started = Date.now();
    const refused = await client.workflow('busy').catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(StewardError);
    expect((refused as StewardError).code).toBe('STEWARD_ATTEMPT_CLAIMED');
    expect(urls).toHaveLength(6);
    expect(Date.now() - started).toBeGreaterThanOrEqual(6000);
    // Refused, then the attempt was given up for a new one (its token no longer works): still the refusal.
    urls.length = 0;
    refusals = 1;
    const superseded = new ServerClient(`http://127.0.0.1:${port}`, 'j1', 'stj_old');
    const gone = await superseded.workflow('gone').catch((error: unknown) => error);
    expect((gone as StewardError).code).toBe('STEWARD_ATTEMPT_CLAIMED');
    expect(urls).toHaveLength(2);
  }, 30_000);
});

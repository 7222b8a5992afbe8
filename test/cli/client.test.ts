/**
 * The CLI's HTTP client against a real local HTTP server standing in for a load balancer whose server dies:
 * reads are sent again after a gateway error or a broken connection; writes are not (unless the command made
 * them safe to repeat); a refused connection fails at once.
 */
import { readdir, readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ApiClient } from '../../src/cli/client.js';
import { CliError } from '../../src/cli/failures.js';
import { freePort, repoRoot } from '../support/steward.js';

const cliDir = path.join(repoRoot, 'src', 'cli');

const servers: Server[] = [];

afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

async function serve(handler: (request: IncomingMessage, response: ServerResponse) => void): Promise<string> {
  const port = await freePort();
  const server = createServer(handler);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return `http://127.0.0.1:${port}`;
}

const ok = (response: ServerResponse): void => {
  response.writeHead(200, { 'content-type': 'application/json' });
  response.end('{"jobs":[]}');
};

describe('CLI client retries', () => {
  it('sends a read again after 502/503/504 answers and a broken connection, then returns the answer', async () => {
    const seen: string[] = [];
    const url = await serve((request, response) => {
      seen.push(`${request.method} ${request.url}`);
      if (seen.length === 1) {
        request.socket.destroy();
        return;
      }
      if (seen.length <= 4) {
        response.writeHead([502, 503, 504][seen.length - 2]!);
        response.end();
        return;
      }
      ok(response);
    });
    const client = new ApiClient({ server: url, token: 't' });
    const response = await client.send('GET', '/api/jobs');
    expect(response.status).toBe(200);
    expect(seen).toEqual(Array(5).fill('GET /api/jobs'));
  });

  it('does not send a write again on its own', async () => {
    let requests = 0;
    const url = await serve((_request, response) => {
      requests += 1;
      response.writeHead(502);
      response.end();
    });
    const client = new ApiClient({ server: url, token: 't' });
    await expect(client.send('POST', '/api/jobs/x/cancel')).rejects.toBeInstanceOf(CliError);
    expect(requests).toBe(1);
  });

  it('fails a read at once when nothing listens', async () => {
    const client = new ApiClient({ server: `http://127.0.0.1:${await freePort()}`, token: 't' });
    const started = Date.now();
    const failure = await client.send('GET', '/api/jobs').catch((error: unknown) => error);
    expect((failure as CliError).code).toBe('STEWARD_SERVER_UNREACHABLE');
    expect(Date.now() - started).toBeLessThan(2000);
  });
});

describe('CLI client calls by route name', () => {
  it('takes method and path from the route table, encodes path parameters and parses the answer with the route schema', async () => {
    const seen: string[] = [];
    const url = await serve((request, response) => {
      seen.push(`${request.method} ${request.url}`);
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ id: 'agent/1', action: 'drain' }));
    });
    const client = new ApiClient({ server: url, token: 't' });
    const answer = await client.call('drainAgent', { params: { id: 'agent/1' } });
    expect(answer).toEqual({ id: 'agent/1', action: 'drain' });
    const jobs = client.call('listJobs', { query: { state: 'running', limit: 5 } });
    await expect(jobs).rejects.toMatchObject({ code: 'STEWARD_INTERNAL' });
    await expect(jobs).rejects.toThrow(/unexpected response from the server for GET \/api\/jobs: jobs: /);
    expect(seen).toEqual(['POST /api/agents/agent%2F1/drain', 'GET /api/jobs?state=running&limit=5']);
  });

  it('gives the raw response of a route without a JSON schema (downloads, logs, event streams)', async () => {
    const url = await serve((_request, response) => {
      response.writeHead(200, { 'content-type': 'text/plain' });
      response.end('line\n');
    });
    const client = new ApiClient({ server: url, token: 't' });
    const response = await client.call('jobLog', { params: { id: 'j', step: 's', stream: 'stdout' } });
    expect(await response.text()).toBe('line\n');
  });

  it('leaves no hand-written API path in the CLI: every request names its route', async () => {
    const files = (await readdir(cliDir, { recursive: true })).filter((file) => file.endsWith('.ts'));
    const offenders: string[] = [];
    for (const file of files) {
      const text = await readFile(path.join(cliDir, file), 'utf8');
      if (/['`]\/api\//.test(text)) offenders.push(file);
    }
    expect(offenders).toEqual([]);
  });
});

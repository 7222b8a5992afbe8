/**
 * The CLI's HTTP client against a real local HTTP server standing in for a load balancer whose server dies:
 * reads are sent again after a gateway error or a broken connection; writes are not (unless the command made
 * them safe to repeat); a refused connection fails at once.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { ApiClient } from '../../src/cli/client.js';
import { CliError } from '../../src/cli/failures.js';
import { freePort } from '../support/steward.js';

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

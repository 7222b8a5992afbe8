import { generateKeyPairSync } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProber } from '../../src/agent/server-probe.js';
import { publicKeyFingerprint } from '../../src/protocol/index.js';
import { until } from '../support/wait.js';

const publicKeyPem = generateKeyPairSync('ed25519')
  .publicKey.export({ type: 'spki', format: 'pem' })
  .toString();
const logger = pino({ level: 'silent' });
let server: Server;
let url = '';
let healthy = true;

beforeAll(async () => {
  server = createServer((request, response) => {
    response.statusCode = request.url === '/api/health' && healthy ? 200 : 503;
    response.end('{}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

describe('what the agent reports about itself in heartbeats', () => {
  it('reports the fingerprint of the server key it trusts, the one signed offers carry as keyId', () => {
    const prober = new ServerProber([publicKeyPem], undefined, 1000, logger);
    expect(prober.report()).toEqual({ keyFingerprints: [publicKeyFingerprint(publicKeyPem)] });
  });

  it("probes the server's URL in the background and reports the last answer", async () => {
    const prober = new ServerProber([publicKeyPem], url, 0, logger);
    const ok = await until('a successful probe', () => prober.report().serverProbe, 10_000, 20);
    expect(ok).toEqual({ url, ok: true });
    healthy = false;
    const failed = await until(
      'a failed probe',
      () => (prober.report().serverProbe?.ok === false ? prober.report().serverProbe : undefined),
      10_000,
      20,
    );
    expect(failed?.error).toMatch(/503/);
  });

  it('reports a URL that does not answer, with the reason, and learns the URL from offers when none is set', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const prober = new ServerProber([publicKeyPem], undefined, 0, logger);
    expect(prober.report().serverProbe).toBeUndefined();
    prober.learnUrl(`http://127.0.0.1:${port}`);
    const probe = await until('a probe of the learnt URL', () => prober.report().serverProbe, 10_000, 20);
    expect(probe).toMatchObject({ url: `http://127.0.0.1:${port}`, ok: false });
    expect(probe.error).toMatch(/ECONNREFUSED/);
  });
});

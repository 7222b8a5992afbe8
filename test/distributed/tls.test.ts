/**
 * Server and agent reach the broker over amqps:// only, checking the broker's certificate against a CA and
 * showing a client certificate (the broker, a private node with a TLS listener, refuses clients without
 * one). A broker certificate that the configured CA did not sign is refused with a clear error.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile } from 'node:fs/promises';
import { AmqpBus } from '../../src/bus/index.js';
import { readLogRecords } from '../support/logs.js';
import { makeCertificates, type Certificates } from '../support/certificates.js';
import { Cluster } from '../support/distributed.js';
import { OsUsers } from '../support/os-users.js';
import { PrivateBroker } from '../support/private-broker.js';
import { isRoot } from '../support/steward.js';

const NOOP = `name: noop
steps:
  - id: one
    sql: SELECT 1 AS x
outputs: [one]
`;

let certs: Certificates | undefined;
let broker: PrivateBroker | undefined;
let cluster: Cluster | undefined;
const osUsers = new OsUsers();

beforeAll(async () => {
  certs = await makeCertificates();
  broker = await PrivateBroker.create({
    tls: { ca: certs.ca, cert: certs.serverCert, key: certs.serverKey },
  });
  await broker.start();
}, 120_000);

afterAll(async () => {
  await cluster?.destroy();
  await broker?.destroy();
  await certs?.cleanup();
  await osUsers.cleanup();
}, 60_000);

/** Connects a bus and returns the first connection failure it reports, then gives up. */
async function firstFailure(options: ConstructorParameters<typeof AmqpBus>[0]): Promise<Error> {
  let resolveFailure!: (error: Error) => void;
  const failure = new Promise<Error>((resolve) => (resolveFailure = resolve));
  const bus = new AmqpBus({
    ...options,
    onConnectionEvent: (event) => {
      if (event.type === 'failed') resolveFailure(event.error as Error);
    },
  });
  const connecting = bus.connect().catch(() => {});
  const error = await failure;
  expect(bus.connected).toBe(false);
  await bus.close();
  await connecting;
  return error;
}

describe('amqps with a CA and a client certificate', () => {
  it('runs jobs through a broker that only speaks TLS with client certificates', async () => {
    const c = (cluster = await Cluster.start({
      vhost: '/',
      url: broker!.tlsUrl,
      bus: { ca: certs!.ca, cert: certs!.clientCert, key: certs!.clientKey },
      server: { loadTimeout: '2m' },
    }));
    const userMap = isRoot ? { admin: (await osUsers.user('tl')).name } : {};
    await c.startAgent('tls', { slots: 4, userMap });
    const pushed = await c.request('POST', '/api/workflows', { source: NOOP });
    expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
    const ids = await Promise.all(Array.from({ length: 20 }, () => c.submit('noop')));
    const jobs = await c.settle(ids, 120_000);
    expect(jobs.map((job) => job.state)).toEqual(ids.map(() => 'succeeded'));
    // Server and agent say where they connected: the TLS listener, the only URL they were given.
    for (const dataDir of [c.dataDir, c.agentDir('tls')]) {
      const records = await readLogRecords(dataDir);
      const connected = records.filter((record) => record.event === 'bus.connected');
      expect(connected.map((record) => record.url)).toContain(`amqps://127.0.0.1:${broker!.tlsPort}`);
      expect(records.filter((record) => record.event === 'bus.failed')).toEqual([]);
    }
  }, 240_000);

  it('refuses a broker whose certificate the configured CA did not sign, saying so', async () => {
    const error = await firstFailure({
      urls: [broker!.tlsUrl],
      ca: await readFile(certs!.otherCa, 'utf8'),
      cert: await readFile(certs!.clientCert, 'utf8'),
      key: await readFile(certs!.clientKey, 'utf8'),
    });
    console.log(`wrong CA: ${error.message}`);
    expect(error.message).toMatch(/TLS: the broker at amqps:\/\/127\.0\.0\.1:\d+ presented a certificate/);
    expect(error.message).toMatch(/did not sign/);
    expect(error.message).not.toMatch(/guest/);
  }, 60_000);

  it('is refused by the broker without a client certificate', async () => {
    const error = await firstFailure({ urls: [broker!.tlsUrl], ca: await readFile(certs!.ca, 'utf8') });
    console.log(`no client certificate: ${error.message}`);
    expect(error.message).toMatch(/TLS: the broker at amqps:\/\/127\.0\.0\.1:\d+ refused the handshake/);
    expect(error.message).toMatch(/client certificate \(bus\.cert, bus\.key\)/);
  }, 60_000);
});

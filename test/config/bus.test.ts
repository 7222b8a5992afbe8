import { writeFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileAgentConfig, compileServerConfig } from '../../src/config/index.js';
import { tempDir } from '../support/steward.js';

let dir = '';
beforeAll(async () => {
  dir = await tempDir('config');
  await writeFile(path.join(dir, 'password'), 's3cret\n');
  await writeFile(path.join(dir, 'ca.pem'), '-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n');
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('bus config', () => {
  it('defaults to the embedded bus', () => {
    expect(compileServerConfig({}).bus).toEqual({ kind: 'embedded' });
  });

  it('reads the password and certificate files once, at compile time', () => {
    const config = compileServerConfig({
      bus: {
        kind: 'amqp',
        urls: ['amqps://broker-1:5671', 'amqps://broker-2:5671'],
        vhost: 'steward',
        user: 'steward',
        passwordFile: path.join(dir, 'password'),
        ca: path.join(dir, 'ca.pem'),
      },
    });
    expect(config.bus).toMatchObject({
      kind: 'amqp',
      urls: ['amqps://broker-1:5671', 'amqps://broker-2:5671'],
      password: 's3cret',
      deliveryLimit: 20,
      queueType: 'auto',
    });
    expect(config.bus.kind === 'amqp' && config.bus.ca).toMatch(/BEGIN CERTIFICATE/);
  });

  it.each([
    [{ kind: 'amqp', urls: [] }, /urls/],
    [{ kind: 'amqp', urls: ['http://broker'] }, /amqp:\/\/ or amqps:\/\//],
    [{ kind: 'amqp', urls: ['amqp://b'], password: 'x', passwordFile: '/nonexistent' }, /not both/],
    [{ kind: 'amqp', urls: ['amqp://b'], passwordFile: '/nonexistent/password' }, /cannot read/],
    [{ kind: 'amqp', urls: ['amqp://b'], cert: '/x' }, /cert and key go together/],
    [{ kind: 'amqp', urls: ['amqp://b'], port: 5672 }, /port|Unrecognized/i],
    [{ kind: 'kafka' }, /kind/],
    [{ kind: 'amqp', urls: ['amqp://b'], queueType: 'stream' }, /queueType/],
  ])('refuses %j with a clear STEWARD_CONFIG_INVALID', (bus, message) => {
    let caught: unknown;
    try {
      compileServerConfig({ bus });
    } catch (error) {
      caught = error;
    }
    expect(caught).toMatchObject({ code: 'STEWARD_CONFIG_INVALID' });
    expect((caught as Error).message).toMatch(message);
  });

  it('takes queueType quorum or classic as given', () => {
    for (const queueType of ['quorum', 'classic'] as const) {
      const config = compileServerConfig({ bus: { kind: 'amqp', urls: ['amqp://b'], queueType } });
      expect(config.bus).toMatchObject({ kind: 'amqp', queueType });
    }
  });

  it('gives an agent its bus and the server public key', async () => {
    const keyFile = path.join(dir, 'offer-signing.pub');
    await writeFile(keyFile, '-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----\n');
    const config = compileAgentConfig(
      { bus: { kind: 'amqp', urls: ['amqp://b'] }, serverPublicKeyFile: keyFile },
      { dataDir: dir },
    );
    expect(config.bus.kind).toBe('amqp');
    expect(config.serverPublicKey).toMatch(/BEGIN PUBLIC KEY/);
  });
});

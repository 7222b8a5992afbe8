import { generateKeyPairSync } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileAgentConfig, compileServerConfig } from '../../src/config/index.js';
import { StewardError } from '../../src/protocol/index.js';
import { tempDir } from '../support/steward.js';

const publicKeyPem = generateKeyPairSync('ed25519')
  .publicKey.export({ type: 'spki', format: 'pem' })
  .toString();
let dir = '';
beforeAll(async () => {
  dir = await tempDir('config-clusters');
  await writeFile(path.join(dir, 'offer-signing.pub'), publicKeyPem);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function configError(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(StewardError);
    expect((error as StewardError).code).toBe('STEWARD_CONFIG_INVALID');
    return (error as StewardError).message;
  }
  throw new Error('expected STEWARD_CONFIG_INVALID');
}

describe('cluster settings', () => {
  it('defaults to the local cluster, a 30 s clock skew and a 6 s heartbeat wait', () => {
    expect(compileServerConfig({}).clusters).toEqual({
      default: 'local',
      maxClockSkewMs: 30_000,
      heartbeatWaitMs: 6_000,
    });
    expect(compileServerConfig({ clusters: { default: 'prod', maxClockSkew: '5s' } }).clusters).toMatchObject(
      {
        default: 'prod',
        maxClockSkewMs: 5_000,
      },
    );
  });

  it('refuses an unknown key and a name that is not a cluster name', () => {
    expect(configError(() => compileServerConfig({ clusters: { skew: '1s' } }))).toMatch(/skew/);
    expect(configError(() => compileServerConfig({ clusters: { default: 'Prod Cluster' } }))).toMatch(
      /cluster name/,
    );
  });
});

describe("the agent's server key and URL", () => {
  it('takes the public key inline, as `cluster agent-config` prints it, or from a file', () => {
    const inline = compileAgentConfig(
      { serverPublicKey: publicKeyPem, serverUrl: 'https://steward.example.com' },
      { dataDir: dir },
    );
    expect(inline.serverPublicKey).toBe(publicKeyPem);
    expect(inline.serverUrl).toBe('https://steward.example.com');
    const fromFile = compileAgentConfig(
      { serverPublicKeyFile: path.join(dir, 'offer-signing.pub') },
      { dataDir: dir },
    );
    expect(fromFile.serverPublicKey).toBe(publicKeyPem);
    expect(fromFile.serverUrl).toBeUndefined();
  });

  it('refuses both forms at once, and an inline key that is not a PEM public key', () => {
    expect(
      configError(() =>
        compileAgentConfig(
          { serverPublicKey: publicKeyPem, serverPublicKeyFile: path.join(dir, 'offer-signing.pub') },
          { dataDir: dir },
        ),
      ),
    ).toMatch(/not both/);
    expect(configError(() => compileAgentConfig({ serverPublicKey: 'abc' }, { dataDir: dir }))).toMatch(
      /PEM public key/,
    );
  });
});

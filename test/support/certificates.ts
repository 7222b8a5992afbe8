/**
 * Throwaway TLS material for broker tests, made with openssl (argument arrays, no shell) in a temp dir:
 * a CA, a server certificate for 127.0.0.1/localhost signed by it, a client certificate signed by it, and a
 * second, unrelated CA to show that a broker it did not sign is refused.
 */
import { execFile } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { tempDir } from './steward.js';

const run = promisify(execFile);

async function openssl(cwd: string, ...args: string[]): Promise<void> {
  await run('openssl', args, { cwd, timeout: 30_000 });
}

export interface Certificates {
  dir: string;
  /** PEM file paths. */
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A CA that signed nothing here. */
  otherCa: string;
  cleanup(): Promise<void>;
}

const KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

async function makeCa(dir: string, name: string, subject: string): Promise<void> {
  await openssl(
    dir,
    'req',
    '-x509',
    ...KEY,
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.pem`,
    '-days',
    '2',
    '-subj',
    subject,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  );
}

async function makeSigned(dir: string, name: string, subject: string, extensions: string): Promise<void> {
  await openssl(dir, 'req', ...KEY, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject);
  await writeFile(path.join(dir, `${name}.ext`), extensions);
  await openssl(
    dir,
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    `${name}.pem`,
    '-days',
    '2',
    '-extfile',
    `${name}.ext`,
  );
}

export async function makeCertificates(): Promise<Certificates> {
  const dir = await tempDir('tls');
  await makeCa(dir, 'ca', '/CN=Steward Test CA');
  await makeCa(dir, 'other-ca', '/CN=Some Other CA');
  await makeSigned(
    dir,
    'server',
    '/CN=localhost',
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n',
  );
  await makeSigned(dir, 'client', '/CN=steward-agent', 'extendedKeyUsage=clientAuth\n');
  const file = (name: string): string => path.join(dir, name);
  return {
    dir,
    ca: file('ca.pem'),
    serverCert: file('server.pem'),
    serverKey: file('server.key'),
    clientCert: file('client.pem'),
    clientKey: file('client.key'),
    otherCa: file('other-ca.pem'),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

/**
 * Per-job TLS for a step's Dask cluster: a certificate authority made for this one job, and a certificate
 * each for the scheduler, the workers and the client, all signed by it. Dask's TLS verifies both sides
 * against the CA it is given, so only a holder of this job's certificates can connect: another job's
 * certificates (another CA) and plain TCP are refused.
 *
 * Built in-process with WebCrypto and @peculiar/x509 (ECDSA P-256): no `openssl` binary to depend on, and a
 * private key exists only in memory until it is written, 0600, by the process that owns the job directory
 * (the executor runs as the job's user, so the user owns the files). The CA's private key is never written:
 * it signs the three certificates and is dropped, so nothing can issue a fourth.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as x509 from '@peculiar/x509';

/** The PEM files of one job's Dask TLS (keys are 0600, in a 0700 directory). */
export interface DaskTlsFiles {
  ca: string;
  scheduler: { cert: string; key: string };
  worker: { cert: string; key: string };
  client: { cert: string; key: string };
}

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
/** Certificates outlive any step by far, and die with the job's directory anyway. */
const VALIDITY_MS = 7 * 24 * 3600_000;
/** Clock skew between machines that a just-made certificate must survive. */
const BACKDATE_MS = 3600_000;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/**
 * Makes the job's CA and the three certificates in `dir` (created 0700). `label` names the job in the
 * certificates' subjects (for people reading them; verification uses only the CA).
 */
export async function makeDaskCertificates(dir: string, label: string): Promise<DaskTlsFiles> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const subject = (role: string) => `CN=steward-dask-${role}, OU=${escapeRdn(label)}`;
  const notBefore = new Date(Date.now() - BACKDATE_MS);
  const notAfter = new Date(Date.now() + VALIDITY_MS);
  const caKeys = await generateKeys();
  const caCert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: subject('ca'),
    notBefore,
    notAfter,
    signingAlgorithm: ALGORITHM,
    keys: caKeys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });
  const files: DaskTlsFiles = {
    ca: path.join(dir, 'ca.pem'),
    scheduler: { cert: path.join(dir, 'scheduler.pem'), key: path.join(dir, 'scheduler.key') },
    worker: { cert: path.join(dir, 'worker.pem'), key: path.join(dir, 'worker.key') },
    client: { cert: path.join(dir, 'client.pem'), key: path.join(dir, 'client.key') },
  };
  await writePrivate(files.ca, caCert.toString('pem'));
  for (const role of ['scheduler', 'worker', 'client'] as const) {
    const keys = await generateKeys();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: subject(role),
      issuer: caCert.subject,
      notBefore,
      notAfter,
      signingAlgorithm: ALGORITHM,
      publicKey: keys.publicKey,
      signingKey: caKeys.privateKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        // Every Dask process is both a TLS server and a client of the others.
        new x509.ExtendedKeyUsageExtension(
          [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
          false,
        ),
        await x509.AuthorityKeyIdentifierExtension.create(caKeys.publicKey),
      ],
    });
    const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
    await writePrivate(files[role].key, x509.PemConverter.encode(pkcs8, 'PRIVATE KEY'));
    await writePrivate(files[role].cert, cert.toString('pem'));
  }
  return files;
}

async function generateKeys(): Promise<webcrypto.CryptoKeyPair> {
  return await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
}

/** A random positive 128-bit serial number in hex. */
function serial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = bytes[0]! & 0x7f;
  return Buffer.from(bytes).toString('hex');
}

/** `flag: 'wx'`: a file that already exists (a link planted in the directory) is an error, not a target. */
async function writePrivate(file: string, text: string): Promise<void> {
  await writeFile(file, text, { mode: 0o600, flag: 'wx' });
}

function escapeRdn(value: string): string {
  return value.replace(/[,+"\\<>;=]/g, (character) => `\\${character}`);
}

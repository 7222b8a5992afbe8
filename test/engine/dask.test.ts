/**
 * The `dask:` key of python steps (shape, bounds, sizes) and the per-job certificates: each job's chain
 * verifies against its own CA only, and the files are private. No Dask process runs here (see
 * test/e2e/dask.test.ts for the clusters themselves).
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeDaskCertificates } from '../../src/engine/dask/index.js';
import { closeSqlAnalyzer, parseWorkflow, type PythonStep } from '../../src/engine/index.js';
import { invalidIssues } from './helpers.js';

afterAll(async () => {
  await closeSqlAnalyzer();
});

const workflow = (dask: string, kind = 'python') => `name: d
steps:
  - id: p
    ${kind}: print(1)
    dask: ${dask}
`;

describe('the dask: key of a python step', () => {
  it('gives workers, threads and memory in bytes, with threads 1 and 1 GiB by default', async () => {
    const parsed = await parseWorkflow(workflow('{workers: 4, threads: 2, memory: 1.5GiB}'));
    expect((parsed.steps[0] as PythonStep).spec.dask).toEqual({
      workers: 4,
      threads: 2,
      memoryBytes: 1.5 * 1024 ** 3,
    });
    const defaults = await parseWorkflow(workflow('{workers: 1}'));
    expect((defaults.steps[0] as PythonStep).spec.dask).toEqual({
      workers: 1,
      threads: 1,
      memoryBytes: 1024 ** 3,
    });
    const plain = await parseWorkflow('name: d\nsteps:\n  - id: p\n    python: print(1)\n');
    expect((plain.steps[0] as PythonStep).spec.dask).toBeUndefined();
  });

  it.each([
    ['{workers: 0}', 'steps.0.dask.workers'],
    ['{workers: 65}', 'steps.0.dask.workers'],
    ['{workers: 2.5}', 'steps.0.dask.workers'],
    ['{workers: 2, threads: 0}', 'steps.0.dask.threads'],
    ['{threads: 2}', 'steps.0.dask.workers'],
    ['{workers: 2, memory: lots}', 'steps.0.dask.memory'],
    ['{workers: 2, memory: 100MiB}', 'steps.0.dask.memory'],
    ['{workers: 2, gpus: 1}', 'steps.0.dask.gpus'],
  ])('refuses dask: %s naming %s', async (dask, where) => {
    const { issues } = await invalidIssues(workflow(dask));
    expect(issues.map((issue) => issue.path)).toContain(where);
  });

  it('names the rule and the value of a bad size', async () => {
    const { issues } = await invalidIssues(workflow('{workers: 2, memory: 100MiB}'));
    expect(issues.find((issue) => issue.path === 'steps.0.dask.memory')?.message).toBe(
      'a Dask worker needs at least 256MiB, got "100MiB"',
    );
  });

  it('is refused on a shell step', async () => {
    const { issues } = await invalidIssues(workflow('{workers: 2}', 'shell'));
    expect(issues.map((issue) => issue.path)).toContain('steps.0.dask');
  });
});

describe('per-job Dask certificates', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  async function certificatesOf(label: string) {
    const root = await mkdtemp(path.join(os.tmpdir(), 'steward-dask-certs-'));
    dirs.push(root);
    return makeDaskCertificates(path.join(root, 'tls'), label);
  }

  it('signs the scheduler, worker and client certificates with the job’s own CA, and no other job’s', async () => {
    const one = await certificatesOf('job-1-step');
    const two = await certificatesOf('job-2-step');
    const caOne = new X509Certificate(await readFile(one.ca));
    const caTwo = new X509Certificate(await readFile(two.ca));
    expect(caOne.ca).toBe(true);
    for (const role of ['scheduler', 'worker', 'client'] as const) {
      const cert = new X509Certificate(await readFile(one[role].cert));
      expect(cert.ca).toBe(false);
      expect(cert.checkIssued(caOne)).toBe(true);
      expect(cert.verify(caOne.publicKey)).toBe(true);
      expect(cert.verify(caTwo.publicKey)).toBe(false);
      expect(cert.subject).toContain(`steward-dask-${role}`);
      // The key file holds the private half of the certificate's key.
      const key = createPrivateKey(await readFile(one[role].key));
      expect(cert.checkPrivateKey(key)).toBe(true);
    }
  });

  it('writes every file 0600 in a 0700 directory and keeps no CA key', async () => {
    const files = await certificatesOf('job-3-step');
    const dir = path.dirname(files.ca);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    const all = [
      files.ca,
      ...(['scheduler', 'worker', 'client'] as const).flatMap((r) => [files[r].cert, files[r].key]),
    ];
    for (const file of all) expect((await stat(file)).mode & 0o777).toBe(0o600);
    const { readdir } = await import('node:fs/promises');
    expect((await readdir(dir)).sort()).toEqual([
      'ca.pem',
      'client.key',
      'client.pem',
      'scheduler.key',
      'scheduler.pem',
      'worker.key',
      'worker.pem',
    ]);
  });

  it('refuses to write over a file already in its place', async () => {
    const files = await certificatesOf('job-4-step');
    await expect(makeDaskCertificates(path.dirname(files.ca), 'job-4-step')).rejects.toThrow(/EEXIST/);
  });
});

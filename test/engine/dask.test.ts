/**
 * The `dask:` key of python steps (shape, bounds, sizes) and the per-job certificates: each job's chain
 * verifies against its own CA only, and the files are private. No Dask process runs here (see
 * test/e2e/dask.test.ts for the clusters themselves).
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { checkDask, DaskLogSink, makeDaskCertificates } from '../../src/engine/dask/index.js';
import { DaskProcess } from '../../src/engine/dask/process.js';
import { StewardError } from '../../src/protocol/index.js';
import { until } from '../support/wait.js';
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

describe('Dask processes and their log lines', () => {
  it('holds lines until the step log attaches, then writes straight to it, prefixed by process', async () => {
    const sink = new DaskLogSink();
    const chunks: string[] = [];
    const target = new PassThrough();
    target.on('data', (chunk: Buffer) => chunks.push(chunk.toString()));
    const process = await DaskProcess.start({
      name: 'worker-1',
      argv: ['/bin/sh', '-c', 'echo first; echo second >&2; sleep 30'],
      cwd: os.tmpdir(),
      env: { PATH: '/usr/bin:/bin' },
      sink,
    });
    await until('both lines arrived', async () =>
      process.tail().split('\n').length === 2 ? true : undefined,
    );
    sink.attach(target);
    sink.write('[dask scheduler] later\n');
    expect(chunks.join('').split('\n').sort()).toEqual(
      ['', '[dask scheduler] later', '[dask worker-1] first', '[dask worker-1] second'].sort(),
    );
    expect(process.alive()).toBe(true);
    await process.stop(1000);
    expect(process.alive()).toBe(false);
    expect((await process.exited).signal).toBe('SIGTERM');
  });

  it('counts the lines it cannot hold and says so once the log attaches', () => {
    const sink = new DaskLogSink();
    const line = `${'x'.repeat(1023)}\n`;
    for (let index = 0; index < 1100; index += 1) sink.write(line);
    const target = new PassThrough();
    let text = '';
    target.on('data', (chunk: Buffer) => (text += chunk.toString()));
    sink.attach(target);
    expect(text).toContain('[steward] 76 Dask log lines dropped');
  });

  it('kills a process that ignores SIGTERM, with its whole group', async () => {
    const process = await DaskProcess.start({
      name: 'scheduler',
      argv: ['/bin/sh', '-c', 'trap "" TERM; echo ready; sleep 30 & sleep 30; wait'],
      cwd: os.tmpdir(),
      env: { PATH: '/usr/bin:/bin' },
      sink: new DaskLogSink(),
    });
    await until('TERM is ignored', async () => (process.tail() === 'ready' ? true : undefined));
    await process.stop(300);
    expect(process.alive()).toBe(false);
    expect((await process.exited).signal).toBe('SIGKILL');
  });

  it('fails with STEWARD_DASK_START_FAILED naming a program that does not exist', async () => {
    const error = await DaskProcess.start({
      name: 'worker-2',
      argv: ['/nonexistent/python3', '-m', 'distributed.cli.dask_worker'],
      cwd: os.tmpdir(),
      env: {},
      sink: new DaskLogSink(),
    }).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(StewardError);
    expect((error as StewardError).code).toBe('STEWARD_DASK_START_FAILED');
    expect((error as StewardError).message).toContain('/nonexistent/python3');
  });

  it('reports Dask as available, or how to install it, in the shared check shape', async () => {
    const missing = await checkDask('/nonexistent/python3');
    expect(missing).toMatchObject({ id: 'agent.dask', status: 'warn', code: 'STEWARD_DASK_START_FAILED' });
    expect(missing.fix).toContain('python3-distributed');
    const here = await checkDask();
    const installed = existsSync('/usr/lib/python3/dist-packages/distributed');
    expect(here.status).toBe(installed ? 'pass' : 'warn');
    if (installed) expect(here.detail).toMatch(/distributed \d{4}\.\d+/);
  });
});

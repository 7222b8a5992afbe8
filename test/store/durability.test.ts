import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '../..');
const hasStrace = spawnSync('strace', ['-V']).status === 0;

describe.skipIf(!hasStrace)('embedded store durability', () => {
  // Compiled inside the repository so the script resolves kysely and better-sqlite3 from node_modules.
  const buildDir = path.join(root, 'node_modules', '.cache', `steward-durability-${process.pid}`);
  let workDir: string;

  beforeAll(() => {
    workDir = mkdtempSync(path.join(os.tmpdir(), 'steward-durability-'));
    execFileSync(
      process.execPath,
      [
        path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'),
        '--outDir',
        buildDir,
        '--rootDir',
        path.join(root, 'src'),
        '--module',
        'NodeNext',
        '--moduleResolution',
        'NodeNext',
        '--target',
        'ES2022',
        '--skipLibCheck',
        '--esModuleInterop',
        '--types',
        'node',
        path.join(root, 'src', 'store', 'index.ts'),
      ],
      { stdio: 'pipe' },
    );
    writeFileSync(path.join(buildDir, 'package.json'), '{"type":"module"}');
  }, 120_000);

  afterAll(() => {
    rmSync(buildDir, { recursive: true, force: true });
    rmSync(workDir, { recursive: true, force: true });
  });

  /** Runs a script against a fresh store under strace; returns the trace (fsync, fdatasync and write calls). */
  function traced(name: string, body: string): string {
    const dbFile = path.join(workDir, `${name}.db`);
    const script = path.join(buildDir, `${name}.mjs`);
    writeFileSync(
      script,
      `import { writeSync } from 'node:fs';
import { openStore } from './store/index.js';
const mark = (text) => writeSync(2, text + '\\n');
const store = await openStore({ kind: 'sqlite', path: ${JSON.stringify(dbFile)} });
${body}
await store.close();
`,
    );
    const traceFile = path.join(workDir, `${name}.trace`);
    const run = spawnSync(
      'strace',
      ['-f', '-y', '-o', traceFile, '-e', 'trace=fsync,fdatasync,write,pwrite64', process.execPath, script],
      { encoding: 'utf8' },
    );
    expect(run.status, run.stderr).toBe(0);
    return readFileSync(traceFile, 'utf8');
  }

  const between = (trace: string, from: string, to: string): string => {
    const begin = trace.indexOf(from);
    const end = trace.indexOf(to);
    expect(begin).toBeGreaterThan(-1);
    expect(end).toBeGreaterThan(begin);
    return trace.slice(begin, end);
  };
  const walSync = /(fsync|fdatasync)\(\d+<[^>]*\.db-wal>\)\s*=\s*0/g;

  it('flushes the WAL after a commit is written and before durable() resolves', () => {
    const trace = traced(
      'one',
      `mark('COMMIT-BEGIN');
await store.createUser({ name: 'durable', role: 'user', passwordHash: null, createdAt: Date.now() });
mark('COMMITTED');
await store.durable();
mark('DURABLE');`,
    );
    const commit = between(trace, 'COMMIT-BEGIN', 'COMMITTED');
    // The commit itself writes the WAL and does not wait for the disk (that is the point of grouping) ...
    expect(commit).toMatch(/(pwrite64|write)\(\d+<[^>]*\.db-wal>/);
    expect(commit).not.toMatch(walSync);
    // ... durable() does.
    expect(between(trace, 'COMMITTED', 'DURABLE')).toMatch(walSync);
  });

  it('makes many concurrent commits durable with a few flushes', () => {
    const trace = traced(
      'many',
      `mark('BURST-BEGIN');
await Promise.all(Array.from({ length: 50 }, async (_, i) => {
  await store.createUser({ name: 'user' + i, role: 'user', passwordHash: null, createdAt: Date.now() });
  await store.durable();
}));
mark('BURST-END');`,
    );
    const flushes = between(trace, 'BURST-BEGIN', 'BURST-END').match(walSync)?.length ?? 0;
    expect(flushes).toBeGreaterThan(0);
    expect(flushes).toBeLessThan(25);
  });
});

if (!hasStrace) {
  describe('embedded store durability', () => {
    it.skip('needs strace on PATH (apt-get install strace) to observe fsync calls', () => {});
  });
}

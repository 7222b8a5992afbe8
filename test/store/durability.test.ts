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

  it('fsyncs the database or its WAL before a commit returns', () => {
    const dbFile = path.join(workDir, 'steward.db');
    const script = path.join(buildDir, 'commit-one.mjs');
    writeFileSync(
      script,
      `import { writeSync } from 'node:fs';
import { openStore } from './store/index.js';
const store = await openStore({ kind: 'sqlite', path: ${JSON.stringify(dbFile)} });
writeSync(2, 'COMMIT-BEGIN\\n');
await store.createUser({ name: 'durable', role: 'user', passwordHash: null, createdAt: Date.now() });
writeSync(2, 'COMMIT-END\\n');
await store.close();
`,
    );
    const traceFile = path.join(workDir, 'trace.log');
    const run = spawnSync(
      'strace',
      ['-f', '-y', '-o', traceFile, '-e', 'trace=fsync,fdatasync,write', process.execPath, script],
      {
        encoding: 'utf8',
      },
    );
    expect(run.status, run.stderr).toBe(0);
    const trace = readFileSync(traceFile, 'utf8');
    const begin = trace.indexOf('COMMIT-BEGIN');
    const end = trace.indexOf('COMMIT-END');
    expect(begin).toBeGreaterThan(-1);
    expect(end).toBeGreaterThan(begin);
    const during = trace.slice(begin, end);
    expect(during).toMatch(/(fsync|fdatasync)\(\d+<[^>]*steward\.db(-wal)?>\)\s*=\s*0/);
  });
});

if (!hasStrace) {
  describe('embedded store durability', () => {
    it.skip('needs strace on PATH (apt-get install strace) to observe fsync calls', () => {});
  });
}

/**
 * Builds dist/ once before any test runs: the CLI, `steward up` and the executor processes that tests start
 * are the built ones, and the portal they serve. scripts/test builds first and sets STEWARD_TEST_SKIP_BUILD to avoid doing it twice.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export default function setup(): void {
  if (process.env.STEWARD_TEST_SKIP_BUILD === '1') return;
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  const result = spawnSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.build.json')], {
    cwd: root,
    encoding: 'utf8',
  });
  if (result.status !== 0) throw new Error(`build failed before tests:\n${result.stdout}\n${result.stderr}`);
  // The portal (dist/web/), which `steward up` serves and the browser tests open.
  const web = spawnSync('npm', ['run', '-s', 'build:web'], { cwd: root, encoding: 'utf8' });
  if (web.status !== 0) throw new Error(`portal build failed before tests:\n${web.stdout}\n${web.stderr}`);
}

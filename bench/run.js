// `npm run bench`: every benchmark, one after the other (each prints its own figures).
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const scripts = ['latency.mjs', 'workflow-vs-duckdb.mjs'];
// Per-user executors need root (it creates OS users).
if (process.getuid?.() === 0) scripts.push('cold-start.mjs');
for (const script of scripts) {
  console.log(`\n== ${script}`);
  execFileSync(process.execPath, [path.join(here, script)], { stdio: 'inherit' });
}

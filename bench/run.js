// `npm run bench`: every benchmark, one after the other (each prints its own figures).
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
for (const script of ['latency.mjs', 'workflow-vs-duckdb.mjs']) {
  console.log(`\n== ${script}`);
  execFileSync(process.execPath, [path.join(here, script)], { stdio: 'inherit' });
}

// `npm run bench`: every benchmark, one after the other (each prints its own figures).
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const scripts = [
  'latency.mjs',
  ['workflow-vs-duckdb.mjs', '--short'],
  ['duckdb-host.mjs', '500', '--rounds=3'],
];
// Per-user executors need root (it creates OS users); so does the RabbitMQ bench (rabbitmqctl, a bench user).
if (process.getuid?.() === 0)
  scripts.push(
    ['cold-start.mjs', '12'],
    ['many-users.mjs', '--short'],
    ['amqp-vs-celery.mjs', '300', '300', '20'],
  );
// Each entry: a script, or a script and its arguments (the short version of a long bench).
for (const entry of scripts) {
  const [script, ...args] = [entry].flat();
  console.log(`\n== ${[script, ...args].join(' ')}`);
  execFileSync(process.execPath, [path.join(here, script), ...args], { stdio: 'inherit' });
}

// `npm run bench`: every benchmark, one after the other (each prints its own figures).
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const scripts = [['latency.mjs'], ['workflow-vs-duckdb.mjs']];
// Per-user executors need root (it creates OS users); so does the RabbitMQ bench (rabbitmqctl, a bench user).
if (process.getuid?.() === 0) scripts.push(['cold-start.mjs'], ['amqp-vs-celery.mjs', '300', '300', '20']);
for (const [script, ...args] of scripts) {
  console.log(`\n== ${script} ${args.join(' ')}`);
  execFileSync(process.execPath, [path.join(here, script), ...args], { stdio: 'inherit' });
}

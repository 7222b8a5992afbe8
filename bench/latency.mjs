// Latency of a no-op job through `steward up`: submit → running and submit → done, seen by a client that
// submits over REST and follows the job's event stream. Usage: node bench/latency.mjs [jobs]
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { machine, percentile, repoRoot, runAndTime, startSteward } from './harness.mjs';

const jobs = Number(process.argv[2] ?? 200);
const steward = await startSteward();
try {
  const source = readFileSync(path.join(repoRoot, 'examples/noop.yaml'), 'utf8');
  await steward.api('POST', '/api/workflows', { source, fileName: 'noop.yaml' });
  // Warm-up: the user's first job also pays for taking on a warm executor.
  const first = await runAndTime(steward, { workflow: 'noop' });
  const running = [];
  const done = [];
  for (let i = 0; i < jobs; i++) {
    const result = await runAndTime(steward, { workflow: 'noop' });
    if (result.job.state !== 'succeeded') throw new Error(`job ${result.job.id} ${result.job.state}`);
    running.push(result.running);
    done.push(result.done);
  }
  const f = (v) => `${v.toFixed(1)} ms`;
  console.log(`no-op job latency over ${jobs} sequential jobs (machine: ${machine()})`);
  console.log(
    `first job of a user (cold executor): submit→running ${f(first.running)}, submit→done ${f(first.done)}`,
  );
  console.log(`submit→running: p50 ${f(percentile(running, 50))}  p99 ${f(percentile(running, 99))}`);
  console.log(`submit→done:    p50 ${f(percentile(done, 50))}  p99 ${f(percentile(done, 99))}`);
} finally {
  await steward.stop();
}

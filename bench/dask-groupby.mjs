// A group-by over N rows (default 20 M) in CSV parts, as a Dask step through a real `steward up`: one worker
// vs four, side by side, plus each worker's start time (spawn → registered with the scheduler, as the
// engine records it in the job's .steward/dask/<step>/workers.json) and the whole step's time.
// On a 2-core machine four workers measure Dask's overhead, not a speedup.
// Usage: sudo node bench/dask-groupby.mjs [rows=20000000] [parts=40]
// Needs Debian's python3-distributed and python3-pandas (/usr/bin/python3).
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { machine, percentile, startSteward, tempDir } from './harness.mjs';

if (process.getuid() !== 0) {
  console.error('dask-groupby.mjs runs Dask as a per-user cluster: run it as root');
  process.exit(2);
}
const rows = Number(process.argv[2] ?? 20_000_000);
const parts = Number(process.argv[3] ?? 40);
const scratch = tempDir('dask');
const data = path.join(scratch, 'data');
mkdirSync(data, { mode: 0o755 });

console.log(`machine: ${machine()}`);
console.log(
  `dask: ${execFileSync('/usr/bin/python3', ['-c', 'import distributed; print(distributed.__version__)'], { encoding: 'utf8' }).trim()}`,
);
let t = performance.now();
const duckdb = await DuckDBInstance.create(':memory:');
const connection = await duckdb.connect();
const perPart = Math.ceil(rows / parts);
for (let part = 0; part < parts; part += 1) {
  const file = path.join(data, `part-${String(part).padStart(3, '0')}.csv`);
  const first = part * perPart;
  const last = Math.min(rows, first + perPart);
  await connection.run(
    `COPY (SELECT 'k' || (i * 7919 % 101) AS key, (i * 104729 % 10000) AS amount
           FROM range(${first}, ${last}) r(i)) TO '${file}' (HEADER)`,
  );
  chmodSync(file, 0o644);
}
const expected = await connection.runAndReadAll(
  `SELECT count(*)::BIGINT AS keys, sum(total)::BIGINT AS total FROM
     (SELECT key, sum(amount) AS total FROM read_csv('${data}/part-*.csv') GROUP BY key)`,
);
const row = expected.getRowObjectsJS()[0];
const truth = { keys: Number(row.keys), total: Number(row.total) };
connection.closeSync();
console.log(
  `data: ${rows.toLocaleString('en')} rows in ${parts} CSV parts, made in ${((performance.now() - t) / 1000).toFixed(1)} s`,
);

const config = path.join(scratch, 'steward.yaml');
writeFileSync(
  config,
  // An agent id of its own: another `steward up` on this host (its default id) must not block the bench.
  [
    'agent:',
    `  id: bench-dask-${process.pid}`,
    '  slots: 1',
    '  keepJobDirs: true',
    '  limits: { memory: 12GiB, pids: 8192 }',
    '',
  ].join('\n'),
);
const workflow = (workers) => `name: groupby-${workers}
params:
  data: {type: string, required: true}
steps:
  - id: agg
    dask: {workers: ${workers}, threads: 1, memory: 2GiB}
    python: |
      import json, os, time
      import dask.dataframe as dd
      import steward_dask
      client = steward_dask.client()
      started = time.perf_counter()
      frame = dd.read_csv(os.path.join(os.environ["data"], "part-*.csv"), blocksize="64MB")
      result = frame.groupby("key")["amount"].sum().compute()
      seconds = time.perf_counter() - started
      out = os.environ["STEWARD_OUTPUT_DIR"]
      json.dump({"seconds": seconds, "keys": len(result), "total": int(result.sum())}, open(os.path.join(out, "timing.json"), "w"))
outputs: [agg]
`;

const steward = await startSteward({ config });
const rowsOut = [];
try {
  for (const workers of [1, 4]) {
    await steward.api('POST', '/api/workflows', { source: workflow(workers) });
    const submitted = performance.now();
    const job = await steward.api('POST', '/api/jobs', { workflow: `groupby-${workers}`, params: { data } });
    let detail;
    for (;;) {
      detail = await steward.api('GET', `/api/jobs/${job.id}`);
      if (['succeeded', 'failed', 'canceled', 'expired'].includes(detail.state)) break;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const wall = (performance.now() - submitted) / 1000;
    if (detail.state !== 'succeeded')
      throw new Error(`job ${job.id} ${detail.state}: ${JSON.stringify(detail.error)}`);
    const timing = await steward.api('GET', `/api/jobs/${job.id}/results/timing.json`);
    if (timing.keys !== truth.keys || timing.total !== truth.total)
      throw new Error(`wrong result: ${JSON.stringify(timing)} vs DuckDB ${JSON.stringify(truth)}`);
    // The job's own OS user (other benches on this host create `stbench<pid>` users too).
    const user = detail.executor.osUser;
    const record = JSON.parse(
      readFileSync(
        path.join(
          steward.dataDir,
          'workspaces',
          user,
          'work',
          'jobs',
          `${job.id}-1`,
          '.steward',
          'dask',
          'agg',
          'workers.json',
        ),
        'utf8',
      ),
    );
    const starts = record.workers.map((worker) => worker.startMs);
    const step = detail.steps?.find((entry) => entry.id === 'agg');
    rowsOut.push({
      workers,
      groupBy: timing.seconds,
      step: (step?.durationMs ?? NaN) / 1000,
      wall,
      starts,
    });
  }
} finally {
  await steward.stop();
  rmSync(scratch, { recursive: true, force: true });
}
console.log('');
console.log(
  '| workers | group-by (s) | step incl. cluster start/stop (s) | submit→done (s) | worker start p50 / max (ms) |',
);
console.log(
  '| ------- | ------------ | --------------------------------- | --------------- | --------------------------- |',
);
for (const row of rowsOut) {
  console.log(
    `| ${row.workers} | ${row.groupBy.toFixed(2)} | ${row.step.toFixed(2)} | ${row.wall.toFixed(2)} | ${Math.round(percentile(row.starts, 50))} / ${Math.round(Math.max(...row.starts))} |`,
  );
}
console.log(`\nresult checked against DuckDB: ${truth.keys} keys, total ${truth.total}`);

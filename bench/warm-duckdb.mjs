// The warm DuckDB side of workflow-vs-duckdb.mjs: a process of its own, kept alive across rounds, driven over
// IPC. It starts its instance only after the bench has placed it (in a cgroup shaped like an executor's, when
// the agent uses cgroups), so that its DuckDB threads are born there.
//   → { settings: { threads, memoryLimit, tempDir } }      ← { ready: true }
//   → { run: { steps, outputs, params, outDir } }          ← { ms, ctasMs } | { error }
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { DOUBLE, DuckDBInstance, VARCHAR } from '@duckdb/node-api';

const types = { VARCHAR, DOUBLE };
let instance;
let round = 0;

/**
 * What the executor's engine does for one job, and nothing else: a fresh in-memory database attached (as
 * DuckDBHost does per job), the CTAS of each step with its params bound with their declared types, each
 * output COPYed to Parquet and CSV with the options of tables.ts copyStatement. Timed from the ATTACH to the
 * last COPY; the DETACH (which the executor does after the job has ended) is not.
 */
async function run({ steps, outputs, params, outDir }) {
  const name = `"job_${round++}"`;
  mkdirSync(outDir, { recursive: true });
  const admin = await instance.connect();
  const t = performance.now();
  await admin.run(`ATTACH ':memory:' AS ${name}`);
  const connection = await instance.connect();
  await connection.run(`USE ${name}`);
  for (const [id, sql, declared] of steps) {
    const values = Object.fromEntries(Object.keys(declared).map((key) => [key, params[key]]));
    const bound = Object.fromEntries(Object.entries(declared).map(([key, type]) => [key, types[type]]));
    await connection.runAndReadAll(`CREATE TABLE "${id}" AS\n${sql}\n`, values, bound);
  }
  const ctasMs = performance.now() - t;
  for (const id of outputs) {
    const file = (format) => `'${path.join(outDir, `${id}.${format}`)}'`;
    await connection.runAndReadAll(`COPY "${id}" TO ${file('parquet')} (format parquet)`);
    await connection.runAndReadAll(`COPY "${id}" TO ${file('csv')} (format csv, header true)`);
  }
  const ms = performance.now() - t;
  connection.closeSync();
  await admin.run(`DETACH ${name}`);
  admin.closeSync();
  return { ms, ctasMs };
}

process.on('message', (message) => {
  void (async () => {
    try {
      if (message.settings) {
        const { threads, memoryLimit, tempDir } = message.settings;
        instance = await DuckDBInstance.create(':memory:', {
          threads: String(threads),
          memory_limit: memoryLimit,
          temp_directory: tempDir,
          autoinstall_known_extensions: 'false',
        });
        process.send({ ready: true });
      } else if (message.run) {
        process.send(await run(message.run));
      } else if (message.exit) {
        instance?.closeSync();
        process.disconnect();
      }
    } catch (error) {
      process.send({ error: String(error?.stack ?? error) });
    }
  })();
});

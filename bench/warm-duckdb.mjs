// The warm DuckDB side of workflow-vs-duckdb.mjs: a process of its own, kept alive across rounds, driven over
// IPC. It starts its instance only after the bench has placed it (in a cgroup shaped like an executor's, when
// the agent uses cgroups), so that its DuckDB threads are born there.
//   → { settings: { threads, memoryLimit, tempDir } }      ← { ready: true }
//   → { run: { steps, outputs, params, outDir } }          ← { ms, ctasMs } | { error }
//   (steps: [id, sql, {param: type}, [ids of the steps it reads]])
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { DOUBLE, DuckDBInstance, VARCHAR } from '@duckdb/node-api';

const types = { VARCHAR, DOUBLE };
let instance;
let round = 0;

/**
 * What the executor's engine does for one job, and nothing else, scheduled as well as it can be: a fresh
 * in-memory database attached (as DuckDBHost does per job); the CTAS of each step with its params bound with
 * their declared types, started as soon as the steps it reads are done (steps that do not depend on each
 * other run side by side, as the engine runs them); each output COPYed to Parquet and CSV with the options of
 * tables.ts copyStatement as soon as its table exists. Connections are kept for the next statement, as the
 * engine keeps them. Timed from the ATTACH to the last COPY; the DETACH (which the executor does after the
 * job has ended) is not. `ctasMs` is when the last CTAS ended.
 */
async function run({ steps, outputs, params, outDir }) {
  const name = `"job_${round++}"`;
  mkdirSync(outDir, { recursive: true });
  const admin = await instance.connect();
  const t = performance.now();
  await admin.run(`ATTACH ':memory:' AS ${name}`);
  const idle = [];
  const withConnection = async (work) => {
    let connection = idle.pop();
    if (!connection) {
      connection = await instance.connect();
      await connection.run(`USE ${name}`);
    }
    try {
      return await work(connection);
    } finally {
      idle.push(connection);
    }
  };
  const tables = new Map();
  for (const [id, sql, declared, needs] of steps) {
    const values = Object.fromEntries(Object.keys(declared).map((key) => [key, params[key]]));
    const bound = Object.fromEntries(Object.entries(declared).map(([key, type]) => [key, types[type]]));
    tables.set(
      id,
      Promise.all(needs.map((need) => tables.get(need))).then(() =>
        withConnection((c) => c.runAndReadAll(`CREATE TABLE "${id}" AS\n${sql}\n`, values, bound)),
      ),
    );
  }
  const ctasDone = Promise.all(tables.values()).then(() => performance.now() - t);
  const file = (id, format) => `'${path.join(outDir, `${id}.${format}`)}'`;
  await Promise.all(
    outputs.map((id) =>
      tables.get(id).then(() =>
        withConnection(async (c) => {
          await c.runAndReadAll(`COPY "${id}" TO ${file(id, 'parquet')} (format parquet)`);
          await c.runAndReadAll(`COPY "${id}" TO ${file(id, 'csv')} (format csv, header true)`);
        }),
      ),
    ),
  );
  const ms = performance.now() - t;
  const ctasMs = await ctasDone;
  for (const connection of idle) connection.closeSync();
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

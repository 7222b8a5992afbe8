// The DuckDB part of a no-op SQL job, as an executor runs it: the job takes the database its host attached
// ahead (`DuckDBHost.openJob`), opens its connection, runs the step's CTAS and closes its database (dropped
// behind the host's queue, after which the next spare is attached). Next to it, the honest limit: the same
// CTAS on one warm connection that stays open, with nothing per job (a new table name each time, kept).
// Both in this process, sequential, one round of each side in turn; CPU is the whole process's (DuckDB's
// threads included), so the two sides never overlap.
// Usage: node bench/duckdb-host.mjs [jobs=2000] [--threads=2] [--rounds=5] [--compare=<checkout>]
// With --compare, a third side runs the DuckDBHost of that checkout's dist/ (its own API where it differs).
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { DuckDBInstance } from '@duckdb/node-api';
import { machine, percentile, repoRoot } from './harness.mjs';

const positional = process.argv.slice(2).filter((arg) => !arg.startsWith('--'));
const option = (name) =>
  process.argv.find((arg) => arg.startsWith(`--${name}=`))?.slice(name.length + 3) ?? undefined;
const jobs = Number(positional[0] ?? 2000);
const threads = Number(option('threads') ?? 2);
const rounds = Number(option('rounds') ?? 5);
const compare = option('compare');
const sql = 'CREATE TABLE one AS\nSELECT 1 AS ok\n';
const workDir = '/nonexistent/steward-bench-job';

/** A side: `job(i)` does one job's DuckDB work and returns its row count. */
async function hostSide(root, name) {
  const tables = await import(pathToFileURL(path.join(root, 'dist/engine/tables.js')).href);
  const host = await tables.DuckDBHost.create({
    spillDir: path.join('/tmp', `steward-bench-duckdb-host-${process.pid}-${name}`),
    memoryLimit: '512MB',
    threads,
  });
  // Checkouts from before JobConnection hand out DuckDB's own connection and count with runCounting.
  const count = (connection) =>
    connection.count ? connection.count(sql, {}, {}) : tables.runCounting(connection, sql, {}, {});
  const close = (connection) => (connection.close ? connection.close() : connection.closeSync());
  return {
    name,
    async job() {
      // The host attaches the next spare behind the previous job's DETACH: a job's work includes it.
      await host.settled();
      const database = await host.openJob({ workDir });
      const connection = await database.connect();
      const rows = await count(connection);
      close(connection);
      await database.close();
      return rows;
    },
    // Closed once nothing is in flight (an ATTACH still running when the instance closes would crash it;
    // checkouts before the host's close waited for that itself).
    close: async () => {
      await host.settled();
      await host.close();
    },
  };
}

async function limitSide() {
  const instance = await DuckDBInstance.create(':memory:', { threads: String(threads) });
  const connection = await instance.connect();
  let n = 0;
  return {
    name: 'warm connection',
    async job() {
      const table = `t${n++}`;
      const result = await connection.run(`CREATE TABLE ${table} AS\nSELECT 1 AS ok\n`);
      return Number(result.getChunk(0).getRowValues(0)[0]);
    },
    close: () => instance.closeSync(),
  };
}

const sides = [await limitSide(), await hostSide(repoRoot, 'this')];
if (compare) sides.push(await hostSide(path.resolve(compare), path.basename(path.resolve(compare))));
const figures = new Map(sides.map((side) => [side.name, { wall: [], cpu: [] }]));
for (const side of sides) for (let i = 0; i < 200; i++) await side.job(); // warm-up
for (let round = 0; round < rounds; round++) {
  // The side that runs first turns each round.
  for (let k = 0; k < sides.length; k++) {
    const side = sides[(round + k) % sides.length];
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < jobs; i++) {
      if ((await side.job()) !== 1) throw new Error(`${side.name}: a CTAS of one row counted otherwise`);
    }
    const cpu = process.cpuUsage(cpu0);
    figures.get(side.name).wall.push((performance.now() - t0) / jobs);
    figures.get(side.name).cpu.push((cpu.user + cpu.system) / 1000 / jobs);
  }
}
for (const side of sides) await side.close();
console.log(
  `DuckDB part of a no-op SQL job (${machine()}), threads=${threads}, ${jobs} jobs × ${rounds} rounds`,
);
const limit = figures.get('warm connection');
const med = (values) => percentile(values, 50);
for (const side of sides) {
  const { wall, cpu } = figures.get(side.name);
  console.log(
    `${side.name.padEnd(16)} wall ${med(wall).toFixed(3)} ms/job, CPU ${med(cpu).toFixed(3)} ms/job (rounds: ${cpu.map((v) => v.toFixed(3)).join(', ')})` +
      (side === sides[0]
        ? ''
        : `; ${(med(cpu) / med(limit.cpu)).toFixed(2)}× the warm connection's CPU, ${(med(wall) / med(limit.wall)).toFixed(2)}× its wall`),
  );
}

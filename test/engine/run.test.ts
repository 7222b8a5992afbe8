import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterAll, describe, expect, it } from 'vitest';
import { closeSqlAnalyzer, DuckDBHost } from '../../src/engine/index.js';
import { until } from '../support/wait.js';
import { makeJobDirs, processAlive, startRun } from './helpers.js';

afterAll(async () => {
  await closeSqlAnalyzer();
});

async function writeSalesData(workDir: string): Promise<void> {
  await mkdir(path.join(workDir, 'data'), { recursive: true });
  await writeFile(
    path.join(workDir, 'data', 'sales.csv'),
    'region;day;amount\nEU;2026-01-01;10\nEU;2026-02-01;20\nUS;2026-02-01;5\nAPAC;2026-02-03;7\n',
  );
  await writeFile(
    path.join(workDir, 'data', 'targets.json'),
    JSON.stringify([
      { region: 'EU', target: 25 },
      { region: 'US', target: 1 },
    ]),
  );
  const instance = await DuckDBInstance.create(':memory:');
  const connection = await instance.connect();
  const target = path.join(workDir, 'data', 'names.parquet').replaceAll("'", "''");
  await connection.run(
    `COPY (SELECT * FROM (VALUES ('EU', 'Europe'), ('US', 'United States')) AS t(region, label)) TO '${target}' (FORMAT parquet)`,
  );
  connection.closeSync();
  instance.closeSync();
}

const pipeline = `name: pipeline
params:
  region: {type: enum, values: [EU, US, APAC], default: EU}
  since: {type: date, required: true}
steps:
  - id: sales
    read: {path: data/sales.csv, options: {header: true, delim: ";"}}
  - id: names
    read: data/names.parquet
  - id: targets
    read: data/targets.json
  - id: by_region
    sql: |
      SELECT s.region, n.label, sum(s.amount)::INTEGER AS total, any_value(t.target) AS target
      FROM sales s JOIN names n USING (region) LEFT JOIN targets t USING (region)
      WHERE s.region = $region AND s.day >= $since
      GROUP BY ALL
  - id: export
    write: {table: by_region, path: "out/by_region_\${region}.csv"}
  - id: chart
    python: |
      import csv, os
      rows = list(csv.DictReader(open(os.path.join(os.environ["STEWARD_INPUT_DIR"], "by_region.csv"))))
      with open(os.path.join(os.environ["STEWARD_OUTPUT_DIR"], "summary.txt"), "w") as out:
          out.write(f"{rows[0]['label']}={rows[0]['total']} region={os.environ['region']} since={os.environ['since']}\\n")
    inputs: [by_region]
  - id: hello
    shell: |
      echo "hello $region from $STEWARD_STEP_ID" > "$STEWARD_OUTPUT_DIR/hello.txt"
      echo "to stderr" >&2
    needs: [chart]
  - id: tool
    command: [python3, -c, "import os,sys; open(os.environ['STEWARD_OUTPUT_DIR'] + '/tool.txt', 'w').write(sys.argv[1] + ' ' + os.environ['REGION'])", "\${region}-$$x"]
    env: {REGION: "r=\${region}"}
    needs: [hello]
outputs: [by_region, export, chart, hello, tool]
`;

describe('runWorkflow', () => {
  it('runs read (csv, parquet, json) → sql with bound params → write → python → shell → command and publishes outputs', async (context) => {
    const dirs = await makeJobDirs(context.task.name);
    try {
      await writeSalesData(dirs.workDir);
      const run = startRun(pipeline, dirs, { since: '2026-01-15' });
      const result = await run.result;
      expect(result.error).toBeUndefined();
      expect(result.state).toBe('succeeded');
      const succeeded = run.events.filter((event) => event.state === 'succeeded');
      expect(succeeded.map((event) => event.stepId).sort()).toEqual([
        'by_region',
        'chart',
        'export',
        'hello',
        'names',
        'sales',
        'targets',
        'tool',
      ]);
      expect(succeeded.find((event) => event.stepId === 'sales')?.rows).toBe(4);
      expect(succeeded.find((event) => event.stepId === 'by_region')?.rows).toBe(1);
      // The counts of a read and a CTAS with bound parameters, and of a COPY without any.
      expect(succeeded.find((event) => event.stepId === 'export')?.rows).toBe(1);

      const byName = new Map(result.outputs.map((output) => [output.name, output]));
      const table = byName.get('by_region');
      expect(table).toMatchObject({ kind: 'table', rows: 1 });
      if (table?.kind !== 'table') throw new Error('expected a table output');
      expect(await readFile(table.csvPath, 'utf8')).toBe('region,label,total,target\nEU,Europe,20,25\n');
      const exported = byName.get('by_region_EU.csv');
      expect(exported?.kind).toBe('file');
      expect(await readFile(path.join(dirs.workDir, 'out', 'by_region_EU.csv'), 'utf8')).toBe(
        'region,label,total,target\nEU,Europe,20,25\n',
      );
      const read = async (name: string) => {
        const output = byName.get(name);
        if (output?.kind !== 'file') throw new Error(`expected file output ${name}`);
        return readFile(output.path, 'utf8');
      };
      expect(await read('summary.txt')).toBe('Europe=20 region=EU since=2026-01-15\n');
      expect(await read('hello.txt')).toBe('hello EU from hello\n');
      expect(await read('tool.txt')).toBe('EU-$x r=EU');
      const stderrLog = result.logs.find((log) => log.stepId === 'hello' && log.stream === 'stderr');
      expect(await readFile(stderrLog!.path, 'utf8')).toBe('to stderr\n');
      const parquet = await DuckDBInstance.create(':memory:');
      const connection = await parquet.connect();
      const rows = await connection.runAndReadAll('SELECT total FROM read_parquet($p)', {
        p: table.parquetPath,
      });
      expect(rows.getRows()).toEqual([[20]]);
      connection.closeSync();
      parquet.closeSync();
    } finally {
      await dirs.cleanup();
    }
  });

  it('treats a param value carrying SQL as data: an injection attempt matches nothing', async (context) => {
    const dirs = await makeJobDirs(context.task.name);
    try {
      await writeSalesData(dirs.workDir);
      const source = `name: inject
params:
  region: {type: string, default: EU}
steps:
  - id: sales
    read: {path: data/sales.csv, options: {delim: ";"}}
  - id: picked
    sql: SELECT * FROM sales WHERE region = $region
`;
      const run = startRun(source, dirs, { region: "EU' OR 1=1 --" });
      const result = await run.result;
      expect(result.state).toBe('succeeded');
      expect(run.events.find((event) => event.stepId === 'picked' && event.state === 'succeeded')?.rows).toBe(
        0,
      );
    } finally {
      await dirs.cleanup();
    }
  });

  it('fails a job whose SQL step errors at run time, naming the step, and skips its downstream steps', async (context) => {
    const dirs = await makeJobDirs(context.task.name);
    try {
      const source = `name: broken
steps:
  - id: numbers
    sql: SELECT range AS n FROM range(3)
  - id: by_region
    sql: SELECT no_such_column FROM numbers
  - id: after
    shell: echo never
    needs: [by_region]
`;
      const run = startRun(source, dirs);
      const result = await run.result;
      expect(result.state).toBe('failed');
      expect(result.error?.code).toBe('STEWARD_STEP_FAILED');
      expect(result.error?.message).toMatch(/^step "by_region" failed: Binder Error: /);
      expect(
        run.events.find((event) => event.stepId === 'by_region' && event.state === 'failed')?.message,
      ).toContain('no_such_column');
      expect(run.events.filter((event) => event.stepId === 'after').map((event) => event.state)).toEqual([
        'skipped',
      ]);
    } finally {
      await dirs.cleanup();
    }
  });

  it('fails a job whose script exits non-zero with the exit code and the end of stderr, and cancels its running siblings', async (context) => {
    const dirs = await makeJobDirs(context.task.name);
    try {
      const source = `name: exits
steps:
  - id: slow
    shell: sleep 30
  - id: boom
    shell: |
      echo "first line" >&2
      echo "it broke" >&2
      exit 3
  - id: after
    shell: echo never
    needs: [boom]
`;
      const started = Date.now();
      const run = startRun(source, dirs, {}, { killGraceMs: 500 });
      const result = await run.result;
      expect(Date.now() - started).toBeLessThan(10_000);
      expect(result.state).toBe('failed');
      expect(result.error).toEqual({
        code: 'STEWARD_STEP_FAILED',
        message: 'step "boom" exited with code 3:\nfirst line\nit broke',
      });
      const stateOf = (id: string) =>
        run.events.filter((event) => event.stepId === id).map((event) => event.state);
      expect(stateOf('slow')).toEqual(['running', 'canceled']);
      expect(stateOf('after')).toEqual(['skipped']);
    } finally {
      await dirs.cleanup();
    }
  });

  it('cancels a job mid step quickly and leaves neither the shell nor its children running', async (context) => {
    const dirs = await makeJobDirs(context.task.name);
    try {
      const source = `name: cancel
steps:
  - id: sleeper
    shell: |
      sleep 30 &
      echo $! > "$STEWARD_OUTPUT_DIR/child.pid"
      echo $$ > "$STEWARD_OUTPUT_DIR/shell.pid"
      sleep 30; wait
  - id: later
    shell: echo never
    needs: [sleeper]
`;
      const run = startRun(source, dirs);
      await run.waitFor((event) => event.stepId === 'sleeper' && event.state === 'running');
      const outDir = path.join(dirs.workDir, '.steward', 'out', 'sleeper');
      const pids = await waitForPids([path.join(outDir, 'child.pid'), path.join(outDir, 'shell.pid')]);
      for (const pid of pids) expect(await processAlive(pid)).toBe(true);
      const canceledAt = Date.now();
      run.controller.abort();
      const result = await run.result;
      expect(Date.now() - canceledAt).toBeLessThan(5000);
      expect(result.state).toBe('canceled');
      expect(result.error?.code).toBe('STEWARD_JOB_CANCELED');
      for (const pid of pids) expect(await processAlive(pid)).toBe(false);
      expect(run.events.filter((event) => event.stepId === 'sleeper').map((event) => event.state)).toEqual([
        'running',
        'canceled',
      ]);
      expect(run.events.filter((event) => event.stepId === 'later').map((event) => event.state)).toEqual([
        'skipped',
      ]);
    } finally {
      await dirs.cleanup();
    }
  });

  it('fails a step that exceeds its timeout with STEWARD_STEP_TIMEOUT', async (context) => {
    const dirs = await makeJobDirs(context.task.name);
    try {
      const run = startRun('name: t\nsteps:\n  - id: slow\n    shell: sleep 30\n    timeout: 300ms\n', dirs);
      const result = await run.result;
      expect(result.state).toBe('failed');
      expect(result.error).toEqual({
        code: 'STEWARD_STEP_TIMEOUT',
        message: 'step "slow" timed out after 300ms',
      });
    } finally {
      await dirs.cleanup();
    }
  });

  it('interrupts a long SQL query when the whole job exceeds its time limit', async (context) => {
    const dirs = await makeJobDirs(context.task.name);
    try {
      const started = Date.now();
      const run = startRun(
        'name: t\nsteps:\n  - id: heavy\n    sql: SELECT count(*) AS n FROM range(10000000000) a\n',
        dirs,
        {},
        { timeoutMs: 500 },
      );
      const result = await run.result;
      expect(Date.now() - started).toBeLessThan(10_000);
      expect(result.state).toBe('failed');
      expect(result.error?.code).toBe('STEWARD_STEP_TIMEOUT');
      expect(result.error?.message).toContain('"heavy"');
    } finally {
      await dirs.cleanup();
    }
  });

  it('runs independent steps in parallel', async (context) => {
    const dirs = await makeJobDirs(context.task.name);
    try {
      const source = `name: parallel
steps:
  - id: left
    shell: sleep 1
  - id: right
    shell: sleep 1
  - id: joined
    shell: "true"
    needs: [left, right]
`;
      const run = startRun(source, dirs);
      const result = await run.result;
      expect(result.state).toBe('succeeded');
      const at = (id: string, state: string) =>
        run.events.find((event) => event.stepId === id && event.state === state)!.time;
      // Both started before either finished.
      expect(at('right', 'running')).toBeLessThan(at('left', 'succeeded'));
      expect(at('left', 'running')).toBeLessThan(at('right', 'succeeded'));
      expect(at('joined', 'running')).toBeGreaterThanOrEqual(
        Math.max(at('left', 'succeeded'), at('right', 'succeeded')),
      );
    } finally {
      await dirs.cleanup();
    }
  });

  it('fails the job when two steps publish a file of the same name', async (context) => {
    const dirs = await makeJobDirs(context.task.name);
    try {
      const source = `name: clash
steps:
  - id: one
    shell: echo 1 > "$STEWARD_OUTPUT_DIR/report.txt"
  - id: two
    shell: echo 2 > "$STEWARD_OUTPUT_DIR/report.txt"
`;
      const result = await startRun(source, dirs).result;
      expect(result.state).toBe('failed');
      expect(result.error?.message).toBe('outputs: steps "one" and "two" both publish "report.txt"');
    } finally {
      await dirs.cleanup();
    }
  });
});

describe('runWorkflow on a shared DuckDBHost (as executors run jobs)', () => {
  it('runs the full pipeline with relative paths resolved in the job directory and the same outputs', async (context) => {
    const dirs = await makeJobDirs(context.task.name);
    const host = await DuckDBHost.create({
      spillDir: path.join(dirs.tempDir, 'spill'),
      memoryLimit: '512MB',
      threads: 2,
    });
    try {
      await writeSalesData(dirs.workDir);
      const run = startRun(pipeline, dirs, { since: '2026-01-15' }, { duckdbHost: Promise.resolve(host) });
      const result = await run.result;
      expect(result.error).toBeUndefined();
      expect(result.state).toBe('succeeded');
      const table = result.outputs.find((output) => output.name === 'by_region');
      if (table?.kind !== 'table') throw new Error('expected a table output');
      expect(await readFile(table.csvPath, 'utf8')).toBe('region,label,total,target\nEU,Europe,20,25\n');
      // The job's database is gone with the job (dropped behind the host's queue): no job database attached
      // now (the next job's, the spare) holds a table.
      await host.settled();
      const connection = await (await host.openJob({ workDir: dirs.workDir })).connect();
      const tables = await connection.rows(
        "SELECT database_name, table_name FROM duckdb_tables() WHERE database_name LIKE 'job_%'",
      );
      expect(tables).toEqual([]);
      const databases = await connection.rows(
        "SELECT database_name FROM duckdb_databases() WHERE database_name LIKE 'job_%'",
      );
      expect(databases.length).toBeLessThanOrEqual(2);
      // Its relative paths are the job's: the job's first statement set them.
      expect(await connection.rows("SELECT current_setting('file_search_path')")).toEqual([[dirs.workDir]]);
      connection.close();
    } finally {
      await host.close();
      await dirs.cleanup();
    }
  });

  it("resolves relative paths in the job directory from a job's first statement, with or without parameters", async (context) => {
    const dirs = await makeJobDirs(context.task.name);
    const host = await DuckDBHost.create({
      spillDir: path.join(dirs.tempDir, 'spill'),
      memoryLimit: '256MB',
      threads: 1,
    });
    try {
      await mkdir(path.join(dirs.workDir, 'data'), { recursive: true });
      await writeFile(path.join(dirs.workDir, 'data', 'rel.csv'), 'x\n1\n2\n3\n');
      const sources = [
        "name: rel\nsteps:\n  - id: n\n    sql: SELECT count(*) AS n FROM 'data/rel.csv'\noutputs: [n]\n",
        "name: rel\nparams:\n  min: {type: integer, default: 2}\nsteps:\n  - id: n\n    sql: SELECT count(*) AS n FROM 'data/rel.csv' WHERE x >= $min\noutputs: [n]\n",
      ];
      for (const [index, source] of sources.entries()) {
        // Each job takes the spare attached ahead: its first statement sets the job's directory.
        await host.settled();
        const result = await startRun(source, dirs, {}, { duckdbHost: Promise.resolve(host) }).result;
        expect(result.error).toBeUndefined();
        const table = result.outputs.find((output) => output.name === 'n');
        if (table?.kind !== 'table') throw new Error('expected a table output');
        expect(await readFile(table.csvPath, 'utf8')).toBe(`n\n${index === 0 ? 3 : 2}\n`);
      }
    } finally {
      await host.close();
      await dirs.cleanup();
    }
  });

  it('takes the limits and spill directory given to configure when started before they were known', async (context) => {
    const dirs = await makeJobDirs(context.task.name);
    const host = await DuckDBHost.create();
    try {
      await host.configure({ spillDir: path.join(dirs.tempDir, 'spill'), memoryLimit: '300MB', threads: 1 });
      const connection = await (await host.openJob({ workDir: dirs.workDir })).connect();
      const rows = await connection.rows(
        "SELECT current_setting('threads'), current_setting('memory_limit'), current_setting('temp_directory')",
      );
      connection.close();
      const [threads, memory, spill] = rows[0]!;
      expect(Number(threads)).toBe(1);
      expect(String(memory)).toMatch(/^28\d\.\d MiB$/);
      expect(spill).toBe(path.join(dirs.tempDir, 'spill'));
    } finally {
      await host.close();
      await dirs.cleanup();
    }
  });

  it('runs jobs one after another in fresh databases (the spare attached ahead is empty, the last one is dropped)', async (context) => {
    const dirs = await makeJobDirs(context.task.name);
    const host = await DuckDBHost.create({
      spillDir: path.join(dirs.tempDir, 'spill'),
      memoryLimit: '512MB',
      threads: 1,
    });
    const source = (value: number) =>
      `name: again\nsteps:\n  - id: t\n    sql: SELECT ${value} AS v\n  - id: n\n    sql: SELECT count(*) AS tables FROM duckdb_tables() WHERE table_name = 't'\n    needs: [t]\noutputs: [t, n]\n`;
    try {
      for (const value of [1, 2, 3]) {
        const result = await startRun(source(value), dirs, {}, { duckdbHost: Promise.resolve(host) }).result;
        expect(result.error).toBeUndefined();
        const csv = async (name: string) => {
          const table = result.outputs.find((output) => output.name === name);
          if (table?.kind !== 'table') throw new Error(`expected a table output ${name}`);
          return readFile(table.csvPath, 'utf8');
        };
        // A table named like the last job's is created anew (a reused database would refuse it), and the job
        // sees only its own table among all the host's databases.
        expect(await csv('t')).toBe(`v\n${value}\n`);
        expect(await csv('n')).toBe('tables\n1\n');
      }
      await host.settled();
      const connection = await (await host.openJob({ workDir: dirs.workDir })).connect();
      expect(await connection.rows('SELECT database_name, table_name FROM duckdb_tables()')).toEqual([]);
      connection.close();
    } finally {
      await host.close();
      await dirs.cleanup();
    }
  });

  it("reuses a job's connections across steps and exports, and closes a connection whose statement failed", async (context) => {
    const dirs = await makeJobDirs(context.task.name);
    const real = await DuckDBHost.create({
      spillDir: path.join(dirs.tempDir, 'spill'),
      memoryLimit: '512MB',
      threads: 2,
    });
    // The real host, counting the connections a job opens and closes.
    let opened = 0;
    let closed = 0;
    const counting = {
      openJob: async (options: { workDir: string }) => {
        const job = await real.openJob(options);
        return {
          connect: async () => {
            const connection = await job.connect();
            opened++;
            const close = connection.close.bind(connection);
            connection.close = () => {
              closed++;
              close();
            };
            return connection;
          },
          close: () => job.close(),
        };
      },
    } as unknown as DuckDBHost;
    const chain = `name: chain
steps:
  - id: a
    sql: SELECT range AS v FROM range(10)
  - id: b
    sql: SELECT v * 2 AS v FROM a
  - id: c
    sql: SELECT sum(v) AS total FROM b
outputs: [b, c]
`;
    try {
      const ok = await startRun(chain, dirs, {}, { duckdbHost: Promise.resolve(counting) }).result;
      expect(ok.state).toBe('succeeded');
      // Three steps one after the other and two tables exported in two formats: seven connections before.
      expect(opened).toBeLessThanOrEqual(2);
      expect(closed).toBe(opened);
      const c = ok.outputs.find((output) => output.name === 'c');
      if (c?.kind !== 'table') throw new Error('expected a table output');
      expect(await readFile(c.csvPath, 'utf8')).toBe('total\n90\n');

      opened = closed = 0;
      const failing = `name: failing
steps:
  - id: a
    sql: SELECT 1 AS v
  - id: b
    sql: SELECT CAST('x' AS INTEGER) AS v FROM a
`;
      const failed = await startRun(failing, dirs, {}, { duckdbHost: Promise.resolve(counting) }).result;
      expect(failed.state).toBe('failed');
      // a's connection served b, whose statement failed: closed then, not kept.
      expect(opened).toBe(1);
      expect(closed).toBe(1);
    } finally {
      await real.settled();
      await real.close();
      await dirs.cleanup();
    }
  });

  it('closes while a job database is still being detached and the next spare attached, and the process lives on', async (context) => {
    const dirs = await makeJobDirs(context.task.name);
    try {
      for (let round = 0; round < 20; round++) {
        const host = await DuckDBHost.create({
          spillDir: path.join(dirs.tempDir, 'spill'),
          memoryLimit: '256MB',
          threads: 1,
        });
        const job = await host.openJob({ workDir: dirs.workDir });
        const connection = await job.connect();
        expect(await connection.rows('SELECT 42')).toEqual([[42]]);
        // The job's end queues a DETACH and the next spare's ATTACH; the host closes before they have run.
        await job.close();
        await host.close();
        // A closed host refuses new jobs with an error, not a crash.
        await expect(host.openJob({ workDir: dirs.workDir })).rejects.toThrow(/closed/);
      }
    } finally {
      await dirs.cleanup();
    }
  });

  it('keeps the tables of two concurrent jobs apart even when their steps have the same names', async (context) => {
    const first = await makeJobDirs(`${context.task.name} one`);
    const second = await makeJobDirs(`${context.task.name} two`);
    const host = Promise.resolve(
      await DuckDBHost.create({
        spillDir: path.join(first.tempDir, 'spill'),
        memoryLimit: '512MB',
        threads: 2,
      }),
    );
    const source = (value: number) => `name: same
steps:
  - id: t
    sql: SELECT ${value} AS v
  - id: wait
    shell: sleep 0.3
    needs: [t]
  - id: r
    sql: SELECT v FROM t
    needs: [wait]
outputs: [r]
`;
    try {
      const runs = [
        startRun(source(1), first, {}, { duckdbHost: host }),
        startRun(source(2), second, {}, { duckdbHost: host }),
      ];
      const results = await Promise.all(runs.map((run) => run.result));
      const values = await Promise.all(
        results.map(async (result) => {
          expect(result.state).toBe('succeeded');
          const table = result.outputs.find((output) => output.name === 'r');
          if (table?.kind !== 'table') throw new Error('expected a table output');
          return readFile(table.csvPath, 'utf8');
        }),
      );
      expect(values).toEqual(['v\n1\n', 'v\n2\n']);
    } finally {
      await (await host).close();
      await first.cleanup();
      await second.cleanup();
    }
  });
});

async function waitForPids(files: string[]): Promise<number[]> {
  return until(
    'the pid files',
    async () => {
      const contents = await Promise.all(files.map((file) => readFile(file, 'utf8').catch(() => '')));
      return contents.every((text) => text.trim() !== '') && contents.map((text) => Number(text.trim()));
    },
    5_000,
    25,
  );
}

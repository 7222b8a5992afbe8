import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ResultInfo } from '../../src/protocol/index.js';
import { ServerDouble, cliBin, runCli, sendJson, tempDirFor } from './harness.js';

let server: ServerDouble;
let dir: string;
let env: Record<string, string>;
const jobId = '01JTESTJOB0000000000000001';

beforeEach(async (context) => {
  dir = await tempDirFor(context.task.name);
  server = await ServerDouble.start();
  env = { STEWARD_SERVER: server.url, STEWARD_TOKEN: 'test-token' };
});
afterEach(async () => {
  await server.close();
  await fs.rm(dir, { recursive: true, force: true });
});

function result(name: string, kind: 'table' | 'file', overrides: Partial<ResultInfo> = {}): ResultInfo {
  return {
    name,
    kind,
    formats: kind === 'table' ? ['parquet', 'csv'] : [],
    size: 100,
    rows: kind === 'table' ? 2 : null,
    createdAt: '2026-11-22T10:00:05.000Z',
    ...overrides,
  };
}

/** Two MiB of bytes that are not valid UTF-8, so a text round trip would show. */
const parquetBytes = Buffer.alloc(2 * 1024 * 1024, 0xff);
parquetBytes.write('PAR1', 0);

function serveResults(results: ResultInfo[]): void {
  server.on('GET', `/api/jobs/${jobId}/results`, (_request, response) =>
    sendJson(response, 200, { results }),
  );
  server.on('GET', `/api/jobs/${jobId}/results/sales.csv`, (_request, response) => {
    response.writeHead(200, { 'content-type': 'text/csv' });
    response.end('region,total\nnorth,10\n');
  });
  server.on('GET', `/api/jobs/${jobId}/results/sales.parquet`, (_request, response) => {
    response.writeHead(200, { 'content-type': 'application/octet-stream' });
    // In pieces, as a large download arrives.
    for (let offset = 0; offset < parquetBytes.length; offset += 256 * 1024)
      response.write(parquetBytes.subarray(offset, offset + 256 * 1024));
    response.end();
  });
  server.on('GET', `/api/jobs/${jobId}/results/chart.png`, (_request, response) => {
    response.writeHead(200, { 'content-type': 'image/png' });
    response.end(Buffer.from([0x89, 0x50, 0x4e, 0x47]));
  });
}

describe('steward results', () => {
  it('lists results without --out', async () => {
    serveResults([result('sales', 'table'), result('chart.png', 'file', { size: 4 })]);
    const run = await runCli(cliBin, ['results', jobId], { configHome: dir, env });
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^NAME\s+KIND\s+FORMATS\s+ROWS\s+SIZE\s+CREATED\n/);
    expect(run.stdout).toMatch(/sales\s+table\s+parquet,csv\s+2\s+100 B/);
    expect(run.stdout).toMatch(/chart\.png\s+file\s+-\s+-\s+4 B/);
  });

  it('writes each table as NAME.csv and NAME.parquet and each file as-is into a new --out directory', async () => {
    serveResults([result('sales', 'table'), result('chart.png', 'file')]);
    const out = path.join(dir, 'out', 'nested');
    const run = await runCli(cliBin, ['results', jobId, '--out', out], { configHome: dir, env });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect((await fs.readdir(out)).sort()).toEqual(['chart.png', 'sales.csv', 'sales.parquet']);
    expect(await fs.readFile(path.join(out, 'sales.csv'), 'utf8')).toBe('region,total\nnorth,10\n');
    expect((await fs.readFile(path.join(out, 'sales.parquet'))).equals(parquetBytes)).toBe(true);
    expect([...(await fs.readFile(path.join(out, 'chart.png')))]).toEqual([0x89, 0x50, 0x4e, 0x47]);
  });

  it.each(['../x', 'a/b', 'a\\b', '..', '.', '.profile', 'x\u0000y'])(
    'refuses the hostile result name %j and writes nothing',
    async (hostile) => {
      serveResults([result('sales', 'table'), result(hostile, 'file')]);
      server.on('GET', /.*/, (_request, response) => {
        response.writeHead(200);
        response.end('owned');
      });
      const out = path.join(dir, 'out');
      const run = await runCli(cliBin, ['results', jobId, '--out', out], { configHome: dir, env });
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(
        /^steward: STEWARD_BAD_REQUEST: refusing result name .* from the server.*\n$/,
      );
      expect(run.stderr.split('\n')).toHaveLength(2);
      expect(server.requests.filter((request) => request.path !== `/api/jobs/${jobId}/results`)).toEqual([]);
      await expect(fs.readdir(out)).rejects.toThrow();
      expect(await fs.readdir(dir)).not.toContain('x');
    },
  );
});

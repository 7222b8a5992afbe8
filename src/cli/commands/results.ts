/** `steward results ID [--out DIR]`: list a job's results or download them, streaming each to disk. */
import { randomBytes } from 'node:crypto';
import { createWriteStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { plainNameProblem, type ResultInfo } from '../../protocol/index.js';
import { ApiClient } from '../client.js';
import { CliError } from '../failures.js';
import { formatBytes, formatCount, formatTable, formatTime } from '../output.js';
import { contextOf } from './shared.js';

export function registerResultCommands(program: Command): void {
  program
    .command('results')
    .description("list a job's results, or download them all with --out")
    .argument('<id>', 'job id')
    .option(
      '--out <dir>',
      'download into DIR (created if missing): tables as NAME.csv and NAME.parquet, files as-is',
    )
    .action(async (id: string, options: { out?: string }, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const { results } = await client.call('listResults', { params: { id } });
      if (options.out === undefined) {
        if (context.json) return context.printJson({ results });
        context.out(
          formatTable(
            ['name', 'kind', 'formats', 'rows', 'size', 'created'],
            results.map((result) => [
              result.name,
              result.kind,
              result.formats.join(','),
              formatCount(result.rows),
              formatBytes(result.size),
              formatTime(result.createdAt),
            ]),
          ),
        );
        return;
      }
      // The names come from the server, and so from whoever wrote the workflow: check them all before
      // writing anything, so a hostile name cannot place a file outside DIR.
      const downloads = results.flatMap((result) => plannedFiles(result));
      const dir = path.resolve(options.out);
      await fs.mkdir(dir, { recursive: true });
      const written: { name: string; file: string; bytes: number }[] = [];
      for (const download of downloads) {
        const file = path.join(dir, download.fileName);
        const response = await client.call('downloadResult', {
          params: { id, name: download.fileName },
          accept: '*/*',
        });
        const bytes = await streamToFile(response, file);
        written.push({ name: download.resultName, file, bytes });
        if (!context.json) context.out(`${file}  ${formatBytes(bytes)}\n`);
      }
      if (context.json) context.printJson({ jobId: id, dir, files: written });
    });
}

interface PlannedFile {
  resultName: string;
  fileName: string;
}

function plannedFiles(result: ResultInfo): PlannedFile[] {
  checkResultName(result.name);
  if (result.kind === 'file') return [{ resultName: result.name, fileName: result.name }];
  const formats = result.formats.length > 0 ? result.formats : ['csv', 'parquet'];
  return formats.map((format) => {
    if (!/^[a-z0-9]{1,16}$/.test(format)) {
      throw new CliError(
        'STEWARD_BAD_REQUEST',
        `refusing result ${JSON.stringify(result.name)}: unexpected format ${JSON.stringify(format)} from the server`,
      );
    }
    return { resultName: result.name, fileName: `${result.name}.${format}` };
  });
}

/**
 * A result name becomes a file name in DIR: one plain path component, by the same rule the server and the
 * engine apply (`plainNameProblem`), so every name a job can publish downloads and nothing else does.
 */
export function checkResultName(name: string): void {
  const problem = plainNameProblem(name);
  if (problem !== undefined) {
    throw new CliError(
      'STEWARD_BAD_REQUEST',
      `refusing result name ${JSON.stringify(name)} from the server: it ${problem} (a result name is one file name, no "/", "\\" or NUL, not starting with ".")`,
    );
  }
}

/**
 * Streams into a temporary file next to `file` and renames it on success, so an interrupted download never
 * looks complete. The temporary name is short: `NAME.part` of a 255-byte name would be too long a file name.
 */
async function streamToFile(response: Response, file: string): Promise<number> {
  const partial = path.join(
    path.dirname(file),
    `.steward-${process.pid}-${randomBytes(6).toString('hex')}.part`,
  );
  let bytes = 0;
  const body = ApiClient.bodyStream(response);
  body.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
  });
  try {
    await pipeline(body, createWriteStream(partial, { mode: 0o644 }));
  } catch (error) {
    await fs.rm(partial, { force: true });
    throw new CliError(
      'STEWARD_SERVER_UNREACHABLE',
      `download of ${path.basename(file)} was interrupted: ${(error as Error).message}`,
      { cause: error },
    );
  }
  await fs.rename(partial, file);
  return bytes;
}

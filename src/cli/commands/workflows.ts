/** `steward workflow push|list|show`. The server parses and validates workflows; the CLI only ships files. */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { WorkflowDetail, WorkflowRef, WorkflowSummary, WorkflowVersion } from '../../protocol/index.js';
import { CliError, UsageError } from '../failures.js';
import { formatBytes, formatTable, formatTime } from '../output.js';
import { contextOf, segment } from './shared.js';

export function registerWorkflowCommands(program: Command): void {
  const workflow = program.command('workflow').description('push, list and inspect workflows');

  workflow
    .command('push')
    .description('upload a workflow file (YAML or JSON) and the asset files it lists as a new version')
    .argument('<file>', 'workflow file')
    .action(async (file: string, _options: unknown, command: Command) => {
      const context = contextOf(command);
      const source = await readText(file);
      const assets = await readAssets(file, source);
      const client = await context.client();
      const version = await client.json('POST', '/api/workflows', WorkflowVersion, {
        body: { source, fileName: path.basename(file), assets },
      });
      if (context.json) context.printJson(version);
      else context.out(`pushed ${version.name}@${version.version}\n`);
    });

  workflow
    .command('list')
    .description('list workflows with their latest version')
    .action(async (_options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const { workflows } = await client.json(
        'GET',
        '/api/workflows',
        z.object({ workflows: z.array(WorkflowSummary) }),
      );
      if (context.json) return context.printJson({ workflows });
      context.out(
        formatTable(
          ['name', 'latest', 'updated', 'by', 'description'],
          workflows.map((item) => [
            item.name,
            item.latestVersion,
            formatTime(item.updatedAt),
            item.updatedBy,
            item.description,
          ]),
        ),
      );
    });

  workflow
    .command('show')
    .description('show a workflow version: parameters, steps, assets')
    .argument('<ref>', 'NAME or NAME@VERSION')
    .option('--source', 'print the workflow source instead')
    .action(async (ref: string, options: { source?: boolean }, command: Command) => {
      const context = contextOf(command);
      const { name, version } = parseWorkflowRef(ref);
      const client = await context.client();
      const detail = await client.json(
        'GET',
        version === null
          ? `/api/workflows/${segment(name)}`
          : `/api/workflows/${segment(name)}/versions/${version}`,
        WorkflowDetail,
      );
      if (context.json)
        return context.printJson(options.source ? { source: detail.source, format: detail.format } : detail);
      if (options.source)
        return context.out(detail.source.endsWith('\n') ? detail.source : `${detail.source}\n`);
      context.out(describeWorkflow(detail));
    });
}

export function parseWorkflowRef(ref: string): { name: string; version: number | null } {
  if (!WorkflowRef.safeParse(ref).success)
    throw new UsageError(`invalid workflow ${JSON.stringify(ref)}: expected NAME or NAME@VERSION`);
  const [name = '', version] = ref.split('@');
  return { name, version: version === undefined ? null : Number(version) };
}

function describeWorkflow(detail: z.infer<typeof WorkflowDetail>): string {
  const lines = [
    `${detail.name}@${detail.version}${detail.description ? `  ${detail.description}` : ''}`,
    `created ${formatTime(detail.createdAt)} by ${detail.createdBy}, digest ${detail.digest}`,
    '',
    'Parameters:',
  ];
  let text = `${lines.join('\n')}\n`;
  text += detail.params.length
    ? formatTable(
        ['name', 'type', 'required', 'default', 'values', 'description'],
        detail.params.map((param) => [
          param.name,
          param.type,
          param.required ? 'yes' : 'no',
          param.default === undefined ? null : JSON.stringify(param.default),
          param.values?.join('|'),
          param.description,
        ]),
      )
    : '(none)\n';
  text += '\nSteps:\n';
  text += formatTable(
    ['id', 'kind', 'needs'],
    detail.steps.map((step) => [step.id, step.kind, step.needs.join(', ')]),
  );
  if (detail.assets.length > 0) {
    text += '\nAssets:\n';
    text += formatTable(
      ['path', 'size', 'digest'],
      detail.assets.map((asset) => [asset.path, formatBytes(asset.size), asset.digest.slice(0, 12)]),
    );
  }
  return text;
}

async function readText(file: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (error) {
    throw new CliError(
      'STEWARD_NOT_FOUND',
      `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
      { cause: error },
    );
  }
}

/**
 * The workflow's top-level `assets:` list, read from disk relative to the workflow file. Only this list is
 * looked at here: a source that does not parse is still sent, so the server reports the problem with its line.
 */
async function readAssets(file: string, source: string): Promise<Record<string, string>> {
  let document: unknown;
  try {
    document = parseYaml(source);
  } catch {
    return {};
  }
  const listed = (document as { assets?: unknown } | null)?.assets;
  if (!Array.isArray(listed)) return {};
  const base = path.dirname(path.resolve(file));
  const assets: Record<string, string> = {};
  for (const entry of listed) {
    const relative = typeof entry === 'string' ? entry : (entry as { path?: unknown } | null)?.path;
    if (typeof relative !== 'string') continue;
    const safe = checkAssetPath(relative);
    const content = await fs
      .readFile(path.join(base, ...safe.split('/')))
      .catch((error: NodeJS.ErrnoException) => {
        throw new CliError(
          'STEWARD_NOT_FOUND',
          `asset ${relative} (listed in ${file}): cannot read it: ${error.code ?? error.message}`,
          { cause: error },
        );
      });
    assets[safe] = content.toString('base64');
  }
  return assets;
}

/** Assets must stay inside the workflow's directory: no absolute paths, no `..`, no NUL. */
export function checkAssetPath(relative: string): string {
  const refuse = (why: string): never => {
    throw new CliError('STEWARD_WORKFLOW_INVALID', `asset ${JSON.stringify(relative)}: ${why}`);
  };
  if (relative === '' || relative.includes('\0')) refuse('expected a relative file path');
  if (path.posix.isAbsolute(relative) || path.win32.isAbsolute(relative))
    refuse('absolute paths are not allowed; use a path relative to the workflow file');
  const parts = relative.split(/[\\/]+/).filter((part) => part !== '' && part !== '.');
  if (parts.includes('..')) refuse('".." is not allowed; assets must be inside the workflow\'s directory');
  if (parts.length === 0) refuse('expected a relative file path');
  return parts.join('/');
}

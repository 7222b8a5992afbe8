/**
 * `steward workflow push|list|show|delete`. The server parses and validates workflows; the CLI only ships
 * files. Workflows are addressed as `[SPACE/]NAME[@VERSION]`; a bare name is in your personal space.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import {
  parseWorkflowRef as parseRef,
  SpaceName,
  type ParsedWorkflowRef,
  type WorkflowDetail,
} from '../../protocol/index.js';
import type { ApiClient } from '../client.js';
import { CliError, UsageError } from '../failures.js';
import { formatBytes, formatTable, formatTime } from '../output.js';
import { contextOf } from './shared.js';

export function registerWorkflowCommands(program: Command): void {
  const workflow = program.command('workflow').description('push, list and inspect workflows');
  workflowPush(workflow);
  workflowList(workflow);
  workflowShow(workflow);
  workflowDelete(workflow);
}

/** `steward workflow push` */
function workflowPush(workflow: Command): void {
  workflow
    .command('push')
    .description(
      'upload a workflow file (YAML or JSON) and the asset files it lists as a new version, into your personal space or --space',
    )
    .argument('<file>', 'workflow file')
    .option('--space <space>', 'a shared space where you are an editor (default: your personal space)')
    .action(async (file: string, options: { space?: string }, command: Command) => {
      const context = contextOf(command);
      const space = options.space === undefined ? undefined : checkSpace(options.space);
      const source = await readText(file);
      const assets = await readAssets(file, source);
      const client = await context.client();
      const body = { source, fileName: path.basename(file), assets };
      const version =
        space === undefined
          ? await client.call('pushWorkflow', { body })
          : await client.call('pushSpaceWorkflow', { params: { space }, body });
      if (context.json) context.printJson(version);
      else if (version.unchanged)
        context.out(`unchanged, still ${version.space}/${version.name}@${version.version}\n`);
      else context.out(`pushed ${version.space}/${version.name}@${version.version}\n`);
    });
}

/** `steward workflow list` */
function workflowList(workflow: Command): void {
  workflow
    .command('list')
    .description("list a space's workflows with their latest version (default: your personal space)")
    .option('--space <space>', 'a space you are a member of')
    .action(async (options: { space?: string }, command: Command) => {
      const context = contextOf(command);
      const space = options.space === undefined ? undefined : checkSpace(options.space);
      const client = await context.client();
      const { workflows } =
        space === undefined
          ? await client.call('listWorkflows')
          : await client.call('listSpaceWorkflows', { params: { space } });
      if (context.json) return context.printJson({ workflows });
      context.out(
        formatTable(
          ['workflow', 'latest', 'updated', 'by', 'description'],
          workflows.map((item) => [
            `${item.space}/${item.name}`,
            item.latestVersion,
            formatTime(item.updatedAt),
            item.updatedBy,
            item.description,
          ]),
        ),
      );
    });
}

/** `steward workflow show` */
function workflowShow(workflow: Command): void {
  workflow
    .command('show')
    .description('show a workflow version: parameters, steps, assets')
    .argument('<ref>', '[SPACE/]NAME[@VERSION] (a bare NAME is in your personal space)')
    .option('--source', 'print the workflow source instead')
    .action(async (ref: string, options: { source?: boolean }, command: Command) => {
      const context = contextOf(command);
      const parsed = parseWorkflowRef(ref);
      const client = await context.client();
      const detail = await showWorkflow(client, parsed);
      if (context.json)
        return context.printJson(options.source ? { source: detail.source, format: detail.format } : detail);
      if (options.source)
        return context.out(detail.source.endsWith('\n') ? detail.source : `${detail.source}\n`);
      context.out(describeWorkflow(detail));
    });
}

/** `steward workflow delete` */
function workflowDelete(workflow: Command): void {
  workflow
    .command('delete')
    .description(
      'delete a workflow (every version): it cannot be run any more; jobs that ran it keep their version',
    )
    .argument('<ref>', '[SPACE/]NAME (a bare NAME is in your personal space)')
    .action(async (ref: string, _options: unknown, command: Command) => {
      const context = contextOf(command);
      const parsed = parseWorkflowRef(ref);
      if (parsed.version !== undefined)
        throw new UsageError('delete removes a whole workflow: give [SPACE/]NAME without @VERSION');
      const client = await context.client();
      const deleted =
        parsed.space === undefined
          ? await client.call('deleteWorkflow', { params: { name: parsed.name } })
          : await client.call('deleteSpaceWorkflow', { params: { space: parsed.space, name: parsed.name } });
      if (context.json) return context.printJson(deleted);
      context.out(
        `deleted ${deleted.space}/${deleted.name} (${deleted.versions} version${deleted.versions === 1 ? '' : 's'})\n`,
      );
    });
}

/** `[SPACE/]NAME[@VERSION]`; a malformed one fails before any request. */
export function parseWorkflowRef(ref: string): ParsedWorkflowRef {
  const parsed = parseRef(ref);
  // A usage error (exit 2, nothing sent), worded with the code the server gives the same mistake.
  if ('error' in parsed) throw new UsageError(`STEWARD_WORKFLOW_REF_INVALID: ${parsed.error}`);
  return parsed;
}

function checkSpace(space: string): string {
  if (!SpaceName.safeParse(space).success)
    throw new UsageError(
      `--space: ${JSON.stringify(space)} is not a space name (lowercase letters, digits, "_", "." or "-")`,
    );
  return space;
}

/** A workflow (a version of it): the personal-space routes for a bare name, the space's routes otherwise. */
async function showWorkflow(
  client: ApiClient,
  ref: ParsedWorkflowRef,
): Promise<z.infer<typeof WorkflowDetail>> {
  const { space, name, version } = ref;
  if (space === undefined) {
    return version === undefined
      ? client.call('showWorkflow', { params: { name } })
      : client.call('showWorkflowVersion', { params: { name, version: String(version) } });
  }
  return version === undefined
    ? client.call('showSpaceWorkflow', { params: { space, name } })
    : client.call('showSpaceWorkflowVersion', { params: { space, name, version: String(version) } });
}

function describeWorkflow(detail: z.infer<typeof WorkflowDetail>): string {
  const lines = [
    `${detail.space}/${detail.name}@${detail.version}${detail.description ? `  ${detail.description}` : ''}`,
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

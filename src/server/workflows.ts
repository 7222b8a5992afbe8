/**
 * The workflow repository: every push is validated by the engine and stored as a new immutable version;
 * assets are stored content-addressed under `<sharedDir>/assets/<sha256>`. Parsed workflows are cached by
 * digest, because submit (a hot path) needs the parsed form and a digest never changes meaning.
 */
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { LRUCache } from 'lru-cache';
import { parse as parseYaml } from 'yaml';
import { describeWorkflow, parseWorkflow } from '../engine/index.js';
import type { Workflow } from '../engine/index.js';
import { StewardError, WorkflowName, closestNames, didYouMean } from '../protocol/index.js';
import type { AssetRecord, Store, WorkflowRecord } from '../store/index.js';
import type { AuditLog } from './audit.js';
import type { Principal } from './auth.js';
import { newId, sha256Hex } from './secrets.js';
import type { SpaceService, WorkflowAddress } from './spaces.js';

const PARSED_CACHE_SIZE = 256;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export interface PushInput {
  source: string;
  fileName?: string | undefined;
  format?: 'yaml' | 'json' | undefined;
  assets?: Record<string, string> | undefined;
}

/** The top-level `name` of a workflow source (YAML or JSON), if it has a string one. */
function declaredName(source: string): string | undefined {
  try {
    const document: unknown = parseYaml(source);
    const name = (document as { name?: unknown } | null)?.name;
    return typeof name === 'string' ? name : undefined;
  } catch {
    return undefined;
  }
}

/** A relative path with no `..`, `.` or empty segments, no backslashes or NULs. */
export function isSafeRelativePath(candidate: string): boolean {
  if (candidate.length === 0 || candidate.length > 255) return false;
  if (candidate.startsWith('/') || candidate.includes('\\') || candidate.includes('\0')) return false;
  return candidate.split('/').every((segment) => segment !== '' && segment !== '.' && segment !== '..');
}

export class WorkflowRepository {
  private readonly parsed = new LRUCache<string, Promise<Workflow>>({ max: PARSED_CACHE_SIZE });
  readonly assetDir: string;

  constructor(
    private readonly store: Store,
    sharedDir: string,
    private readonly audit: AuditLog,
    private readonly spaces: SpaceService,
  ) {
    this.assetDir = path.join(sharedDir, 'assets');
    mkdirSync(this.assetDir, { recursive: true, mode: 0o700 });
  }

  /**
   * Stores a new version in `spaceName` (default: the caller's personal space), which needs the editor role
   * there; nobody but its user pushes into a personal space.
   */
  async push(
    principal: Principal,
    input: PushInput,
    source: string,
    spaceName?: string,
  ): Promise<{ record: WorkflowRecord; unchanged: boolean }> {
    const space =
      spaceName === undefined
        ? await this.spaces.ownPersonal(principal)
        : (await this.spaces.require(principal, spaceName, 'push')).space;
    const workflow = await parseWorkflow(input.source, {
      requireReadSources: true,
      ...(input.format ? { format: input.format } : {}),
      ...(input.fileName ? { fileName: input.fileName } : {}),
    }).catch((error: unknown) => {
      // `name: finance/report` is someone addressing a space from inside the file: say how to do it.
      const name = declaredName(input.source);
      if (name?.includes('/'))
        throw new StewardError(
          'STEWARD_WORKFLOW_REF_INVALID',
          `name: ${JSON.stringify(name)} has a "/": a workflow's name is its name alone; choose the space when pushing (steward workflow push --space SPACE FILE)`,
          { cause: error },
        );
      throw error;
    });
    if (!WorkflowName.safeParse(workflow.name).success) {
      throw new StewardError(
        'STEWARD_WORKFLOW_INVALID',
        `name: expected lowercase letters, digits, "_" or "-", got ${JSON.stringify(workflow.name)}`,
        {
          details: { issues: [{ path: 'name', message: 'expected lowercase letters, digits, "_" or "-"' }] },
        },
      );
    }
    const assets = this.checkAssets(workflow, input.assets ?? {});
    const stored: AssetRecord[] = [];
    for (const asset of assets) {
      const digest = sha256Hex(asset.content);
      this.storeAsset(digest, asset.content);
      stored.push({ path: asset.path, digest, size: asset.content.length });
    }
    stored.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    const digest = sha256Hex(input.source + '\0' + stored.map((a) => `${a.path}\0${a.digest}\n`).join(''));
    // The same source and assets as the latest version: that version stays the latest, no new one.
    const latest = await this.store.getWorkflow(space.name, workflow.name);
    if (latest?.digest === digest) return { record: latest, unchanged: true };
    const description = describeWorkflow(workflow);
    const record = await this.store.insertWorkflowVersion({
      space: space.name,
      name: workflow.name,
      source: input.source,
      format: workflow.format,
      digest,
      description: description.description,
      params: description.params,
      steps: description.steps,
      assets: stored,
      createdBy: principal.user,
      createdAt: Date.now(),
    });
    this.parsed.set(digest, Promise.resolve(workflow));
    await this.audit.record({
      actor: principal.user,
      action: 'workflow.push',
      target: `${record.space}/${record.name}@${record.version}`,
      source,
      detail: { digest, assets: stored.length },
    });
    return { record, unchanged: false };
  }

  /**
   * `[space/]name[@version]` (latest when no version; a bare name is in the caller's personal space), for
   * reading or running it: needs the viewer role in the space. Deleted workflows are not found.
   */
  async resolve(principal: Principal, ref: string | WorkflowAddress): Promise<WorkflowRecord> {
    const address = typeof ref === 'string' ? this.spaces.address(principal, ref) : ref;
    await this.spaces.require(principal, address.space, 'view');
    const record = await this.store.getWorkflow(address.space, address.name, address.version);
    if (record) return record;
    if (address.version !== undefined && (await this.store.getWorkflow(address.space, address.name)))
      throw new StewardError(
        'STEWARD_NOT_FOUND',
        `no workflow ${address.space}/${address.name} version ${address.version}`,
      );
    throw await this.notFound(address);
  }

  /** Every version of a live workflow (viewer role). */
  async versions(principal: Principal, address: WorkflowAddress): Promise<WorkflowRecord[]> {
    await this.spaces.require(principal, address.space, 'view');
    const versions = await this.store.listWorkflowVersions(address.space, address.name);
    if (versions.length === 0) throw await this.notFound(address);
    return versions;
  }

  /**
   * "No workflow" with the space's closest names (the caller may view the space: names are no secret to
   * them), also in `details.suggestions`.
   */
  private async notFound(address: { space: string; name: string }): Promise<StewardError> {
    const names = (await this.store.listWorkflows(address.space)).map((summary) => summary.name);
    const suggestions = closestNames(address.name, names);
    return new StewardError(
      'STEWARD_NOT_FOUND',
      `no workflow ${address.space}/${address.name}${didYouMean(address.name, names)}`,
      { details: { suggestions } },
    );
  }

  /**
   * The exact version a job pinned at submit, deleted or not: what its executor loads and what its detail
   * shows. No permission check: the job's token or its owner's access was checked by the caller.
   */
  async pinned(workflow: { space: string; name: string; version: number }): Promise<WorkflowRecord> {
    const record = await this.store.getWorkflow(workflow.space, workflow.name, workflow.version, {
      includeDeleted: true,
    });
    if (!record)
      throw new StewardError(
        'STEWARD_NOT_FOUND',
        `no workflow ${workflow.space}/${workflow.name} version ${workflow.version}`,
      );
    return record;
  }

  /**
   * Deletes every version of a workflow (editor role; admins in shared spaces): it can no longer be run or
   * listed, and jobs that ran it keep their version readable.
   */
  async delete(
    principal: Principal,
    address: { space: string; name: string },
    source: string,
  ): Promise<{ space: string; name: string; versions: number }> {
    await this.spaces.require(principal, address.space, 'delete-workflow');
    const versions = await this.store.deleteWorkflow(address.space, address.name, principal.user, Date.now());
    if (versions === 0)
      throw new StewardError('STEWARD_NOT_FOUND', `no workflow ${address.space}/${address.name}`);
    await this.audit.record({
      actor: principal.user,
      action: 'workflow.delete',
      target: `${address.space}/${address.name}`,
      source,
      detail: { versions },
    });
    return { space: address.space, name: address.name, versions };
  }

  /** The parsed form of a stored version (cached by digest). */
  parsedFor(record: WorkflowRecord): Promise<Workflow> {
    const cached = this.parsed.get(record.digest);
    if (cached) return cached;
    const parsing = parseWorkflow(record.source, { format: record.format });
    this.parsed.set(record.digest, parsing);
    parsing.catch(() => this.parsed.delete(record.digest));
    return parsing;
  }

  assetPath(digest: string): string {
    return path.join(this.assetDir, digest);
  }

  private checkAssets(
    workflow: Workflow,
    given: Record<string, string>,
  ): { path: string; content: Buffer }[] {
    for (const assetPath of Object.keys(given)) {
      if (!isSafeRelativePath(assetPath)) {
        throw new StewardError(
          'STEWARD_BAD_REQUEST',
          `assets: path ${JSON.stringify(assetPath)} must be relative, without "..", "." or empty segments`,
          {
            details: {
              issues: [
                {
                  field: `body.assets.${assetPath}`,
                  rule: 'safe_relative_path',
                  message: 'unsafe asset path',
                },
              ],
            },
          },
        );
      }
      if (!workflow.assets.includes(assetPath)) {
        throw new StewardError(
          'STEWARD_BAD_REQUEST',
          `assets: ${JSON.stringify(assetPath)} is not listed in the workflow's assets`,
          {
            details: {
              issues: [
                {
                  field: `body.assets.${assetPath}`,
                  rule: 'listed_asset',
                  message: 'not listed in the workflow',
                },
              ],
            },
          },
        );
      }
    }
    const missing = workflow.assets.filter((listed) => !Object.hasOwn(given, listed));
    if (missing.length > 0) {
      throw new StewardError(
        'STEWARD_WORKFLOW_INVALID',
        `assets: ${missing.map((m) => JSON.stringify(m)).join(', ')} listed in the workflow but not uploaded`,
        {
          details: {
            issues: missing.map((m) => ({ path: 'assets', message: `asset ${m} was not uploaded` })),
          },
        },
      );
    }
    return Object.entries(given).map(([assetPath, encoded]) => {
      if (!BASE64.test(encoded)) {
        throw new StewardError('STEWARD_BAD_REQUEST', `body.assets.${assetPath}: expected base64 content`, {
          details: {
            issues: [
              { field: `body.assets.${assetPath}`, rule: 'base64', message: 'expected base64 content' },
            ],
          },
        });
      }
      return { path: assetPath, content: Buffer.from(encoded, 'base64') };
    });
  }

  private storeAsset(digest: string, content: Buffer): void {
    const target = this.assetPath(digest);
    if (existsSync(target)) return;
    const temp = path.join(this.assetDir, `.tmp-${newId()}`);
    writeFileSync(temp, content, { mode: 0o600 });
    renameSync(temp, target);
  }
}

/**
 * Workflow versions: immutable once stored, numbered per (space, name), deleted only by marking. A stored
 * version's content never changes, so versions read once are kept in memory (bounded); which version is
 * the latest, and whether it is deleted, is always asked of the database (another server may have pushed
 * or deleted).
 */
import type { Transaction } from 'kysely';
import { LRUCache } from 'lru-cache';
import type { ParamDefinition } from '../protocol/index.js';
import { isUniqueViolation, type StoreContext } from './context.js';
import type { Database } from './schema.js';

/** A stored version's declared params: the protocol's `ParamDefinition` (the engine's `ParamSpec`). */
export type ParamDefinitionRecord = ParamDefinition;

export interface AssetRecord {
  path: string;
  digest: string;
  size: number;
}

export interface WorkflowRecord {
  /** The space the workflow lives in; (space, name, version) is its key. */
  space: string;
  name: string;
  version: number;
  source: string;
  format: 'yaml' | 'json';
  digest: string;
  description: string;
  params: ParamDefinitionRecord[];
  steps: { id: string; kind: string; needs: string[] }[];
  assets: AssetRecord[];
  createdBy: string;
  createdAt: number;
}

export type NewWorkflowVersion = Omit<WorkflowRecord, 'version'>;

export interface WorkflowSummaryRecord {
  space: string;
  name: string;
  latestVersion: number;
  description: string;
  updatedAt: number;
  updatedBy: string;
}

/** Stored workflow versions kept in memory (see getWorkflow). */
const WORKFLOW_VERSIONS_KEPT = 256;

/** How often a push retries with the next number after losing a race for one. */
const VERSION_RACE_RETRIES = 5;

function toWorkflow(row: Database['workflows'], assets: readonly AssetRecord[]): WorkflowRecord {
  return {
    space: row.space,
    name: row.name,
    version: row.version,
    source: row.source,
    format: row.format,
    digest: row.digest,
    description: row.description,
    params: JSON.parse(row.params_json) as ParamDefinitionRecord[],
    steps: JSON.parse(row.steps_json) as WorkflowRecord['steps'],
    assets: assets.map((a) => ({ path: a.path, digest: a.digest, size: a.size })),
    createdBy: row.created_by,
    createdAt: row.created_at,
  };
}

export class WorkflowStore {
  /** Versions read once, by `space/name@version`; oldest insertion evicted first. */
  private readonly versions = new LRUCache<string, WorkflowRecord>({ max: WORKFLOW_VERSIONS_KEPT });

  constructor(private readonly ctx: StoreContext) {}

  /**
   * Stores a new immutable version in its space: previous + 1 (deleted versions count, so a number is never
   * given twice), decided inside the transaction. Two servers pushing the same name at once collide on the
   * primary key; the loser retries with the next number.
   */
  async insertWorkflowVersion(workflow: NewWorkflowVersion): Promise<WorkflowRecord> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.ctx.db.transaction().execute(async (trx) => {
          const row = await trx
            .selectFrom('workflows')
            .select((eb) => eb.fn.max<number | null>('version').as('v'))
            .where('space', '=', workflow.space)
            .where('name', '=', workflow.name)
            .executeTakeFirst();
          const version = Number(row?.v ?? 0) + 1;
          await insertVersionRows(trx, workflow, version);
          return { ...workflow, version };
        });
      } catch (error) {
        if (attempt < VERSION_RACE_RETRIES && isUniqueViolation(error)) continue;
        throw error;
      }
    }
  }

  /**
   * A version of a live (not deleted) workflow, or its latest when `version` is omitted. With
   * `includeDeleted` (a job's pinned version, for its executor and its detail) deleted versions are found
   * too. Versions read once are kept in memory: every submit and every executor's workflow fetch reads one.
   */
  async getWorkflow(
    space: string,
    name: string,
    version?: number,
    options: { includeDeleted?: boolean } = {},
  ): Promise<WorkflowRecord | undefined> {
    const key = (v: number) => `${space}/${name}@${v}`;
    if (version !== undefined && options.includeDeleted) {
      const cached = this.versions.get(key(version));
      if (cached) return cached;
    }
    let query = this.ctx.db.selectFrom('workflows').where('space', '=', space).where('name', '=', name);
    if (!options.includeDeleted) query = query.where('deleted_at', 'is', null);
    if (version === undefined || !options.includeDeleted) {
      let find = query.select('version');
      find =
        version === undefined
          ? find.orderBy('version', 'desc').limit(1)
          : find.where('version', '=', version);
      const found = await find.executeTakeFirst();
      if (!found) return undefined;
      const cached = this.versions.get(key(found.version));
      if (cached) return cached;
      query = query.where('version', '=', found.version);
    } else query = query.where('version', '=', version);
    const row = await query.selectAll().executeTakeFirst();
    if (!row) return undefined;
    const record = toWorkflow(row, await this.listAssets(space, name, row.version));
    this.versions.set(key(row.version), record);
    return record;
  }

  /** Every version of a live workflow, oldest first (empty when it does not exist or was deleted). */
  async listWorkflowVersions(space: string, name: string): Promise<WorkflowRecord[]> {
    const rows = await this.ctx.db
      .selectFrom('workflows')
      .selectAll()
      .where('space', '=', space)
      .where('name', '=', name)
      .where('deleted_at', 'is', null)
      .orderBy('version')
      .execute();
    if (rows.length === 0) return [];
    const assets = await this.ctx.db
      .selectFrom('workflow_assets')
      .selectAll()
      .where('space', '=', space)
      .where('name', '=', name)
      .orderBy('path')
      .execute();
    return rows.map((row) =>
      toWorkflow(
        row,
        assets.filter((a) => a.version === row.version),
      ),
    );
  }

  /** The live workflows of one space with their latest version. */
  async listWorkflows(space: string): Promise<WorkflowSummaryRecord[]> {
    const rows = await this.ctx.db
      .selectFrom('workflows as w')
      .innerJoin(
        (eb) =>
          eb
            .selectFrom('workflows')
            .select(['name'])
            .select((e) => e.fn.max<number>('version').as('latest'))
            .where('space', '=', space)
            .where('deleted_at', 'is', null)
            .groupBy('name')
            .as('m'),
        (join) => join.onRef('m.name', '=', 'w.name').onRef('m.latest', '=', 'w.version'),
      )
      .select(['w.space', 'w.name', 'w.version', 'w.description', 'w.created_at', 'w.created_by'])
      .where('w.space', '=', space)
      .orderBy('w.name')
      .execute();
    return rows.map((r) => ({
      space: r.space,
      name: r.name,
      latestVersion: r.version,
      description: r.description,
      updatedAt: r.created_at,
      updatedBy: r.created_by,
    }));
  }

  /** How many live workflows a space holds. */
  async countWorkflows(space: string): Promise<number> {
    const row = await this.ctx.db
      .selectFrom('workflows')
      .select((eb) => eb.fn.count<number>('name').distinct().as('n'))
      .where('space', '=', space)
      .where('deleted_at', 'is', null)
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }

  /**
   * Marks every version of a live workflow deleted: it cannot be run or listed any more, and the rows stay
   * for the jobs that ran them. Returns how many versions it deleted (0: no such live workflow).
   */
  async deleteWorkflow(space: string, name: string, by: string, time: number): Promise<number> {
    const result = await this.ctx.db
      .updateTable('workflows')
      .set({ deleted_at: time, deleted_by: by })
      .where('space', '=', space)
      .where('name', '=', name)
      .where('deleted_at', 'is', null)
      .executeTakeFirst();
    return Number(result.numUpdatedRows);
  }

  /** Whether an asset with this digest belongs to the given workflow version. */
  async workflowHasAsset(
    workflow: { space: string; name: string; version: number },
    digest: string,
  ): Promise<AssetRecord | undefined> {
    return this.ctx.db
      .selectFrom('workflow_assets')
      .select(['path', 'digest', 'size'])
      .where('space', '=', workflow.space)
      .where('name', '=', workflow.name)
      .where('version', '=', workflow.version)
      .where('digest', '=', digest)
      .executeTakeFirst();
  }

  private async listAssets(space: string, name: string, version: number): Promise<AssetRecord[]> {
    return this.ctx.db
      .selectFrom('workflow_assets')
      .select(['path', 'digest', 'size'])
      .where('space', '=', space)
      .where('name', '=', name)
      .where('version', '=', version)
      .orderBy('path')
      .execute();
  }
}

async function insertVersionRows(
  trx: Transaction<Database>,
  workflow: NewWorkflowVersion,
  version: number,
): Promise<void> {
  await trx
    .insertInto('workflows')
    .values({
      space: workflow.space,
      name: workflow.name,
      version,
      source: workflow.source,
      format: workflow.format,
      digest: workflow.digest,
      description: workflow.description,
      params_json: JSON.stringify(workflow.params),
      steps_json: JSON.stringify(workflow.steps),
      created_by: workflow.createdBy,
      created_at: workflow.createdAt,
      deleted_at: null,
      deleted_by: null,
    })
    .execute();
  if (workflow.assets.length === 0) return;
  await trx
    .insertInto('workflow_assets')
    .values(
      workflow.assets.map((a) => ({
        space: workflow.space,
        name: workflow.name,
        version,
        path: a.path,
        digest: a.digest,
        size: a.size,
      })),
    )
    .execute();
}

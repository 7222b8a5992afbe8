/**
 * The cluster registry: one row per defined cluster (the built-in `local` is not stored). Secrets are kept
 * as file paths only; the server reads them when it connects.
 */
import type { ClusterBroker } from '../config/index.js';
import { terminalJobStates, type JobState } from '../protocol/index.js';
import type { StoreContext } from './context.js';
import type { ClustersTable } from './schema.js';

export type ClusterState = ClustersTable['state'];

export interface ClusterRecord extends ClusterBroker {
  state: ClusterState;
  createdAt: number;
  changedAt: number;
}

export type NewCluster = Omit<ClusterRecord, 'state' | 'createdAt' | 'changedAt'>;

export class ClusterStore {
  constructor(private readonly ctx: StoreContext) {}

  /** Stores a new cluster, detached; false when one of that name exists. */
  async create(cluster: NewCluster): Promise<boolean> {
    const now = this.ctx.clock();
    const result = await this.ctx.db
      .insertInto('clusters')
      .values({
        name: cluster.name,
        broker_url: cluster.brokerUrl,
        vhost: cluster.vhost,
        password_file: cluster.passwordFile,
        ca_file: cluster.caFile,
        cert_file: cluster.certFile,
        key_file: cluster.keyFile,
        state: 'detached',
        created_at: now,
        changed_at: now,
      })
      .onConflict((oc) => oc.column('name').doNothing())
      .executeTakeFirst();
    return Number(result.numInsertedOrUpdatedRows ?? 0) > 0;
  }

  async get(name: string): Promise<ClusterRecord | undefined> {
    const row = await this.ctx.db
      .selectFrom('clusters')
      .selectAll()
      .where('name', '=', name)
      .executeTakeFirst();
    return row ? toCluster(row) : undefined;
  }

  async list(): Promise<ClusterRecord[]> {
    const rows = await this.ctx.db.selectFrom('clusters').selectAll().orderBy('name').execute();
    return rows.map(toCluster);
  }

  /** Moves a cluster to `to` if it is in one of `from` (one conditional update); false otherwise. */
  async setState(name: string, to: ClusterState, from: readonly ClusterState[]): Promise<boolean> {
    const result = await this.ctx.db
      .updateTable('clusters')
      .set({ state: to, changed_at: this.ctx.clock() })
      .where('name', '=', name)
      .where('state', 'in', [...from])
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  /** Deletes a detached cluster's definition; false when it is not there or not detached. */
  async remove(name: string): Promise<boolean> {
    const result = await this.ctx.db
      .deleteFrom('clusters')
      .where('name', '=', name)
      .where('state', '=', 'detached')
      .executeTakeFirst();
    return Number(result.numDeletedRows) > 0;
  }

  /** Jobs not ended, by cluster and state. */
  async unfinishedJobs(): Promise<Map<string, Partial<Record<JobState, number>>>> {
    const rows = await this.ctx.db
      .selectFrom('jobs')
      .select(['cluster', 'state', (eb) => eb.fn.countAll<number>().as('count')])
      .where('state', 'not in', [...terminalJobStates])
      .groupBy(['cluster', 'state'])
      .execute();
    const counts = new Map<string, Partial<Record<JobState, number>>>();
    for (const row of rows) {
      const entry = counts.get(row.cluster) ?? {};
      entry[row.state as JobState] = Number(row.count);
      counts.set(row.cluster, entry);
    }
    return counts;
  }

  /** Ids of a cluster's jobs in one of `states`, oldest first. */
  async jobIds(cluster: string, states: readonly JobState[]): Promise<string[]> {
    const rows = await this.ctx.db
      .selectFrom('jobs')
      .select('id')
      .where('cluster', '=', cluster)
      .where('state', 'in', [...states])
      .orderBy('id')
      .execute();
    return rows.map((row) => row.id);
  }
}

export function toCluster(row: ClustersTable): ClusterRecord {
  return {
    name: row.name,
    brokerUrl: row.broker_url,
    vhost: row.vhost,
    passwordFile: row.password_file,
    caFile: row.ca_file,
    certFile: row.cert_file,
    keyFile: row.key_file,
    state: row.state,
    createdAt: Number(row.created_at),
    changedAt: Number(row.changed_at),
  };
}

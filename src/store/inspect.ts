/**
 * Looking at a store without changing it (for `steward doctor`): does it answer, and which migrations has
 * it applied compared with the ones this release would apply at its next start.
 */
import { existsSync } from 'node:fs';
import type { Kysely } from 'kysely';
import type { StoreConfig } from '../config/index.js';
import { toCluster, type ClusterRecord } from './clusters.js';
import { connect } from './connection.js';
import { migrationNames } from './migrations/index.js';
import type { ClustersTable } from './schema.js';

export interface StoreStatus {
  /** False only for a SQLite file that does not exist yet (the first start creates it). */
  exists: boolean;
  applied: number;
  /** Migrations this release would apply at the next start. */
  pending: string[];
  /** Applied migrations this release does not know: the store is newer than the release. */
  unknown: string[];
}

/**
 * The clusters a server holds open (attached or detaching), read without changing the store; none when the
 * store or its clusters table does not exist yet. Throws when the store cannot be reached.
 */
export async function inspectClusters(config: StoreConfig): Promise<ClusterRecord[]> {
  if (config.kind === 'sqlite' && config.path !== undefined && !existsSync(config.path)) return [];
  const connection = await connect(config, { poolSize: 1 });
  try {
    const db = connection.db as unknown as Kysely<{ clusters: ClustersTable }>;
    const rows = await db
      .selectFrom('clusters')
      .selectAll()
      .where('state', 'in', ['attached', 'detaching'])
      .orderBy('name')
      .execute()
      .catch((error: Error) => {
        // A store from before clusters (or a fresh one) has no such table: no cluster to check.
        if (/clusters/.test(error.message)) return [];
        throw error;
      });
    return rows.map(toCluster);
  } finally {
    await connection.flusher?.close();
    await connection.db.destroy();
  }
}

interface MigrationTables {
  steward_migrations: { name: string; applied_at: number };
}

/** Connects, reads the applied migrations and disconnects; throws when the store cannot be reached. */
export async function inspectStore(config: StoreConfig): Promise<StoreStatus> {
  if (config.kind === 'sqlite' && config.path !== undefined && !existsSync(config.path))
    return { exists: false, applied: 0, pending: [...migrationNames], unknown: [] };
  const connection = await connect(config, { poolSize: 1 });
  try {
    const db = connection.db as unknown as Kysely<MigrationTables>;
    let applied: string[] = [];
    try {
      applied = (await db.selectFrom('steward_migrations').select('name').execute()).map((row) => row.name);
    } catch (error) {
      // A reachable database without the table is a fresh one; anything else (auth, network) is not.
      if (!/steward_migrations/.test((error as Error).message)) throw error;
    }
    const known = new Set(migrationNames);
    const done = new Set(applied);
    return {
      exists: true,
      applied: applied.length,
      pending: migrationNames.filter((name) => !done.has(name)),
      unknown: applied.filter((name) => !known.has(name)),
    };
  } finally {
    await connection.flusher?.close();
    await connection.db.destroy();
  }
}

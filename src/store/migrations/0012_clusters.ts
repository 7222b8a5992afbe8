import type { Kysely } from 'kysely';
import type { StoreDialect } from './index.js';

/**
 * Clusters: named agent pools, each behind a bus connection of its own.
 * - `clusters`: one row per defined cluster (the built-in `local` is not stored: it is the server's own bus).
 *   Secrets are never stored: the broker password and the TLS key are file paths the server reads when it
 *   connects. `state` is `detached`, `attached` or `detaching` (no new submits; its jobs finish).
 * - `jobs.cluster`: the cluster a job was routed to at submit; existing jobs ran on the server's own bus.
 * - `agents.cluster`: the cluster whose bus an agent's heartbeats came through, and what the cluster checks
 *   read from the heartbeat: the agent's clock offset, the fingerprint of the key it trusts, and its probe
 *   of the server's URL.
 */
export async function up(db: Kysely<unknown>, _dialect: StoreDialect): Promise<void> {
  const time = 'bigint' as const;
  await db.schema
    .createTable('clusters')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('broker_url', 'text', (c) => c.notNull())
    .addColumn('vhost', 'text')
    .addColumn('password_file', 'text')
    .addColumn('ca_file', 'text')
    .addColumn('cert_file', 'text')
    .addColumn('key_file', 'text')
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('created_at', time, (c) => c.notNull())
    .addColumn('changed_at', time, (c) => c.notNull())
    .execute();
  await db.schema
    .alterTable('jobs')
    .addColumn('cluster', 'text', (c) => c.notNull().defaultTo('local'))
    .execute();
  await db.schema.createIndex('jobs_cluster_state').on('jobs').columns(['cluster', 'state']).execute();
  await db.schema
    .alterTable('agents')
    .addColumn('cluster', 'text', (c) => c.notNull().defaultTo('local'))
    .execute();
  await db.schema.alterTable('agents').addColumn('clock_offset_ms', 'bigint').execute();
  await db.schema.alterTable('agents').addColumn('key_fingerprint', 'text').execute();
  await db.schema.alterTable('agents').addColumn('server_probe_json', 'text').execute();
}

import { defineConfig } from 'vitest/config';

/**
 * Test tiers, one vitest project each, chosen by what a test really needs. A file falls into a tier by its
 * folder; the few files that need more (or less) than their folder are listed as exceptions. A test file in a
 * folder no tier names runs with `integration`, so every file runs somewhere without editing this config.
 *
 * - `unit` (`npm run test:unit`, well under a minute): no root, no services, no OS users, no built dist/ —
 *   pure code, in-process HTTP doubles, temp dirs and child processes of the current user only. A unit test
 *   must not spawn the built CLI or daemon.
 * - `integration` (`npm run test:integration`): PostgreSQL, RabbitMQ, slapd, in-process servers, and the
 *   built CLI against an in-process server double.
 * - `e2e` (`npm run test:e2e`): root, real OS users, `steward up`.
 * - `distributed` (`npm run test:distributed`): clusters of daemons, 500-job bursts, killed brokers/agents.
 *
 * `npm test` (scripts/test) runs every tier.
 */
interface Tier {
  /** Folders under test/ whose tests belong here unless an exception moves them. */
  folders: string[];
  /** Single files (paths under test/, without `.test.ts`) that belong here although their folder does not. */
  files: string[];
}

const tiers = {
  unit: {
    folders: ['protocol', 'config', 'engine', 'agent', 'executor'],
    files: ['cli/output', 'cli/client', 'cli/data-dir', 'server/schedule-ticks', 'server/secrets'],
  },
  e2e: {
    folders: ['e2e'],
    // Real OS users, cgroups or the built daemon, although their folder is otherwise unit or integration.
    files: ['agent/cgroups', 'agent/cleanup', 'agent/identity', 'server/retries'],
  },
  distributed: { folders: ['distributed'], files: [] },
  // Also every folder no other tier names (test/server, test/store, test/bus, test/cli, new folders).
  integration: { folders: ['server', 'store', 'bus', 'cli'], files: [] },
} satisfies Record<string, Tier>;

type TierName = keyof typeof tiers;

const folderGlob = (folder: string): string => `test/${folder}/**/*.test.ts`;
const fileGlob = (file: string): string => `test/${file}.test.ts`;

/** The files of other tiers that sit in this tier's folders, and this tier's exceptions in other folders. */
function includeAndExclude(name: TierName): { include: string[]; exclude: string[] } {
  const others = (Object.keys(tiers) as TierName[]).filter((other) => other !== name);
  const include = [...tiers[name].folders.map(folderGlob), ...tiers[name].files.map(fileGlob)];
  const exclude = others.flatMap((other) => tiers[other].files.map(fileGlob));
  if (name === 'integration') {
    // The catch-all: everything not claimed by a folder of another tier.
    include.push('test/**/*.test.ts');
    exclude.push(...others.flatMap((other) => tiers[other].folders.map(folderGlob)));
  }
  return { include, exclude };
}

/** The built CLI, daemon and executor are what these tiers spawn, so they build dist/ first. */
const buildsDist = { globalSetup: ['test/global-setup.ts'] };

export default defineConfig({
  test: {
    // Integration tests start real servers, executors and databases: give them room, and keep
    // the two cores of a CI machine from being oversubscribed.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default'],
    // `vitest run` (and so `npm test`) runs every project: together they are every test file, once.
    projects: [
      { extends: true, test: { name: 'unit', ...includeAndExclude('unit') } },
      { extends: true, test: { name: 'integration', ...includeAndExclude('integration'), ...buildsDist } },
      { extends: true, test: { name: 'e2e', ...includeAndExclude('e2e'), ...buildsDist } },
      { extends: true, test: { name: 'distributed', ...includeAndExclude('distributed'), ...buildsDist } },
    ],
  },
});

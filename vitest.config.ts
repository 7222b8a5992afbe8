import { defineConfig } from 'vitest/config';

/**
 * The unit tier: tests that need no root, no services (PostgreSQL, RabbitMQ, slapd), no OS users and no
 * built dist/ — pure code, in-process HTTP doubles and child processes of the current user only. Runs in
 * well under a minute: `npm run test:unit`. A file listed here must not spawn the built CLI or daemon.
 */
const unitTests = [
  'test/protocol/**/*.test.ts',
  'test/config/**/*.test.ts',
  'test/engine/**/*.test.ts',
  'test/agent/account-cache.test.ts',
  'test/agent/event-batcher.test.ts',
  'test/agent/lock.test.ts',
  'test/cli/output.test.ts',
  'test/cli/client.test.ts',
  'test/executor/server-client.test.ts',
  'test/executor/live-log-shipper.test.ts',
];

export default defineConfig({
  test: {
    // Integration tests start real servers, executors and databases: give them room, and keep
    // the two cores of a CI machine from being oversubscribed.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default'],
    // `vitest run` (and so `npm test`) runs both projects: together they are every test file.
    projects: [
      { extends: true, test: { name: 'unit', include: unitTests } },
      {
        extends: true,
        test: {
          // Everything else: root, real OS users, `steward up`, PostgreSQL, RabbitMQ, slapd, bursts.
          name: 'system',
          include: ['test/**/*.test.ts'],
          exclude: unitTests,
          // Only these tests spawn the built CLI and daemon, so only they build dist/ first.
          globalSetup: ['test/global-setup.ts'],
        },
      },
    ],
  },
});

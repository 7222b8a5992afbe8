/**
 * The real machine an agent runs on (`AgentHost`): its id lock, the workspace root and users' directories,
 * cgroups, OS accounts through NSS (cached), per-user executor logs, housekeeping, and the HTTP call that
 * releases a claim.
 */
import type { CompiledAgentConfig } from '../config/index.js';
import {
  AccountCache,
  currentAccount,
  lookupAccount,
  mapToOsName,
  resolveAccount,
  type IdentityPolicy,
} from './accounts.js';
import { detectCgroups, removeCgroupParents } from './cgroups.js';
import { releaseClaim } from './claim-release.js';
import { planCleanup, runCleanup } from './cleanup.js';
import type { AgentHost, HousekeepingReport } from './collaborators.js';
import { AgentLock } from './lock.js';
import { UserLogs } from './user-logs.js';
import { ensureHome, prepareUserDirs, prepareWorkspaceRoot, userDirPaths } from './workspaces.js';

export function createHost(
  config: CompiledAgentConfig,
  isolation: AgentHost['isolation'] = process.getuid?.() === 0 ? 'per-user' : 'single-user',
): AgentHost {
  const perUser = isolation === 'per-user';
  const policy: IdentityPolicy = { ...config.identity, userMap: config.userMap };
  const lookupTimeoutMs = config.accountLookupTimeoutMs;
  const accounts = new AccountCache(config.accountCacheTtlMs, (name) => lookupAccount(name, lookupTimeoutMs));
  const userLogs = new UserLogs(config.logDir, config.logRetentionDays);
  return {
    isolation,
    lock: () => AgentLock.acquire(config.lockDir, config.id),
    prepareWorkspaceRoot: () => prepareWorkspaceRoot(config.workspaceRoot, perUser),
    detectCgroups: (instance) => detectCgroups(config.id, instance),
    removeCgroupParents,
    resolveAccount: async (user) =>
      perUser ? resolveAccount(user, policy, config.id, (name) => accounts.get(name)) : currentAccount(),
    osNameOf: (user) => {
      try {
        return mapToOsName(user, policy);
      } catch {
        return undefined;
      }
    },
    ensureHome: async (account) => (perUser ? ensureHome(account) : undefined),
    userDirs: (account) => userDirPaths(config.workspaceRoot, account),
    prepareUserDirs: (account) =>
      prepareUserDirs(config.workspaceRoot, account, perUser, { auditorsGroup: config.auditorsGroup }),
    releaseClaim: (offer, signal) => releaseClaim(offer, config.id, signal),
    houseKeep: async (): Promise<HousekeepingReport> => {
      const prunedLogs = await userLogs.prune();
      if (!config.cleanup || !perUser) return { prunedLogs, removed: 0, failed: [] };
      const report = await runCleanup(await planCleanup(config.workspaceRoot, config.cleanup.olderThanMs));
      const failed = report.failed.map(({ item, error }) => ({ path: item.path, error }));
      return { prunedLogs, removed: report.removed.length, failed };
    },
    userLog: (user, pid, stream, line) => userLogs.write(user, pid, stream, line),
    closeLogs: () => userLogs.close(),
  };
}

export { Agent } from './agent.js';
export { createAgent, type AgentOptions } from './wiring.js';
export { createHost } from './host.js';
export {
  systemClock,
  type AgentClock,
  type AgentDeps,
  type AgentHost,
  type AgentPool,
  type HousekeepingReport,
  type PoolEvents,
  type PooledExecutor,
} from './collaborators.js';
export {
  resolveAccount,
  mapToOsName,
  lookupAccount,
  accountGroups,
  nameProblem,
  AccountCache,
  currentAccount,
  type OsAccount,
  type IdentityPolicy,
} from './accounts.js';
export {
  checkAclSupport,
  ensureOwnedDir,
  findOnPath,
  inspectWorkspaceRoot,
  prepareUserDirs,
  prepareWorkspaceRoot,
  unsafeAncestor,
} from './workspaces.js';
export {
  detectCgroups,
  inspectCgroups,
  removeCgroupParents,
  type CgroupInventory,
  ExecutorCgroup,
  type CgroupSupport,
  type ExecutorLimits,
} from './cgroups.js';
export { planCleanup, runCleanup, KEEP_MARKER, type CleanupItem, type CleanupReport } from './cleanup.js';
export { DailyLogFile, UserLogs } from './user-logs.js';

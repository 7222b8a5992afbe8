export { Agent, type AgentOptions } from './agent.js';
export {
  resolveAccount,
  mapToOsName,
  lookupAccount,
  AccountCache,
  currentAccount,
  defaultBannedUsers,
  type OsAccount,
  type IdentityPolicy,
} from './accounts.js';
export { ensureOwnedDir, prepareUserDirs, prepareWorkspaceRoot } from './workspaces.js';

/**
 * Configuration: what people write (`ServerConfig`, `AgentConfig`, durations like "30m") is compiled once at
 * the boundary into frozen `Compiled*` objects with every default filled in. Internals take only those.
 * Unknown keys are errors, never silently ignored.
 */
export { AgentConfig, compileAgentConfig, defaultMaxJobsPerUser, type CompiledAgentConfig } from './agent.js';
export { BusConfig, type CompiledBusConfig } from './bus.js';
export {
  clusterBusConfig,
  ClustersConfig,
  type ClusterBroker,
  type CompiledClustersConfig,
} from './clusters.js';
export {
  compileIdentityPolicy,
  defaultBannedUsers,
  IdentityPolicyConfig,
  type CompiledIdentityPolicy,
} from './identity.js';
export {
  LdapConfig,
  LoginThrottleConfig,
  normalizeDn,
  type CompiledLdapConfig,
  type CompiledLoginThrottle,
} from './ldap.js';
export {
  NotificationsConfig,
  SmtpConfig,
  type CompiledNotificationsConfig,
  type CompiledSmtpConfig,
} from './notifications.js';
export { compileMetricsConfig, MetricsConfig, type CompiledMetricsConfig } from './metrics.js';
export { readConfigFile } from './read.js';
export {
  compileRetentionConfig,
  RetentionConfig,
  type CompiledRetentionConfig,
  type RetentionHorizons,
} from './retention.js';
export { compileServerConfig, RetriesConfig, ServerConfig, type CompiledServerConfig } from './server.js';
export { parseByteSize } from './sizes.js';
export { StoreConfig, compileStoreConfig, type CompiledStoreConfig } from './store.js';

export { createServer } from './server.js';
export type { CreateServerOptions, StewardServer } from './server.js';
export { buildOpenApiDocument } from './openapi.js';
export { STEWARD_VERSION } from './version.js';
export { LdapDirectory } from './ldap.js';
export { ServerMetrics } from './metrics/index.js';
export type { RetentionService } from './retention.js';

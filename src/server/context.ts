import type { Logger } from 'pino';
import type { Bus } from '../bus/index.js';
import type { CompiledServerConfig } from '../config/index.js';
import type { Store } from '../store/index.js';
import type { AuditLog } from './audit.js';
import type { ClusterRegistry } from './clusters/registry.js';
import type { ClusterService } from './clusters/service.js';
import type { DaskWorkers } from './dask/workers.js';
import type { Authenticator } from './auth.js';
import type { JobService } from './jobs/index.js';
import type { NotificationService } from './notifications/index.js';
import type { ScheduleService } from './schedules/index.js';
import type { UserAdmin } from './users.js';
import type { ResultFiles } from './results.js';
import type { RetentionService } from './retention.js';
import type { PortalSessions } from './sessions.js';
import type { SpaceService } from './spaces.js';
import type { JobWatch } from './watch.js';
import type { LiveLogs } from './live-logs.js';
import type { UploadService } from './uploads.js';
import type { WorkflowRepository } from './workflows.js';

/** The server's parts, wired once in createServer and handed to the route handlers. */
export interface ServerContext {
  config: CompiledServerConfig;
  store: Store;
  /** The server's own bus: the `local` cluster's. */
  bus: Bus;
  /** The attached clusters' buses (`registry`) and their administration (`service`). */
  clusters: { registry: ClusterRegistry; service: ClusterService };
  logger: Logger;
  audit: AuditLog;
  auth: Authenticator;
  /** Portal browser sessions; also resolves the caller of every user/admin route (bearer or cookie). */
  sessions: PortalSessions;
  workflows: WorkflowRepository;
  spaces: SpaceService;
  jobs: JobService;
  schedules: ScheduleService;
  users: UserAdmin;
  results: ResultFiles;
  /** Uploads for `file` params and jobs' input files. */
  uploads: UploadService;
  /** Step logs arriving while their step runs. */
  liveLogs: LiveLogs;
  watch: JobWatch;
  /** Dask workers placed on the agents of jobs' clusters (worker offers, their TLS files and reports). */
  dask: DaskWorkers;
  /** Users' notification rules (the dispatcher sends what job ends queued). */
  notifications: NotificationService;
  /** Pins and the retention sweep. */
  retention: RetentionService;
  version: string;
  openApiDocument(): Record<string, unknown>;
}

export { Store, openStore } from './store.js';
export { inspectClusters, inspectStore, type StoreStatus } from './inspect.js';
export type {
  GroupRecord,
  MemberKind,
  SpaceMemberRecord,
  SpaceRecord,
  SpaceRole,
  SpaceStore,
} from './spaces.js';
export type { ChangeListener, JobChangeNotice } from './changes.js';
export type { JobFileStore, JobInputRecord, UploadRecord } from './job-files.js';
export type {
  ClaimedDelivery,
  DeliveryRecord,
  DeliverySettlement,
  NewNotificationRule,
  NotificationRuleRecord,
  NotificationStore,
} from './notifications.js';
export { TickTakenError } from './schedules.js';
export type {
  MisfirePolicy,
  NewSchedule,
  OverlapPolicy,
  ScheduleRecord,
  ScheduleStore,
  TickClaim,
} from './schedules.js';
export {
  STATEMENT_KINDS,
  statementsSince,
  type StatementCounts,
  type StatementCountsSnapshot,
  type StatementKind,
} from './statements.js';
export { decodeJobCursor, encodeJobCursor } from './listings.js';
export type { ExpiredJob, ExpiryRule, RetentionStore } from './retention.js';
export { LIVE_JOB_STATES, type LiveJobCount, type LiveJobState, type StatsStore } from './stats.js';
export type { AuditPageFilter, JobCursor, JobPageFilter, Listings, Page } from './listings.js';
export type {
  AgentRecord,
  AppliedEvent,
  ClaimResult,
  ClusterRecord,
  ClusterState,
  NewCluster,
  Clock,
  StoreErrorKind,
  AttemptRecord,
  AssetRecord,
  BatchJob,
  StoredBatchJob,
  AuditRecord,
  FoundToken,
  JobDetailRecord,
  JobPatch,
  JobRecord,
  ListAuditFilter,
  ListJobsFilter,
  NewAuditRecord,
  NewJob,
  NewWorkflowVersion,
  OpenStoreOptions,
  ParamDefinitionRecord,
  ResultRecord,
  ResultUpload,
  RetryPlan,
  RetryResult,
  StepRecord,
  TokenRecord,
  TransitionOptions,
  TransitionResult,
  UserChange,
  UserChangeOutcome,
  UserRecord,
  WorkflowRecord,
  WorkflowSummaryRecord,
} from './store.js';

export { Store, openStore } from './store.js';
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
export { decodeJobCursor, encodeJobCursor } from './listings.js';
export type { AuditPageFilter, JobCursor, JobPageFilter, Listings, Page } from './listings.js';
export type {
  AgentRecord,
  AppliedEvent,
  ClaimResult,
  AttemptRecord,
  AssetRecord,
  AuditRecord,
  JobDetailRecord,
  JobPatch,
  JobRecord,
  ListJobsFilter,
  NewAuditRecord,
  NewJob,
  NewWorkflowVersion,
  OpenStoreOptions,
  ParamDefinitionRecord,
  ResultRecord,
  RetryPlan,
  RetryResult,
  StepRecord,
  TokenRecord,
  TransitionResult,
  UserChange,
  UserChangeOutcome,
  UserRecord,
  WorkflowRecord,
  WorkflowSummaryRecord,
} from './store.js';

export { Store, openStore } from './store.js';
export type { ChangeListener, JobChangeNotice } from './changes.js';
export type {
  AgentRecord,
  AppliedEvent,
  AssetRecord,
  AuditRecord,
  JobPatch,
  JobRecord,
  ListJobsFilter,
  NewAuditRecord,
  NewJob,
  NewWorkflowVersion,
  OpenStoreOptions,
  ParamDefinitionRecord,
  ResultRecord,
  StepRecord,
  TokenRecord,
  TransitionResult,
  UserRecord,
  WorkflowRecord,
  WorkflowSummaryRecord,
} from './store.js';

/**
 * The portal's view of the REST API: every shape comes from src/protocol (inferred from the server's own
 * zod schemas), never copied. Type-only imports, so no schema code ships in the bundle.
 */
import type { z } from 'zod';
import type {
  AgentInfo,
  AuditEntry,
  GroupInfo,
  ParamDefinition,
  PreviewResponse,
  ResultInfo,
  SpaceDetail,
  SpaceInfo,
  TokenInfo,
  User,
  WorkflowDetail,
  WorkflowSummary,
  WorkflowVersion,
  Job,
  JobDetail,
  StepInfo,
  LogEntry,
  CreateTokenResponse,
  SessionInfo,
  UploadInfo,
  JobInputInfo,
  LogChunkEvent,
  JobList,
  AuditList,
  ScheduleInfo,
} from '../../src/protocol/api.js';
import type { JobState, StepState } from '../../src/protocol/states.js';

import { terminalJobStates } from '../../src/protocol/state-names.js';
export type { Job, JobDetail, StepInfo, User, ResultInfo, WorkflowVersion, JobState, StepState };
export type Agent = z.infer<typeof AgentInfo>;
export type Audit = z.infer<typeof AuditEntry>;
export type Group = z.infer<typeof GroupInfo>;
export type Param = z.infer<typeof ParamDefinition>;
export type Preview = z.infer<typeof PreviewResponse>;
export type Space = z.infer<typeof SpaceInfo>;
export type SpaceWithMembers = z.infer<typeof SpaceDetail>;
export type Token = z.infer<typeof TokenInfo>;
export type NewToken = z.infer<typeof CreateTokenResponse>;
export type Workflow = z.infer<typeof WorkflowDetail>;
export type WorkflowListItem = z.infer<typeof WorkflowSummary>;
export type StepLog = z.infer<typeof LogEntry>;
export type JobPage = z.infer<typeof JobList>;
export type AuditPage = z.infer<typeof AuditList>;
export type Schedule = z.infer<typeof ScheduleInfo>;
/** The session as `POST/GET /api/auth/session` answer it (the cookie itself is HttpOnly). */
export type Session = SessionInfo;
/** `POST /api/uploads`: a file stored for a `file` param, owned by the caller until a job takes it. */
export type Upload = UploadInfo;
/** An input file a job took from an upload (JobDetail `inputs`). */
export type JobInput = JobInputInfo;
/** `event: log` of the job SSE stream: a chunk of a step's stdout or stderr as it arrived. */
export type LogChunk = LogChunkEvent;

export const terminalStates: ReadonlySet<string> = terminalJobStates;

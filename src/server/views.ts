/** Store records → API shapes. Times become ISO strings here, at the edge, and nowhere else. */
import type {
  AttemptRecord,
  AuditRecord,
  GroupRecord,
  JobDetailRecord,
  JobInputRecord,
  JobRecord,
  ResultRecord,
  SpaceMemberRecord,
  SpaceRecord,
  StepRecord,
  TokenRecord,
  UploadRecord,
  UserRecord,
  WorkflowRecord,
} from '../store/index.js';
import type {
  AttemptInfo,
  GroupInfo,
  Job,
  JobDetail,
  JobInputInfo,
  ResultInfo,
  SpaceInfo,
  SpaceMember,
  SpaceRole,
  StepInfo,
  UploadInfo,
  User,
  WorkflowVersion,
} from '../protocol/index.js';

export function iso(time: number): string;
export function iso(time: number | null): string | null;
export function iso(time: number | null): string | null {
  return time === null ? null : new Date(time).toISOString();
}

export function jobView(job: JobRecord): Job {
  return {
    id: job.id,
    user: job.user,
    workflow: { space: job.workflow.space, name: job.workflow.name, version: job.workflow.version },
    params: job.params,
    labels: job.labels,
    state: job.state,
    attempt: job.attempt,
    createdAt: iso(job.createdAt),
    startedAt: iso(job.startedAt),
    finishedAt: iso(job.finishedAt),
    agentId: job.agentId,
    executor: job.executor,
    error: job.error,
    cluster: job.cluster,
    schedule: job.schedule,
  };
}

export function stepView(step: StepRecord): StepInfo {
  return {
    id: step.id,
    kind: step.kind,
    state: step.state,
    startedAt: iso(step.startedAt),
    finishedAt: iso(step.finishedAt),
    durationMs: step.durationMs,
    rows: step.rows,
    progress: step.progress,
    message: step.message,
  };
}

export function attemptView(attempt: AttemptRecord): AttemptInfo {
  return {
    attempt: attempt.attempt,
    state: attempt.state,
    agentId: attempt.agentId,
    startedAt: iso(attempt.startedAt),
    finishedAt: iso(attempt.finishedAt),
    error: attempt.error,
  };
}

/**
 * Takes one `Store.getJobDetail` read: a job and steps read apart may contradict each other. `pushedBy`: who
 * pushed the pinned version (null when unknown).
 */
export function jobDetailView(
  { job, steps, attempts }: JobDetailRecord,
  pushedBy: string | null,
  inputs: readonly JobInputRecord[] = [],
): JobDetail {
  const view = jobView(job);
  return {
    ...view,
    workflow: { ...view.workflow, pushedBy },
    steps: steps.map(stepView),
    attempts: attempts.map(attemptView),
    inputs: inputs.map(jobInputView),
    pinned: job.pinned,
    filesPurgedAt: iso(job.filesPurgedAt),
  };
}

export function jobInputView(input: JobInputRecord): JobInputInfo {
  return { param: input.param, name: input.name, size: input.size, sha256: input.sha256 };
}

export function uploadView(upload: UploadRecord): UploadInfo {
  return {
    id: upload.id,
    name: upload.name,
    size: upload.size,
    sha256: upload.sha256,
    expiresAt: iso(upload.expiresAt),
  };
}

export function spaceView(space: SpaceRecord, role: SpaceRole | null): SpaceInfo {
  return {
    name: space.name,
    kind: space.kind,
    owner: space.owner,
    description: space.description,
    createdBy: space.createdBy,
    createdAt: iso(space.createdAt),
    role,
  };
}

export function spaceMemberView(member: SpaceMemberRecord): SpaceMember {
  return {
    kind: member.kind,
    name: member.member,
    role: member.role,
    addedBy: member.addedBy,
    addedAt: iso(member.addedAt),
  };
}

export function groupView(group: GroupRecord): GroupInfo {
  return {
    name: group.name,
    description: group.description,
    createdBy: group.createdBy,
    createdAt: iso(group.createdAt),
    members: group.members,
  };
}

export function userView(user: UserRecord): User {
  return {
    name: user.name,
    role: user.role,
    createdAt: iso(user.createdAt),
    disabled: user.disabled,
    source: user.source,
    deletedAt: iso(user.deletedAt),
  };
}

export function tokenView(token: TokenRecord): {
  id: string;
  name: string;
  user: string;
  createdAt: string;
  expiresAt: string | null;
  lastUsedAt: string | null;
} {
  return {
    id: token.id,
    name: token.name,
    user: token.user,
    createdAt: iso(token.createdAt),
    expiresAt: iso(token.expiresAt),
    lastUsedAt: iso(token.lastUsedAt),
  };
}

export function workflowVersionView(workflow: WorkflowRecord): WorkflowVersion {
  return {
    space: workflow.space,
    name: workflow.name,
    version: workflow.version,
    digest: workflow.digest,
    description: workflow.description,
    createdBy: workflow.createdBy,
    createdAt: iso(workflow.createdAt),
    params: workflow.params,
    steps: workflow.steps,
    assets: workflow.assets,
  };
}

export function workflowDetailView(
  workflow: WorkflowRecord,
): WorkflowVersion & { source: string; format: 'yaml' | 'json' } {
  return { ...workflowVersionView(workflow), source: workflow.source, format: workflow.format };
}

export function resultView(result: ResultRecord): ResultInfo {
  return {
    name: result.name,
    kind: result.kind,
    formats: result.formats,
    size: result.size,
    rows: result.rows,
    createdAt: iso(result.createdAt),
  };
}

export function auditView(entry: AuditRecord): {
  id: number;
  time: string;
  actor: string;
  action: string;
  target: string | null;
  source: string | null;
  detail: Record<string, unknown> | null;
} {
  return { ...entry, time: iso(entry.time) };
}

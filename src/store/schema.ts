/**
 * Row types of the store's tables, as Kysely sees them. Times are epoch-ms integers, JSON is text and
 * booleans are 0/1 integers, so the same rows come back from SQLite and PostgreSQL.
 */
import type { Generated } from 'kysely';

export interface UsersTable {
  name: string;
  role: 'admin' | 'user';
  password_hash: string | null;
  disabled: number;
  created_at: number;
  /** `local` or `ldap` (migration 0002). */
  source: Generated<'local' | 'ldap'>;
  /** When an admin deleted the user; null while it exists (migration 0009). */
  deleted_at: Generated<number | null>;
}

export interface ApiTokensTable {
  id: string;
  user_name: string;
  name: string;
  /**
   * `login` tokens come from POST /api/auth/login; `api` tokens are named and listed; `session` tokens are
   * portal browser sessions (POST /api/auth/session), sent as a cookie.
   */
  kind: 'login' | 'api' | 'session';
  /** sha256 hex of the secret; the secret itself is never stored. */
  token_hash: string;
  created_at: number;
  expires_at: number | null;
  last_used_at: number | null;
  revoked: number;
}

export interface WorkflowsTable {
  /** The space the version lives in (migration 0008): the key is (space, name, version). */
  space: string;
  name: string;
  version: number;
  source: string;
  format: 'yaml' | 'json';
  digest: string;
  description: string;
  /** JSON: ParamDefinition[]. */
  params_json: string;
  /** JSON: {id, kind, needs}[]. */
  steps_json: string;
  created_by: string;
  created_at: number;
  /** Set when the workflow was deleted (migration 0008): kept for the jobs that ran it, never run again. */
  deleted_at: number | null;
  deleted_by: string | null;
}

export interface WorkflowAssetsTable {
  space: string;
  name: string;
  version: number;
  path: string;
  digest: string;
  size: number;
}

export interface JobsTable {
  id: string;
  user_name: string;
  /** The space of the version the job pinned at submit (migration 0008). */
  workflow_space: string;
  workflow_name: string;
  workflow_version: number;
  workflow_digest: string;
  params_json: string;
  labels_json: string;
  state: string;
  attempt: number;
  agent_id: string | null;
  executor_json: string | null;
  error_code: string | null;
  error_message: string | null;
  timeout_ms: number | null;
  job_token_hash: string;
  load_deadline: number | null;
  cancel_requested: number;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  updated_at: number;
  /** The job's own retry budget; null: the server's policy (migration 0003). */
  retries: number | null;
  /** The client's idempotency key, unique per user (migration 0004). */
  submit_key: string | null;
  /** When the bus confirmed the current attempt's offer (migration 0004). */
  offer_published_at: number | null;
  /** The agent holding the current attempt's claim (its executor fetched the workflow first; migration 0005). */
  claimed_by: string | null;
  /** The cluster the job was routed to at submit (migration 0012; default `local`). */
  cluster: string;
  /** 1: kept whatever the retention settings (migration 0015). */
  pinned: number;
  /** When the retention sweep removed the job's files; null while kept (migration 0015). */
  files_purged_at: number | null;
  /** The schedule that fired the job; null for jobs submitted by hand (migration 0013). */
  schedule: string | null;
}

/** One row per attempt of a job (migration 0003); the job's current attempt is `jobs.attempt`. */
export interface JobAttemptsTable {
  job_id: string;
  attempt: number;
  state: string;
  agent_id: string | null;
  /** When the attempt's offer was made. */
  offered_at: number;
  /** When its executor reported the workflow loaded (running). */
  started_at: number | null;
  finished_at: number | null;
  error_code: string | null;
  error_message: string | null;
}

export interface JobStepsTable {
  job_id: string;
  step_id: string;
  kind: string;
  position: number;
  state: string;
  started_at: number | null;
  finished_at: number | null;
  duration_ms: number | null;
  rows: number | null;
  progress: number | null;
  message: string | null;
}

/** One row per applied (job, attempt, seq): the idempotency record for agent events. */
export interface AppliedEventsTable {
  job_id: string;
  attempt: number;
  seq: number;
  applied_at: number;
}

export interface ResultsTable {
  job_id: string;
  name: string;
  kind: 'table' | 'file';
  formats_json: string;
  size: number;
  rows: number | null;
  created_at: number;
}

export interface AuditTable {
  id: Generated<number>;
  time: number;
  actor: string;
  action: string;
  target: string | null;
  source: string | null;
  detail_json: string | null;
}

export interface AgentsTable {
  id: string;
  labels_json: string;
  isolation: 'per-user' | 'single-user';
  capacity_json: string;
  executors_json: string;
  last_seen: number;
  /** 1 while the agent reports being drained (migration 0007). */
  draining: number;
  /** The cluster whose bus its heartbeats came through (migration 0012; default `local`). */
  cluster: string;
  /** The agent's clock minus the server's when its last heartbeat arrived, in ms (migration 0012). */
  clock_offset_ms: number | null;
  /** SHA-256 fingerprint of the offer-signing key the agent trusts, as it reported it (migration 0012). */
  key_fingerprint: string | null;
  /** The agent's last probe of the server's URL, `{url, ok, error?}` as JSON (migration 0012). */
  server_probe_json: string | null;
}

export interface ClustersTable {
  name: string;
  broker_url: string;
  vhost: string | null;
  password_file: string | null;
  ca_file: string | null;
  cert_file: string | null;
  key_file: string | null;
  state: 'attached' | 'detaching' | 'detached';
  created_at: number;
  changed_at: number;
}

/** One failed login per row and key (`u:<user>` or `s:<address>`); see migration 0006. */
export interface LoginFailuresTable {
  key: string;
  time: number;
}

/** Personal spaces (one per user, `owner` = the user) and shared spaces admins create (migration 0008). */
export interface SpacesTable {
  name: string;
  kind: 'personal' | 'shared';
  owner: string | null;
  description: string;
  created_by: string;
  created_at: number;
}

/** `kind` `user`: a server user; `group`: a local group name or an LDAP group DN (contains `=`). */
export interface SpaceMembersTable {
  space: string;
  kind: 'user' | 'group';
  member: string;
  role: 'viewer' | 'editor' | 'owner';
  added_by: string;
  added_at: number;
}

export interface GroupsTable {
  name: string;
  description: string;
  created_by: string;
  created_at: number;
}

export interface GroupMembersTable {
  group_name: string;
  user_name: string;
  added_by: string;
  added_at: number;
}

/** A file uploaded for a `file` param, not yet a job's input (migration 0011). */
export interface UploadsTable {
  id: string;
  owner: string;
  /** The file's name as sanitised at upload (one plain segment). */
  name: string;
  size: number;
  sha256: string;
  created_at: number;
  expires_at: number;
  /** The job a submission reserved it for; null while free. */
  job_id: string | null;
}

/** A job's input file for one `file` param (migration 0011). */
export interface JobInputsTable {
  job_id: string;
  param: string;
  name: string;
  size: number;
  sha256: string;
  created_at: number;
}

/** A user's notification rule (migration 0014). */
export interface NotificationRulesTable {
  id: string;
  user_name: string;
  /** Only jobs of this schedule of the user; null: the user's default. */
  schedule: string | null;
  when: 'failure' | 'success' | 'always';
  channel: 'webhook' | 'email';
  /** The webhook URL or the email address. */
  target: string;
  /** The webhook's HMAC key; null for email. */
  secret: string | null;
  created_at: number;
}

/** One message to send for one rule and one job end: the outbox (migration 0014). */
export interface NotificationDeliveriesTable {
  id: string;
  rule_id: string;
  user_name: string;
  job_id: string;
  /** The job's attempt that ended: a later attempt (a lost job retried after all) supersedes it. */
  job_attempt: number;
  job_state: string;
  channel: 'webhook' | 'email';
  state: 'pending' | 'delivered' | 'failed' | 'dropped';
  attempts: number;
  /** When a pending delivery is due (a claimed one: when its claim runs out); null once settled. */
  next_attempt_at: number | null;
  /** The current claim's token; only its holder may settle the attempt. */
  claim_token: string | null;
  last_error: string | null;
  created_at: number;
  delivered_at: number | null;
  updated_at: number;
}

/** A workflow run on a cron expression as its owner (migration 0013; see `schedules.ts`). */
export interface SchedulesTable {
  id: string;
  owner: string;
  /** Unique per owner. */
  name: string;
  /** `[space/]name[@version]`, resolved at each firing with the owner's rights then. */
  workflow_ref: string;
  params_json: string;
  labels_json: string;
  cron: string;
  /** IANA time zone the cron expression is read in. */
  time_zone: string;
  misfire: 'catch-up' | 'skip';
  overlap: 'skip' | 'queue' | 'allow';
  paused: number;
  /** Why it was paused (by its owner, or because the owner was disabled); null while active. */
  paused_reason: string | null;
  /** The next tick not yet handled; null when the expression has no further run. */
  next_due_at: number | null;
  /** A tick the `queue` overlap policy holds until the running job of this schedule ends. */
  queued_due_at: number | null;
  last_fired_at: number | null;
  last_job_id: string | null;
  /** Why the last tick did not fire (no access, workflow gone, …); cleared by the next firing. */
  last_error_code: string | null;
  last_error_message: string | null;
  created_at: number;
  updated_at: number;
}

export interface Database {
  users: UsersTable;
  api_tokens: ApiTokensTable;
  workflows: WorkflowsTable;
  workflow_assets: WorkflowAssetsTable;
  jobs: JobsTable;
  job_attempts: JobAttemptsTable;
  job_steps: JobStepsTable;
  applied_events: AppliedEventsTable;
  results: ResultsTable;
  audit: AuditTable;
  agents: AgentsTable;
  login_failures: LoginFailuresTable;
  spaces: SpacesTable;
  space_members: SpaceMembersTable;
  groups: GroupsTable;
  group_members: GroupMembersTable;
  uploads: UploadsTable;
  job_inputs: JobInputsTable;
  notification_rules: NotificationRulesTable;
  notification_deliveries: NotificationDeliveriesTable;
  clusters: ClustersTable;
  schedules: SchedulesTable;
}

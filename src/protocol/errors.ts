/**
 * The catalogue of stable error codes. A code keeps its meaning forever: add new ones, never reuse one.
 * Every code is documented in docs/errors.md (a test keeps the two in step).
 */
export const errorCatalogue = {
  STEWARD_BAD_REQUEST: { status: 400, summary: 'The request is malformed or fails schema validation.' },
  STEWARD_UNAUTHENTICATED: { status: 401, summary: 'No valid credentials were presented.' },
  STEWARD_FORBIDDEN: { status: 403, summary: 'The caller may not do this.' },
  STEWARD_NOT_FOUND: {
    status: 404,
    summary: 'The addressed object does not exist (or is not visible to the caller).',
  },
  STEWARD_CONFLICT: {
    status: 409,
    summary: 'The object already exists or is in a state that forbids the action.',
  },
  STEWARD_PAYLOAD_TOO_LARGE: { status: 413, summary: 'The request body exceeds the configured limit.' },
  STEWARD_WORKFLOW_INVALID: { status: 422, summary: 'The workflow fails parsing or validation.' },
  STEWARD_PARAMS_INVALID: {
    status: 422,
    summary: 'Job parameters do not match the workflow parameter definitions.',
  },
  STEWARD_JOB_NOT_CANCELABLE: { status: 409, summary: 'The job has already ended.' },
  STEWARD_LOG_OFFSET_MISMATCH: {
    status: 409,
    summary: 'A live log chunk starts past the end of what the server has of that log (`details.size`).',
  },
  STEWARD_INTERNAL: { status: 500, summary: 'An unexpected internal error; details are in the server log.' },
  STEWARD_UNAVAILABLE: { status: 503, summary: 'A dependency (store, bus) is unavailable; retry later.' },
  STEWARD_CONFIG_INVALID: { status: 500, summary: 'A configuration file or option is invalid.' },
  STEWARD_RESULT_NAME_INVALID: {
    status: 422,
    summary: 'A result name is not one plain file name of at most 255 bytes (no "/", not starting with ".").',
  },
  STEWARD_STORE_READABLE: {
    status: 500,
    summary:
      'A store file (the SQLite database, its -wal or -shm, the signing key) is readable by group or others; the daemon refuses to start.',
  },
  STEWARD_SERVER_UNREACHABLE: { status: 503, summary: 'The CLI could not reach the server.' },
  STEWARD_MESSAGE_INVALID: {
    status: 400,
    summary: 'A bus message is malformed, of an unknown version or oversized.',
  },
  STEWARD_OFFER_SIGNATURE_INVALID: {
    status: 400,
    summary: 'A job offer is unsigned or its signature does not verify.',
  },
  STEWARD_OFFER_EXPIRED: { status: 400, summary: 'A job offer arrived after its deadline.' },
  STEWARD_OFFER_REPLAYED: { status: 400, summary: 'A job offer was already taken by this agent.' },
  STEWARD_LOAD_TIMEOUT: { status: 408, summary: 'No executor loaded the job within the load timeout.' },
  STEWARD_DELIVERY_LIMIT: {
    status: 500,
    summary: 'The job offer was delivered too many times and was dead-lettered.',
  },
  STEWARD_AGENT_LOST: { status: 500, summary: 'The agent holding the job stopped reporting.' },
  STEWARD_USER_NAME_INVALID: {
    status: 400,
    summary: 'The user name cannot be mapped to an OS account name.',
  },
  STEWARD_USER_UNKNOWN: { status: 404, summary: 'The OS account does not exist on the executor machine.' },
  STEWARD_USER_REFUSED: { status: 403, summary: 'Identity policy refuses to run jobs as this OS account.' },
  STEWARD_USER_BANNED: { status: 403, summary: "The OS account is in the agent's identity.bannedUsers." },
  STEWARD_USER_UID_TOO_LOW: {
    status: 403,
    summary: "The OS account's uid is below identity.minUid and it is not in identity.allowedSystemUsers.",
  },
  STEWARD_USER_GROUP_NOT_ALLOWED: {
    status: 403,
    summary: "The OS account is in none of the agent's identity.allowedGroups.",
  },
  STEWARD_WORKSPACE_UNSAFE: {
    status: 500,
    summary: 'A workspace path exists with the wrong owner, type or mode.',
  },
  STEWARD_EXECUTOR_START_FAILED: { status: 500, summary: 'The per-user executor could not be started.' },
  STEWARD_EXECUTOR_CRASHED: { status: 500, summary: 'The per-user executor exited while running the job.' },
  STEWARD_OUT_OF_MEMORY: {
    status: 500,
    summary: "The job's executor or one of its steps was killed for exceeding the executor's memory limit.",
  },
  STEWARD_AGENT_ENDED_JOB: {
    status: 500,
    summary:
      'The executor did not end the job at its time limit or cancel, or stopped answering (stopped or hung), so the agent killed every process of the job itself.',
  },
  STEWARD_AGENT_ID_IN_USE: {
    status: 500,
    summary: 'Another agent with the same id runs on this host; only one agent per id runs on a host.',
  },
  STEWARD_STEP_FAILED: { status: 500, summary: 'A workflow step failed; the message names the step.' },
  STEWARD_STEP_TIMEOUT: { status: 500, summary: 'A workflow step exceeded its timeout.' },
  STEWARD_DASK_START_FAILED: {
    status: 500,
    summary: "A step's Dask scheduler or workers could not be started, or did not all register in time.",
  },
  STEWARD_DASK_SCHEDULER_LOST: {
    status: 500,
    summary: "A step's Dask scheduler exited while the step ran; the step failed.",
  },
  STEWARD_DASK_NO_ROOM: {
    status: 503,
    summary:
      "The agents of the job's cluster could not take all of a step's Dask workers before the load timeout.",
  },
  STEWARD_JOB_CANCELED: { status: 409, summary: 'The job was canceled.' },
  STEWARD_RESULT_UPLOAD_FAILED: {
    status: 500,
    summary: 'The executor could not upload a result to the server.',
  },
  STEWARD_LOGIN_THROTTLED: {
    status: 429,
    summary: 'Too many failed logins for this user or from this address; wait and retry.',
  },
  STEWARD_DIRECTORY_UNAVAILABLE: {
    status: 503,
    summary: 'The user directory (LDAP) could not be reached or did not answer in time.',
  },
  STEWARD_ATTEMPT_CLAIMED: {
    status: 409,
    summary:
      "Another agent already loads this job attempt; the broker gave the attempt's offer to two agents.",
  },
  STEWARD_POISON_JOB: {
    status: 500,
    summary: 'Every agent that took the job lost its executor; the offer reached the delivery limit.',
  },
  STEWARD_PREVIEW_TOO_LARGE: {
    status: 422,
    summary:
      "Previewing these rows needs more memory than the server's preview allows (one value is too large); download the result instead.",
  },
  STEWARD_SPACE_NOT_FOUND: {
    status: 404,
    summary:
      'No space of that name. Personal spaces are named after their user; shared spaces are created by admins (`steward space create`).',
  },
  STEWARD_SPACE_NOT_MEMBER: {
    status: 403,
    summary:
      "The caller is not a member of the space, directly or through a group; the space's owners or an admin add members.",
  },
  STEWARD_SPACE_ROLE_REQUIRED: {
    status: 403,
    summary:
      "The caller's role in the space is too low for this action (pushing and deleting need editor, managing members needs owner); the space's owners or an admin grant roles.",
  },
  STEWARD_SPACE_PERSONAL: {
    status: 403,
    summary:
      "The space is another user's personal space: only that user pushes, deletes or shares there, admins included. Share workflows through a shared space.",
  },
  STEWARD_SPACE_NOT_SHARED: {
    status: 409,
    summary:
      'The action applies to shared spaces only (personal spaces have no members and are not deleted on their own).',
  },
  STEWARD_SPACE_NOT_EMPTY: {
    status: 409,
    summary: 'The space still holds workflows; delete them (`steward workflow delete`) before the space.',
  },
  STEWARD_WORKFLOW_REF_INVALID: {
    status: 400,
    summary:
      'A workflow reference is malformed: expected NAME, NAME@VERSION, SPACE/NAME or SPACE/NAME@VERSION (one slash at most, between space and name).',
  },
  STEWARD_LAST_ADMIN: {
    status: 409,
    summary:
      'The change would leave no enabled admin (disabling, deleting or demoting the last one); make another user an admin first.',
  },
  STEWARD_USER_HAS_JOBS: {
    status: 409,
    summary:
      'The user still has jobs that have not ended; disable the user (which cancels them) or wait, then delete.',
  },
  STEWARD_USER_NAME_RETIRED: {
    status: 409,
    summary:
      'The name belonged to a deleted user; names are not reused, so the old history never passes to a new account.',
  },
  STEWARD_USER_IN_DIRECTORY: {
    status: 409,
    summary:
      "The user comes from LDAP: its password and role are the directory's; change them there, not in Steward.",
  },
  STEWARD_PASSWORD_WRONG: {
    status: 403,
    summary: 'The current password given to change a password is wrong.',
  },
  STEWARD_CSRF_REJECTED: {
    status: 403,
    summary:
      'A state-changing request authenticated by the portal session cookie lacked the X-CSRF-Token of that session, or came from another origin.',
  },
  STEWARD_NOTIFICATION_RULE_LIMIT: {
    status: 409,
    summary:
      'The user has as many notification rules as `server.notifications.maxRulesPerUser` allows; remove one first.',
  },
  STEWARD_EMAIL_NOT_CONFIGURED: {
    status: 409,
    summary:
      'An email notification rule was asked for, but the server has no `server.notifications.smtp`; use a webhook or ask an admin to configure SMTP.',
  },
  STEWARD_BROKER_UNREACHABLE: {
    status: 503,
    summary:
      'The RabbitMQ broker could not be reached (connection refused, timed out, or its TLS certificate was not accepted).',
  },
  STEWARD_BROKER_ACCESS_REFUSED: {
    status: 503,
    summary:
      'The RabbitMQ broker refused the configured user or password, access to the vhost, or an operation the topology needs; the daemon stops instead of retrying.',
  },
  STEWARD_ACL_TOOLS_MISSING: {
    status: 500,
    summary:
      "The ACL tools (setfacl, getfacl) are missing or the workspace file system refuses ACLs, so users' workspaces cannot be made private.",
  },
  STEWARD_NOT_ROOT: {
    status: 500,
    summary: 'The agent does not run as root, so jobs cannot run as their users (per-user isolation is off).',
  },
  STEWARD_CGROUPS_MISSING: {
    status: 500,
    summary: 'The cgroup controllers for executor limits (memory, cpu, pids; v1 or v2) are not available.',
  },
  STEWARD_PYTHON_MISSING: {
    status: 500,
    summary: "The agent's python interpreter (agent.python) does not run; python steps would fail.",
  },
  STEWARD_DUCKDB_UNAVAILABLE: { status: 500, summary: 'DuckDB does not load on this machine.' },
  STEWARD_DISK_LOW: {
    status: 507,
    summary: 'Little free disk space is left where workspaces or the store live.',
  },
  STEWARD_PUBLIC_KEY_MISSING: {
    status: 500,
    summary:
      "The server's offer-signing public key (agent.serverPublicKeyFile) is missing, unreadable or not a key.",
  },
  STEWARD_MIGRATIONS_PENDING: {
    status: 503,
    summary: 'The store has migrations this release would apply at its next start (or the store is newer).',
  },
  STEWARD_PUBLIC_URL_INVALID: {
    status: 500,
    summary: 'server.publicUrl is unset, not an http(s) URL, or the server does not answer there.',
  },
  STEWARD_CLUSTER_UNKNOWN: {
    status: 404,
    summary: 'No cluster of that name is defined.',
  },
  STEWARD_CLUSTER_DETACHED: {
    status: 409,
    summary: 'The cluster is detached, or being detached: it takes no new jobs.',
  },
  STEWARD_CLUSTER_NO_AGENTS: {
    status: 409,
    summary: "No live agent of the job's cluster: nothing could run the job.",
  },
  STEWARD_LABEL_UNAVAILABLE: {
    status: 409,
    summary:
      "No live agent of the job's cluster has every label the job requires; the message names the missing label.",
  },
  STEWARD_CLUSTER_CHECK_FAILED: {
    status: 409,
    summary: "A cluster's attach was refused because checks failed; `details.checks` lists them.",
  },
  STEWARD_CLUSTER_BROKER_UNREACHABLE: {
    status: 503,
    summary: "The cluster's broker could not be reached, or its TLS certificate was not accepted.",
  },
  STEWARD_CLUSTER_BROKER_AUTH: {
    status: 403,
    summary: "The cluster's broker refused the user name or password.",
  },
  STEWARD_CLUSTER_BROKER_PERMISSION: {
    status: 403,
    summary:
      "The broker user lacks a permission Steward's topology needs (the vhost, a queue or exchange, the default exchange included).",
  },
  STEWARD_CLUSTER_TOPOLOGY: {
    status: 409,
    summary:
      'The broker holds Steward queues of an incompatible shape, or agents speak another protocol version.',
  },
  STEWARD_CLUSTER_CLOCK_SKEW: {
    status: 409,
    summary: "An agent's clock differs from the server's by more than the allowed skew.",
  },
  STEWARD_CLUSTER_AGENT_KEY: {
    status: 409,
    summary:
      "An agent does not trust this server's offer-signing key (or does not report it): it would refuse every offer.",
  },
  STEWARD_CLUSTER_SERVER_UNREACHABLE: {
    status: 409,
    summary:
      "An agent could not reach the server's public URL, which its executors need to fetch workflows and upload results.",
  },
  STEWARD_SCHEDULE_INVALID: {
    status: 422,
    summary:
      'A schedule cannot be kept: its cron expression or time zone is not understood, it has no future run, or its workflow takes a file param (an upload is used by one job only).',
  },
  STEWARD_SCHEDULE_EXISTS: {
    status: 409,
    summary: 'You already have a schedule of that name; schedule names are unique per owner.',
  },
} as const satisfies Record<string, { status: number; summary: string }>;

export type ErrorCode = keyof typeof errorCatalogue;

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(errorCatalogue, value);
}

/** A failure with a stable code. `details` is safe to show to clients; `cause` is for logs only. */
export class StewardError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    options: { details?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'StewardError';
    this.code = code;
    this.status = errorCatalogue[code].status;
    this.details = options.details;
  }

  toJSON(): ErrorBody {
    return {
      error: { code: this.code, message: this.message, ...(this.details ? { details: this.details } : {}) },
    };
  }
}

export interface ErrorBody {
  error: { code: ErrorCode; message: string; details?: Record<string, unknown> };
}

/** Normalises anything thrown into a StewardError; unknown failures become STEWARD_INTERNAL. */
export function coerceError(error: unknown, fallback: ErrorCode = 'STEWARD_INTERNAL'): StewardError {
  if (error instanceof StewardError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new StewardError(fallback, fallback === 'STEWARD_INTERNAL' ? 'internal error' : message, {
    cause: error,
  });
}

/**
 * REST API schemas: the single source for request validation (server), the OpenAPI document and the CLI's
 * types. Paths are listed in `apiRoutes` so the OpenAPI document is generated, never hand-written.
 */
import { z } from 'zod';
import { JobState, StepState } from './states.js';
import { AgentId, ErrorInfo, ExecutorIdentity, ParamValue } from './messages.js';

export const UserName = z
  .string()
  .min(1)
  .max(64)
  .regex(
    /^[a-z_][a-z0-9_.-]*$/,
    'expected a lowercase name: letters, digits, "_", "." or "-", not starting with a digit',
  );
export const Role = z.enum(['admin', 'user']);
export type Role = z.infer<typeof Role>;
export const WorkflowName = z
  .string()
  .min(1)
  .max(100)
  .regex(/^[a-z0-9][a-z0-9_-]*$/, 'expected lowercase letters, digits, "_" or "-"');
/**
 * A space's name. Personal spaces are named after their user, so the rule is the user-name rule; shared
 * spaces follow it too, so one namespace serves both.
 */
export const SpaceName = UserName;
/**
 * `[space/]name[@version]` as a string. The shape is checked by `parseWorkflowRef` on the server, which
 * answers STEWARD_WORKFLOW_REF_INVALID (one code for every malformed reference) rather than a schema error.
 */
export const WorkflowRef = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[a-z0-9_.@/-]+$/, 'expected [SPACE/]NAME[@VERSION]: lowercase letters, digits, "_", ".", "-"');

export interface ParsedWorkflowRef {
  /** Absent: the caller's personal space. */
  space?: string;
  name: string;
  /** Absent: the latest version. */
  version?: number;
}

const REF_PATTERN = /^(?:([a-z_][a-z0-9_.-]{0,63})\/)?([a-z0-9][a-z0-9_-]{0,99})(?:@([1-9][0-9]{0,8}))?$/;

/**
 * Parses `NAME`, `NAME@VERSION`, `SPACE/NAME` or `SPACE/NAME@VERSION`; returns a sentence saying what is
 * wrong otherwise (a slash anywhere but between space and name, two slashes, a bad version).
 */
export function parseWorkflowRef(ref: string): ParsedWorkflowRef | { error: string } {
  const match = REF_PATTERN.exec(ref);
  if (match) {
    const [, space, name = '', version] = match;
    return {
      ...(space !== undefined ? { space } : {}),
      name,
      ...(version !== undefined ? { version: Number(version) } : {}),
    };
  }
  const slashes = ref.split('/').length - 1;
  const quoted = JSON.stringify(ref.length > 200 ? `${ref.slice(0, 200)}…` : ref);
  const at = ref.indexOf('@');
  const misplaced =
    slashes === 1 && (ref.startsWith('/') || ref.endsWith('/') || (at !== -1 && at < ref.indexOf('/')));
  const why =
    slashes > 1
      ? 'has more than one "/"; only SPACE/NAME has one'
      : misplaced
        ? 'has its "/" in the wrong place; the space comes first: SPACE/NAME@VERSION'
        : 'is not NAME, NAME@VERSION, SPACE/NAME or SPACE/NAME@VERSION (lowercase letters, digits, "_" or "-"; versions from 1)';
  return { error: `workflow ${quoted} ${why}` };
}

export const ErrorResponse = z.object({
  error: ErrorInfo.extend({ details: z.record(z.string(), z.unknown()).optional() }),
});

export const LoginRequest = z
  .object({ user: z.string().min(1).max(256), password: z.string().min(1).max(1024) })
  .strict();
export const LoginResponse = z.object({
  token: z.string(),
  user: z.string(),
  role: Role,
  expiresAt: z.string().nullable(),
});

/** The portal's sign-in (`POST /api/auth/session`): the same checks and throttle as `LoginRequest`. */
export const SessionRequest = z
  .object({ name: z.string().min(1).max(256), password: z.string().min(1).max(1024) })
  .strict();
/**
 * A portal browser session. The session itself travels in the HttpOnly `steward_session` cookie, which page
 * scripts cannot read; `csrfToken` goes back in `X-CSRF-Token` on every POST, PUT, PATCH and DELETE.
 */
export const SessionInfo = z.object({
  user: z.object({ name: z.string(), role: Role }),
  csrfToken: z.string(),
  /** When the session ends (fixed at sign-in: server config `session.ttl`). */
  expiresAt: z.string(),
});
export type SessionInfo = z.infer<typeof SessionInfo>;

export const UserSource = z.enum(['local', 'ldap']);

/** Who the caller is. `source` and `token` are absent from older servers. */
export const Me = z.object({
  user: z.string(),
  role: Role,
  /** `local` (password kept by Steward) or `ldap` (the directory's). */
  source: UserSource.optional(),
  /** The token this request used: a `login` token, a named `api` token or a portal `session`. */
  token: z
    .object({
      id: z.string(),
      kind: z.enum(['login', 'api', 'session']),
      name: z.string(),
      expiresAt: z.string().nullable(),
    })
    .optional(),
});

export const User = z.object({
  name: z.string(),
  role: Role,
  createdAt: z.string(),
  disabled: z.boolean(),
  /** Where the user comes from: `local` or `ldap`. (Absent from older servers: `local`.) */
  source: UserSource.default('local'),
  /** When an admin deleted the user; null while it exists. Deleted users are listed only on request. */
  deletedAt: z.string().nullable().default(null),
});
export type User = z.infer<typeof User>;
/**
 * An existing user's name: not `UserName`, because LDAP users are named by the directory (their first login
 * creates them) and may not follow the local-user pattern; they must still be manageable.
 */
const ExistingUserName = z.string().min(1).max(256);
const UserParams = z.object({ name: ExistingUserName }).strict();
export const ListUsersQuery = z
  .object({
    /** `true`: include deleted users (kept so their past jobs and audit entries keep their name). */
    deleted: z.enum(['true', 'false']).default('false'),
  })
  .strict();
export const SetPasswordRequest = z
  .object({
    /** Required when changing your own password; admins resetting someone else's leave it out. */
    currentPassword: z.string().min(1).max(1024).optional(),
    password: z.string().min(8, 'the password must have at least 8 characters').max(1024),
  })
  .strict();
export const SetRoleRequest = z.object({ role: Role }).strict();
export const DisableUserResponse = User.extend({
  /** The user's jobs that were canceled because they had not ended. */
  canceledJobs: z.array(z.string()),
});
export const CreateUserRequest = z
  .object({ name: UserName, password: z.string().min(8).max(1024), role: Role.default('user') })
  .strict();

export const CreateTokenRequest = z
  .object({
    name: z.string().min(1).max(100),
    /** Lifetime in days; omitted = no expiry. */
    expiresInDays: z.number().int().min(1).max(3650).optional(),
  })
  .strict();
export const TokenInfo = z.object({
  id: z.string(),
  name: z.string(),
  /** The owner (absent from older servers). */
  user: z.string().optional(),
  createdAt: z.string(),
  expiresAt: z.string().nullable(),
  lastUsedAt: z.string().nullable(),
});
export const CreateTokenResponse = TokenInfo.extend({ token: z.string() });
export const ListTokensQuery = z
  .object({
    /** Admins: another user's tokens. */
    user: ExistingUserName.optional(),
  })
  .strict();

export const PushWorkflowRequest = z
  .object({
    /** Workflow text, YAML or JSON. */
    source: z
      .string()
      .min(1)
      .max(1024 * 1024),
    /** Source file name; its extension picks the parser when `format` is absent. */
    fileName: z.string().max(255).optional(),
    format: z.enum(['yaml', 'json']).optional(),
    /** Asset files the workflow reads, by relative path, base64-encoded. */
    assets: z.record(z.string().max(255), z.string()).optional(),
  })
  .strict();

export const ParamDefinition = z.object({
  name: z.string(),
  type: z.enum(['string', 'number', 'integer', 'boolean', 'date', 'enum', 'file']),
  required: z.boolean(),
  default: ParamValue.optional(),
  values: z.array(z.string()).optional(),
  description: z.string().optional(),
  /** `file` params: accepted file name extensions (`.csv`); any when absent. */
  accept: z.array(z.string()).optional(),
  /** `file` params: largest accepted file in bytes (the server's `uploads.maxBytes` bounds it too). */
  maxSize: z.number().int().optional(),
});

export const WorkflowVersion = z.object({
  /** The space the workflow lives in. */
  space: z.string(),
  name: z.string(),
  version: z.number().int(),
  digest: z.string(),
  description: z.string(),
  createdBy: z.string(),
  createdAt: z.string(),
  params: z.array(ParamDefinition),
  steps: z.array(z.object({ id: z.string(), kind: z.string(), needs: z.array(z.string()) })),
  assets: z.array(z.object({ path: z.string(), size: z.number().int(), digest: z.string() })),
});
export type WorkflowVersion = z.infer<typeof WorkflowVersion>;
export const WorkflowDetail = WorkflowVersion.extend({
  source: z.string(),
  format: z.enum(['yaml', 'json']),
});
export const WorkflowSummary = z.object({
  space: z.string(),
  name: z.string(),
  latestVersion: z.number().int(),
  description: z.string(),
  updatedAt: z.string(),
  updatedBy: z.string(),
});

/** The most retries a job may ask for or a server may grant: beyond it, a failing job only burns machines. */
export const MAX_RETRIES = 10;

export const SubmitJobRequest = z
  .object({
    workflow: WorkflowRef,
    /** Values as typed JSON or as strings (from `-p key=value`); converted by the parameter definitions. */
    params: z.record(z.string(), ParamValue).default({}),
    labels: z
      .array(z.string().regex(/^[a-zA-Z0-9_.:-]{1,100}$/))
      .max(20)
      .default([]),
    /** Overall job time limit in seconds. */
    timeoutSeconds: z
      .number()
      .int()
      .positive()
      .max(30 * 24 * 3600)
      .optional(),
    /**
     * How many times to run the job again, as a new attempt, if an attempt ends lost or with a crashed
     * executor. Overrides the server's `retries` policy (default: 0 once a step started, 2 before).
     */
    retries: z
      .number()
      .int('expected a whole number')
      .min(0, 'expected 0 or more')
      .max(MAX_RETRIES, `expected at most ${MAX_RETRIES}`)
      .optional(),
    /**
     * A key the client chooses per submission (a UUID, say). Retrying with the same key returns the job the
     * first attempt created instead of submitting another: safe retries when an answer was lost (a server
     * died behind the load balancer). Unique per user; kept as long as the job.
     */
    idempotencyKey: z
      .string()
      .regex(/^[A-Za-z0-9_.:-]{1,100}$/, 'expected 1-100 letters, digits, "_", ".", ":" or "-"')
      .optional(),
  })
  .strict();

export const StepInfo = z.object({
  id: z.string(),
  kind: z.string(),
  state: StepState,
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
  durationMs: z.number().nullable(),
  rows: z.number().nullable(),
  progress: z.number().nullable(),
  message: z.string().nullable(),
});
export type StepInfo = z.infer<typeof StepInfo>;

/** One run of a job on one agent. A retry is a new attempt with its own number, token and step records. */
export const AttemptInfo = z.object({
  attempt: z.number().int(),
  /** `offered`, `loading` or `running` while it is the job's current attempt; then how it ended. */
  state: JobState,
  agentId: z.string().nullable(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
  error: ErrorInfo.nullable(),
});
export type AttemptInfo = z.infer<typeof AttemptInfo>;

/** A file a job was given for one `file` param. */
export const JobInputInfo = z.object({
  param: z.string(),
  /** The file's name as stored (sanitised at upload: one plain segment). */
  name: z.string(),
  size: z.number().int(),
  sha256: z.string(),
});
export type JobInputInfo = z.infer<typeof JobInputInfo>;

/** `POST /api/uploads?name=`: the file's name as the client knows it (only its last segment is kept). */
export const UploadQuery = z.object({ name: z.string().min(1).max(1024) }).strict();
/** An uploaded file, to pass as a `file` param's value (`id`) when submitting. */
export const UploadInfo = z.object({
  id: z.string(),
  /** The stored name: the last path segment, control characters replaced, no leading dots. */
  name: z.string(),
  size: z.number().int(),
  sha256: z.string(),
  /** When it is removed if no job used it. */
  expiresAt: z.string(),
});
export type UploadInfo = z.infer<typeof UploadInfo>;

/** One piece of a running step's log, as the job event stream sends it (`event: log`). */
export const LogChunkEvent = z.object({
  stepId: z.string(),
  stream: z.enum(['stdout', 'stderr']),
  /** Byte offset of `text` in the stored log. */
  offset: z.number().int(),
  text: z.string(),
});
export type LogChunkEvent = z.infer<typeof LogChunkEvent>;

export const Job = z.object({
  id: z.string(),
  user: z.string(),
  /** The version the job pinned at submit; it never changes afterwards. */
  workflow: z.object({ space: z.string(), name: z.string(), version: z.number().int() }),
  params: z.record(z.string(), ParamValue),
  labels: z.array(z.string()),
  state: JobState,
  attempt: z.number().int(),
  createdAt: z.string(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
  agentId: z.string().nullable(),
  executor: ExecutorIdentity.nullable(),
  error: ErrorInfo.nullable(),
});
export type Job = z.infer<typeof Job>;
export const JobDetail = Job.extend({
  /** The pinned version, with who pushed it (null if that version's record cannot be read). */
  workflow: z.object({
    space: z.string(),
    name: z.string(),
    version: z.number().int(),
    pushedBy: z.string().nullable(),
  }),
  steps: z.array(StepInfo),
  /** Every attempt, oldest first; the last one is the job's current attempt. (Absent from older servers.) */
  attempts: z.array(AttemptInfo).default([]),
  /** The files given for `file` params (`GET /api/jobs/:id/inputs/:param`). (Absent from older servers.) */
  inputs: z.array(JobInputInfo).default([]),
});
export type JobDetail = z.infer<typeof JobDetail>;

/** A time in a listing filter: an ISO 8601 time (`2026-01-31T12:00:00Z`) or a date (`2026-01-31`, UTC). */
export const IsoTime = z
  .string()
  .max(64)
  .refine(
    (value) =>
      /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/.test(value) &&
      !Number.isNaN(Date.parse(value)),
    'expected an ISO time like 2026-01-31T12:00:00Z, or a date like 2026-01-31',
  );

/** Epoch ms of an `IsoTime`; a time written without a zone is UTC, whatever the server's zone. */
export function parseIsoTime(value: string): number {
  const zoned = /(?:Z|[+-]\d{2}:?\d{2})$/.test(value) || !value.includes(':');
  return Date.parse(zoned ? value : `${value.replace(' ', 'T')}Z`);
}

export const ListJobsQuery = z
  .object({
    state: JobState.optional(),
    /** Admins: only this user's jobs (users always see only their own). */
    user: z.string().max(256).optional(),
    /** The workflow's name (in any space unless `space` is given). */
    workflow: WorkflowName.optional(),
    space: SpaceName.optional(),
    /** Created at or after this time. */
    since: IsoTime.optional(),
    /** Created before this time. */
    until: IsoTime.optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(50),
    /** The `next` of the previous page (older jobs follow). A job id is accepted too (older clients). */
    before: z.string().max(200).optional(),
  })
  .strict();
export const JobList = z.object({
  /** Newest first. */
  jobs: z.array(Job),
  /** Pass as `before` for the following (older) page; null on the last page. (Absent from older servers.) */
  next: z.string().nullable().default(null),
});

export const ResultInfo = z.object({
  name: z.string(),
  kind: z.enum(['table', 'file']),
  /** For tables, the formats stored (`parquet`, `csv`). */
  formats: z.array(z.string()),
  size: z.number().int(),
  rows: z.number().int().nullable(),
  createdAt: z.string(),
});
export type ResultInfo = z.infer<typeof ResultInfo>;

export const PreviewQuery = z
  .object({
    limit: z.coerce.number().int().min(1).max(10_000).default(100),
    offset: z.coerce.number().int().min(0).default(0),
  })
  .strict();
export const PreviewResponse = z.object({
  name: z.string(),
  columns: z.array(z.object({ name: z.string(), type: z.string() })),
  rows: z.array(z.record(z.string(), z.unknown())),
  totalRows: z.number().int().nullable(),
  /**
   * True when this response is not the whole page asked for: a value was cut (`truncatedCells`) or rows were
   * left out to keep the response within its byte cap (`omittedRows`). (Absent from older servers.)
   */
  truncated: z.boolean().default(false),
  /**
   * Values cut to the server's cell cap: `row` is the index in `rows`. A cut text keeps its first bytes (whole
   * UTF-8 characters); any other cut value is its text form, cut alike.
   */
  truncatedCells: z.array(z.object({ row: z.number().int(), column: z.string() })).default([]),
  /** Rows of the page asked for that were left out (ask again with a larger `offset` for them). */
  omittedRows: z.number().int().default(0),
  /** The caps this server applies (server config `preview`). */
  limits: z.object({ cellBytes: z.number().int(), responseBytes: z.number().int() }).optional(),
});

export const LogEntry = z.object({
  stepId: z.string(),
  stream: z.enum(['stdout', 'stderr']),
  /**
   * The stored log's first bytes, within the listing's `maxBytes` budget (whole UTF-8 characters). The
   * whole log streams from `GET /api/jobs/:id/logs/:step/:stream`.
   */
  text: z.string(),
  /** Size of the stored log in bytes. (Absent from older servers, whose `text` is the whole log.) */
  size: z.number().int().optional(),
  /** True when `text` is not the whole stored log. */
  truncated: z.boolean().default(false),
});
export const LogsResponse = z.object({ jobId: z.string(), logs: z.array(LogEntry) });
export const LogsQuery = z
  .object({
    /** Bytes of log text inlined in the whole listing (first logs first). Default and maximum 1 MiB. */
    maxBytes: z.coerce
      .number()
      .int()
      .min(0)
      .max(1024 * 1024)
      .default(1024 * 1024),
  })
  .strict();
/** One stored log stream: a byte range (`offset`, `limit`) or the last `tail` lines. */
export const LogQuery = z
  .object({
    /** First byte to send. Default 0. */
    offset: z.coerce.number().int().min(0).optional(),
    /** Most bytes to send. Default: to the end. */
    limit: z.coerce.number().int().min(1).optional(),
    /** Only the last N lines (not with `offset`). */
    tail: z.coerce.number().int().min(1).max(10_000_000).optional(),
  })
  .strict();

export const AuditEntry = z.object({
  id: z.number().int(),
  time: z.string(),
  actor: z.string(),
  action: z.string(),
  target: z.string().nullable(),
  source: z.string().nullable(),
  detail: z.record(z.string(), z.unknown()).nullable(),
});
export const AuditQuery = z
  .object({
    actor: z.string().max(256).optional(),
    action: z.string().max(100).optional(),
    /** Exactly this target (a job id, a user name, `METHOD /path` of a refusal…). */
    target: z.string().max(512).optional(),
    /** At or after this time. */
    since: IsoTime.optional(),
    /** Before this time. */
    until: IsoTime.optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(100),
    /** The `next` of the previous page (older entries follow). */
    before: z.coerce.number().int().min(1).optional(),
  })
  .strict();
export const AuditList = z.object({
  /** Newest first. */
  entries: z.array(AuditEntry),
  /** Pass as `before` for the following (older) page; null on the last page. (Absent from older servers.) */
  next: z.number().int().nullable().default(null),
});

export const Health = z.object({ status: z.literal('ok'), version: z.string(), time: z.string() });

export const AgentInfo = z.object({
  id: z.string(),
  labels: z.array(z.string()),
  isolation: z.enum(['per-user', 'single-user']),
  /** Drained by an administrator: takes no new jobs, finishes those it has (as of its last heartbeat). */
  draining: z.boolean().default(false),
  lastSeen: z.string(),
  capacity: z.object({ slots: z.number().int(), free: z.number().int() }),
  executors: z.array(
    z.object({
      user: z.string(),
      uid: z.number().int(),
      pid: z.number().int(),
      jobs: z.number().int(),
      idleSinceMs: z.number().int().nullable(),
      rssBytes: z.number().int().nullable(),
    }),
  ),
});

export const SpaceRole = z.enum(['viewer', 'editor', 'owner']);
export type SpaceRole = z.infer<typeof SpaceRole>;
/** `user`: a server user; `group`: a local group's name or an LDAP group's DN (a DN contains "="). */
export const MemberKind = z.enum(['user', 'group']);
export const GroupName = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[a-z_][a-z0-9_.-]*$/, 'expected a lowercase name: letters, digits, "_", "." or "-"');
/** A member's name: a user name, a local group name, or an LDAP group DN. */
export const MemberName = z
  .string()
  .min(1)
  .max(512)
  .refine((value) => !/\p{Cc}/u.test(value), 'no control characters');
export const SpaceMember = z.object({
  kind: MemberKind,
  name: z.string(),
  role: SpaceRole,
  addedBy: z.string(),
  addedAt: z.string(),
});
export type SpaceMember = z.infer<typeof SpaceMember>;
export const SpaceInfo = z.object({
  name: z.string(),
  kind: z.enum(['personal', 'shared']),
  /** The user of a personal space; null for shared spaces. */
  owner: z.string().nullable(),
  description: z.string(),
  createdBy: z.string(),
  createdAt: z.string(),
  /** The caller's role here (null: none; admins still see every space). */
  role: SpaceRole.nullable(),
});
export type SpaceInfo = z.infer<typeof SpaceInfo>;
export const SpaceDetail = SpaceInfo.extend({
  members: z.array(SpaceMember),
  workflows: z.number().int(),
});
export const CreateSpaceRequest = z
  .object({ name: SpaceName, description: z.string().max(500).default('') })
  .strict();
export const SetSpaceMemberRequest = z
  .object({ kind: MemberKind, name: MemberName, role: SpaceRole })
  .strict();
export const RemoveSpaceMemberQuery = z.object({ kind: MemberKind, name: MemberName }).strict();
export const GroupInfo = z.object({
  name: z.string(),
  description: z.string(),
  createdBy: z.string(),
  createdAt: z.string(),
  members: z.array(z.string()),
});
export type GroupInfo = z.infer<typeof GroupInfo>;
export const CreateGroupRequest = z
  .object({ name: GroupName, description: z.string().max(500).default('') })
  .strict();
export const DeleteWorkflowResponse = z.object({
  space: z.string(),
  name: z.string(),
  /** How many versions were marked deleted (jobs that ran them keep them readable). */
  versions: z.number().int(),
});

const IdParams = z.object({ id: z.string().min(1).max(100) }).strict();
const SpaceParams = z.object({ space: SpaceName }).strict();
const SpaceNameParams = z.object({ space: SpaceName, name: WorkflowName }).strict();
const GroupMemberParams = z.object({ group: GroupName, user: UserName }).strict();
const AgentParams = z.object({ id: AgentId }).strict();
/** What a drain or resume sent: the agent applies it when the message reaches it (see `draining`). */
const AgentControlResponse = z.object({ id: z.string(), action: z.enum(['drain', 'resume']) });
const NameParams = z.object({ name: WorkflowName }).strict();
const ResultParams = z.object({ id: z.string().min(1).max(100), name: z.string().min(1).max(255) }).strict();
const LogParams = z
  .object({
    id: z.string().min(1).max(100),
    step: z.string().min(1).max(100),
    stream: z.enum(['stdout', 'stderr']),
  })
  .strict();
const InputParams = z
  .object({ id: z.string().min(1).max(100), param: z.string().regex(/^[a-z_][a-z0-9_]{0,63}$/) })
  .strict();

export interface ApiRoute {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Fastify path syntax (`:id`). */
  path: string;
  summary: string;
  tag: string;
  /** `none` routes need no credentials; `job` routes take a job-scoped executor token. */
  auth: 'none' | 'user' | 'admin' | 'job';
  params?: z.ZodType;
  query?: z.ZodType;
  body?: z.ZodType;
  /** JSON response schema for the success status, or a media type for raw bodies. */
  response?: z.ZodType;
  responseMediaType?: string;
  status?: number;
}

/** Every public REST route. The server registers handlers against this list; a test checks none is missing. */
export const apiRoutes = {
  health: {
    method: 'GET',
    path: '/api/health',
    summary: 'Liveness check',
    tag: 'system',
    auth: 'none',
    response: Health,
  },
  openapi: {
    method: 'GET',
    path: '/api/openapi.json',
    summary: 'This OpenAPI document',
    tag: 'system',
    auth: 'none',
    responseMediaType: 'application/json',
  },
  login: {
    method: 'POST',
    path: '/api/auth/login',
    summary: 'Exchange a user name and password for an API token',
    tag: 'auth',
    auth: 'none',
    body: LoginRequest,
    response: LoginResponse,
  },
  createSession: {
    method: 'POST',
    path: '/api/auth/session',
    summary:
      'Portal sign-in: sets the HttpOnly `steward_session` cookie and returns the CSRF token for state-changing requests',
    tag: 'auth',
    auth: 'none',
    body: SessionRequest,
    response: SessionInfo,
  },
  getSession: {
    method: 'GET',
    path: '/api/auth/session',
    summary:
      'The portal session of the `steward_session` cookie, with its CSRF token (401 without a valid one)',
    tag: 'auth',
    auth: 'none',
    response: SessionInfo,
  },
  deleteSession: {
    method: 'DELETE',
    path: '/api/auth/session',
    summary:
      'Portal sign-out: revokes the session of the cookie (needs its X-CSRF-Token) and clears the cookie',
    tag: 'auth',
    auth: 'none',
    status: 204,
  },
  me: {
    method: 'GET',
    path: '/api/me',
    summary: 'The authenticated user',
    tag: 'auth',
    auth: 'user',
    response: Me,
  },
  createToken: {
    method: 'POST',
    path: '/api/tokens',
    summary: 'Create a named API token for yourself',
    tag: 'auth',
    auth: 'user',
    body: CreateTokenRequest,
    response: CreateTokenResponse,
    status: 201,
  },
  listTokens: {
    method: 'GET',
    path: '/api/tokens',
    summary: "Your API tokens (without their secrets); admins may ask for another user's with `user`",
    tag: 'auth',
    auth: 'user',
    query: ListTokensQuery,
    response: z.object({ tokens: z.array(TokenInfo) }),
  },
  revokeToken: {
    method: 'DELETE',
    path: '/api/tokens/:id',
    summary: "Revoke one of your tokens (admins: anyone's); the next request with it is refused",
    tag: 'auth',
    auth: 'user',
    params: IdParams,
    status: 204,
  },
  createUser: {
    method: 'POST',
    path: '/api/users',
    summary: 'Create a local user (admins)',
    tag: 'users',
    auth: 'admin',
    body: CreateUserRequest,
    response: User,
    status: 201,
  },
  listUsers: {
    method: 'GET',
    path: '/api/users',
    summary: 'List users with their source (admins); deleted ones with `deleted=true`',
    tag: 'users',
    auth: 'admin',
    query: ListUsersQuery,
    response: z.object({ users: z.array(User) }),
  },
  disableUser: {
    method: 'POST',
    path: '/api/users/:name/disable',
    summary:
      "Disable a user (admins): revokes every token, blocks login, cancels the user's jobs that have not ended",
    tag: 'users',
    auth: 'admin',
    params: UserParams,
    response: DisableUserResponse,
  },
  enableUser: {
    method: 'POST',
    path: '/api/users/:name/enable',
    summary: 'Enable a disabled user (admins); the user logs in again (revoked tokens stay revoked)',
    tag: 'users',
    auth: 'admin',
    params: UserParams,
    response: User,
  },
  setUserRole: {
    method: 'PUT',
    path: '/api/users/:name/role',
    summary: "Set a local user's role (admins); an LDAP user's role follows the directory",
    tag: 'users',
    auth: 'admin',
    params: UserParams,
    body: SetRoleRequest,
    response: User,
  },
  setUserPassword: {
    method: 'PUT',
    path: '/api/users/:name/password',
    summary:
      "Change your own password (give the current one) or, as an admin, reset anyone's; ends the user's other login sessions",
    tag: 'users',
    auth: 'user',
    params: UserParams,
    body: SetPasswordRequest,
    status: 204,
  },
  deleteUser: {
    method: 'DELETE',
    path: '/api/users/:name',
    summary:
      'Delete a user (admins): refused while it has jobs not ended; its past jobs and audit stay, its name is retired',
    tag: 'users',
    auth: 'admin',
    params: UserParams,
    status: 204,
  },
  pushWorkflow: {
    method: 'POST',
    path: '/api/workflows',
    summary: 'Validate and store a new workflow version in your personal space',
    tag: 'workflows',
    auth: 'user',
    body: PushWorkflowRequest,
    response: WorkflowVersion,
    status: 201,
  },
  listWorkflows: {
    method: 'GET',
    path: '/api/workflows',
    summary: 'Workflows of your personal space with their latest version',
    tag: 'workflows',
    auth: 'user',
    response: z.object({ workflows: z.array(WorkflowSummary) }),
  },
  showWorkflow: {
    method: 'GET',
    path: '/api/workflows/:name',
    summary: 'Latest version of a workflow of your personal space, with its source',
    tag: 'workflows',
    auth: 'user',
    params: NameParams,
    response: WorkflowDetail,
  },
  showWorkflowVersion: {
    method: 'GET',
    path: '/api/workflows/:name/versions/:version',
    summary: 'One version of a workflow',
    tag: 'workflows',
    auth: 'user',
    params: z.object({ name: WorkflowName, version: z.coerce.number().int().min(1) }).strict(),
    response: WorkflowDetail,
  },
  listWorkflowVersions: {
    method: 'GET',
    path: '/api/workflows/:name/versions',
    summary: 'All versions of a workflow',
    tag: 'workflows',
    auth: 'user',
    params: NameParams,
    response: z.object({ versions: z.array(WorkflowVersion) }),
  },
  deleteWorkflow: {
    method: 'DELETE',
    path: '/api/workflows/:name',
    summary:
      'Delete a workflow of your personal space: it cannot be run any more; jobs that ran it keep their version',
    tag: 'workflows',
    auth: 'user',
    params: NameParams,
    response: DeleteWorkflowResponse,
  },
  createSpace: {
    method: 'POST',
    path: '/api/spaces',
    summary: 'Create a shared space (admins)',
    tag: 'spaces',
    auth: 'admin',
    body: CreateSpaceRequest,
    response: SpaceInfo,
    status: 201,
  },
  listSpaces: {
    method: 'GET',
    path: '/api/spaces',
    summary: 'Spaces you are a member of, with your role (admins: every space)',
    tag: 'spaces',
    auth: 'user',
    response: z.object({ spaces: z.array(SpaceInfo) }),
  },
  showSpace: {
    method: 'GET',
    path: '/api/spaces/:space',
    summary: 'A space with its members (viewers and up)',
    tag: 'spaces',
    auth: 'user',
    params: SpaceParams,
    response: SpaceDetail,
  },
  deleteSpace: {
    method: 'DELETE',
    path: '/api/spaces/:space',
    summary: 'Delete an empty shared space (admins)',
    tag: 'spaces',
    auth: 'admin',
    params: SpaceParams,
    status: 204,
  },
  setSpaceMember: {
    method: 'PUT',
    path: '/api/spaces/:space/members',
    summary: "Add a member to a shared space or change its role (the space's owners, admins)",
    tag: 'spaces',
    auth: 'user',
    params: SpaceParams,
    body: SetSpaceMemberRequest,
    response: SpaceMember,
  },
  removeSpaceMember: {
    method: 'DELETE',
    path: '/api/spaces/:space/members',
    summary: "Remove a member from a shared space (the space's owners, admins)",
    tag: 'spaces',
    auth: 'user',
    params: SpaceParams,
    query: RemoveSpaceMemberQuery,
    status: 204,
  },
  pushSpaceWorkflow: {
    method: 'POST',
    path: '/api/spaces/:space/workflows',
    summary: 'Validate and store a new workflow version in a space (editors)',
    tag: 'workflows',
    auth: 'user',
    params: SpaceParams,
    body: PushWorkflowRequest,
    response: WorkflowVersion,
    status: 201,
  },
  listSpaceWorkflows: {
    method: 'GET',
    path: '/api/spaces/:space/workflows',
    summary: "A space's workflows with their latest version (viewers)",
    tag: 'workflows',
    auth: 'user',
    params: SpaceParams,
    response: z.object({ workflows: z.array(WorkflowSummary) }),
  },
  showSpaceWorkflow: {
    method: 'GET',
    path: '/api/spaces/:space/workflows/:name',
    summary: 'Latest version of a workflow in a space, with its source (viewers)',
    tag: 'workflows',
    auth: 'user',
    params: SpaceNameParams,
    response: WorkflowDetail,
  },
  listSpaceWorkflowVersions: {
    method: 'GET',
    path: '/api/spaces/:space/workflows/:name/versions',
    summary: 'All versions of a workflow in a space (viewers)',
    tag: 'workflows',
    auth: 'user',
    params: SpaceNameParams,
    response: z.object({ versions: z.array(WorkflowVersion) }),
  },
  showSpaceWorkflowVersion: {
    method: 'GET',
    path: '/api/spaces/:space/workflows/:name/versions/:version',
    summary: 'One version of a workflow in a space (viewers)',
    tag: 'workflows',
    auth: 'user',
    params: z
      .object({ space: SpaceName, name: WorkflowName, version: z.coerce.number().int().min(1) })
      .strict(),
    response: WorkflowDetail,
  },
  deleteSpaceWorkflow: {
    method: 'DELETE',
    path: '/api/spaces/:space/workflows/:name',
    summary:
      'Delete a workflow of a space (editors): it cannot be run any more; jobs that ran it keep their version',
    tag: 'workflows',
    auth: 'user',
    params: SpaceNameParams,
    response: DeleteWorkflowResponse,
  },
  createGroup: {
    method: 'POST',
    path: '/api/groups',
    summary: 'Create a local group (admins)',
    tag: 'groups',
    auth: 'admin',
    body: CreateGroupRequest,
    response: GroupInfo,
    status: 201,
  },
  listGroups: {
    method: 'GET',
    path: '/api/groups',
    summary: 'Local groups with their members (admins)',
    tag: 'groups',
    auth: 'admin',
    response: z.object({ groups: z.array(GroupInfo) }),
  },
  addGroupMember: {
    method: 'PUT',
    path: '/api/groups/:group/members/:user',
    summary: 'Add a user to a local group (admins)',
    tag: 'groups',
    auth: 'admin',
    params: GroupMemberParams,
    response: GroupInfo,
  },
  removeGroupMember: {
    method: 'DELETE',
    path: '/api/groups/:group/members/:user',
    summary: 'Remove a user from a local group (admins)',
    tag: 'groups',
    auth: 'admin',
    params: GroupMemberParams,
    response: GroupInfo,
  },
  submitJob: {
    method: 'POST',
    path: '/api/jobs',
    summary: 'Submit a job',
    tag: 'jobs',
    auth: 'user',
    body: SubmitJobRequest,
    response: Job,
    status: 201,
  },
  listJobs: {
    method: 'GET',
    path: '/api/jobs',
    summary: 'List jobs (yours; admins see all)',
    tag: 'jobs',
    auth: 'user',
    query: ListJobsQuery,
    response: JobList,
  },
  jobStream: {
    method: 'GET',
    path: '/api/jobs/stream',
    summary:
      'Live changes of the jobs you may see (Server-Sent Events: `job` with a Job on each change, `resync` when changes may have been missed; admins: all jobs)',
    tag: 'jobs',
    auth: 'user',
    responseMediaType: 'text/event-stream',
  },
  rerunJob: {
    method: 'POST',
    path: '/api/jobs/:id/rerun',
    summary:
      'Run a job again: a new job of the same pinned workflow version with the same params, as you, with your rights now',
    tag: 'jobs',
    auth: 'user',
    params: IdParams,
    response: Job,
    status: 201,
  },
  showJob: {
    method: 'GET',
    path: '/api/jobs/:id',
    summary: 'A job with its step states',
    tag: 'jobs',
    auth: 'user',
    params: IdParams,
    response: JobDetail,
  },
  jobEvents: {
    method: 'GET',
    path: '/api/jobs/:id/events',
    summary: 'Live job and step events (Server-Sent Events); ends when the job ends',
    tag: 'jobs',
    auth: 'user',
    params: IdParams,
    responseMediaType: 'text/event-stream',
  },
  jobLogs: {
    method: 'GET',
    path: '/api/jobs/:id/logs',
    summary:
      "Every step's stdout and stderr: sizes, and each log's first bytes within `maxBytes` (`truncated` says when that is not all of it)",
    tag: 'jobs',
    auth: 'user',
    params: IdParams,
    query: LogsQuery,
    response: LogsResponse,
  },
  jobLog: {
    method: 'GET',
    path: '/api/jobs/:id/logs/:step/:stream',
    summary:
      "One stored step log, streamed as text: a byte range (`offset`, `limit`) or the last `tail` lines. Header `x-steward-log-size` is the whole log's size, `x-steward-log-offset` where the bytes sent start",
    tag: 'jobs',
    auth: 'user',
    params: LogParams,
    query: LogQuery,
    responseMediaType: 'text/plain',
  },
  jobInput: {
    method: 'GET',
    path: '/api/jobs/:id/inputs/:param',
    summary: 'Download the file a job was given for a `file` param',
    tag: 'jobs',
    auth: 'user',
    params: InputParams,
    responseMediaType: 'application/octet-stream',
  },
  createUpload: {
    method: 'POST',
    path: '/api/uploads',
    summary:
      'Upload a file for a `file` param: the raw file as the body (application/octet-stream), its name in `name`. Pass the returned `id` as the param value when submitting; unused uploads expire',
    tag: 'jobs',
    auth: 'user',
    query: UploadQuery,
    response: UploadInfo,
    status: 201,
  },
  cancelJob: {
    method: 'POST',
    path: '/api/jobs/:id/cancel',
    summary: 'Cancel a job',
    tag: 'jobs',
    auth: 'user',
    params: IdParams,
    response: Job,
  },
  listResults: {
    method: 'GET',
    path: '/api/jobs/:id/results',
    summary: "A job's published results",
    tag: 'results',
    auth: 'user',
    params: IdParams,
    response: z.object({ results: z.array(ResultInfo) }),
  },
  downloadResult: {
    method: 'GET',
    path: '/api/jobs/:id/results/:name',
    summary: 'Download a result file (tables: `NAME.csv` or `NAME.parquet`)',
    tag: 'results',
    auth: 'user',
    params: ResultParams,
    responseMediaType: 'application/octet-stream',
  },
  previewResult: {
    method: 'GET',
    path: '/api/jobs/:id/results/:name/preview',
    summary: 'First rows of a result table as JSON',
    tag: 'results',
    auth: 'user',
    params: ResultParams,
    query: PreviewQuery,
    response: PreviewResponse,
  },
  listAudit: {
    method: 'GET',
    path: '/api/audit',
    summary: 'Audit log (admins)',
    tag: 'audit',
    auth: 'admin',
    query: AuditQuery,
    response: AuditList,
  },
  listAgents: {
    method: 'GET',
    path: '/api/agents',
    summary: 'Live agents from their heartbeats; non-admins see only their own executors',
    tag: 'agents',
    auth: 'user',
    response: z.object({ agents: z.array(AgentInfo) }),
  },
  drainAgent: {
    method: 'POST',
    path: '/api/agents/:id/drain',
    summary:
      'Drain an agent (admins): it takes no new jobs and hands back offers it parked; jobs it has run to their end',
    tag: 'agents',
    auth: 'admin',
    params: AgentParams,
    response: AgentControlResponse,
    status: 202,
  },
  resumeAgent: {
    method: 'POST',
    path: '/api/agents/:id/resume',
    summary: 'Let a drained agent take jobs again (admins)',
    tag: 'agents',
    auth: 'admin',
    params: AgentParams,
    response: AgentControlResponse,
    status: 202,
  },
  // Executor-facing routes: a job-scoped token, valid only while its job attempt is live.
  execWorkflow: {
    method: 'GET',
    path: '/api/exec/jobs/:id/workflow',
    summary:
      'Executor: the workflow source and resolved params of its job; `agent` claims the attempt for that agent',
    tag: 'executor',
    auth: 'job',
    params: IdParams,
    query: z.object({ agent: AgentId.optional() }).strict(),
    response: z.object({
      jobId: z.string(),
      attempt: z.number().int(),
      user: z.string(),
      source: z.string(),
      format: z.enum(['yaml', 'json']),
      params: z.record(z.string(), ParamValue),
      assets: z.array(z.object({ path: z.string(), size: z.number().int(), digest: z.string() })),
      /** Limits the executor applies while running the job. (Absent from older servers.) */
      limits: z.object({ stepLogBytes: z.number().int() }).optional(),
      /** Files given for `file` params, fetched from `inputs/:param`. (Absent from older servers.) */
      inputs: z.array(JobInputInfo).optional(),
    }),
  },
  execReleaseClaim: {
    method: 'DELETE',
    path: '/api/exec/jobs/:id/claim',
    summary:
      "Agent: gives up its claim on the job's attempt before anything ran (its executor died while loading), so the redelivered offer can load elsewhere at once",
    tag: 'executor',
    auth: 'job',
    params: IdParams,
    query: z.object({ agent: AgentId }).strict(),
    status: 204,
  },
  execAsset: {
    method: 'GET',
    path: '/api/exec/jobs/:id/assets/:digest',
    summary: 'Executor: one asset file of its workflow, by digest',
    tag: 'executor',
    auth: 'job',
    params: z.object({ id: z.string().min(1).max(100), digest: z.string().regex(/^[a-f0-9]{64}$/) }).strict(),
    responseMediaType: 'application/octet-stream',
  },
  execInput: {
    method: 'GET',
    path: '/api/exec/jobs/:id/inputs/:param',
    summary: 'Executor: the file its job was given for a `file` param',
    tag: 'executor',
    auth: 'job',
    params: InputParams,
    responseMediaType: 'application/octet-stream',
  },
  execLogChunk: {
    method: 'POST',
    path: '/api/exec/jobs/:id/logs/:step/:stream/chunks',
    summary:
      "Executor: append a piece of a running step's stdout or stderr at byte `offset` (idempotent by offset; a gap is refused with the size stored)",
    tag: 'executor',
    auth: 'job',
    params: LogParams,
    query: z.object({ offset: z.coerce.number().int().min(0) }).strict(),
    response: z.object({ size: z.number().int() }),
  },
  execUploadResult: {
    method: 'PUT',
    path: '/api/exec/jobs/:id/results/:name',
    summary: 'Executor: upload one result file (query `kind`, `format`, `rows`)',
    tag: 'executor',
    auth: 'job',
    params: ResultParams,
    query: z
      .object({
        kind: z.enum(['table', 'file']),
        format: z
          .string()
          .regex(/^[a-z0-9]{1,16}$/)
          .optional(),
        rows: z.coerce.number().int().min(0).optional(),
      })
      .strict(),
    status: 204,
  },
  execUploadLog: {
    method: 'PUT',
    path: '/api/exec/jobs/:id/logs/:step/:stream',
    summary:
      "Executor: upload a step's stdout or stderr; the server stores at most its step log limit (head, marker, tail)",
    tag: 'executor',
    auth: 'job',
    params: LogParams,
    status: 204,
  },
} as const satisfies Record<string, ApiRoute>;

export type ApiRoutes = typeof apiRoutes;
export type RouteName = keyof ApiRoutes;

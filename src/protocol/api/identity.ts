/** Sign-in, portal sessions, the caller, API tokens and user administration. */
import { z } from 'zod';
import { Role, UserName } from './common.js';
import { type ApiRoute, IdParams } from './route.js';

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

/** Who the caller is. `source` and `token` are left out when their record is gone (deleted meanwhile). */
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
  /** Where the user comes from: `local` or `ldap`. */
  source: UserSource,
  /** When an admin deleted the user; null while it exists. Deleted users are listed only on request. */
  deletedAt: z.string().nullable(),
});
export type User = z.infer<typeof User>;
/**
 * An existing user's name: not `UserName`, because LDAP users are named by the directory (their first login
 * creates them) and may not follow the local-user pattern; they must still be manageable.
 */
const ExistingUserName = z.string().min(1).max(256);
export const UserParams = z.object({ name: ExistingUserName }).strict();
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
  /** The owner. */
  user: z.string(),
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

/** Routes of this area, in the order the OpenAPI document lists them. */
export const identityRoutes = {
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
} as const satisfies Record<string, ApiRoute>;

/** Route handlers: sign-in, sessions, tokens and users. */
import { StewardError } from '../../protocol/index.js';
import type { ServerContext } from '../context.js';
import { iso, tokenView, userView } from '../views.js';
import type { Handlers } from './types.js';

export function identityHandlers(ctx: ServerContext) {
  return {
    ...signInHandlers(ctx),
    ...tokenHandlers(ctx),
    ...userHandlers(ctx),
  } satisfies Partial<Handlers>;
}

/** Health, the API document, login, portal sessions and `me`. */
function signInHandlers(ctx: ServerContext) {
  const { store, auth } = ctx;

  return {
    health: async () => ({ status: 'ok', version: ctx.version, time: new Date().toISOString() }),

    openapi: async () => ctx.openApiDocument(),

    login: async ({ body, source }) => {
      const session = await auth.login(body.user, body.password, source);
      return {
        token: session.token,
        user: session.user,
        role: session.role,
        expiresAt: iso(session.expiresAt),
      };
    },

    createSession: async ({ body, source, request, reply }) =>
      ctx.sessions.signIn(request, reply, body, source),

    getSession: async ({ source, request, reply }) => ctx.sessions.current(request, reply, source),

    deleteSession: async ({ source, request, reply }) => {
      await ctx.sessions.signOut(request, reply, source);
      return undefined;
    },

    me: async ({ principal }) => {
      const [user, token] = await Promise.all([
        store.getUser(principal.user),
        store.getToken(principal.tokenId),
      ]);
      return {
        user: principal.user,
        role: principal.role,
        ...(user ? { source: user.source } : {}),
        ...(token
          ? { token: { id: token.id, kind: token.kind, name: token.name, expiresAt: iso(token.expiresAt) } }
          : {}),
      };
    },
  } satisfies Partial<Handlers>;
}

/** A user's named API tokens. */
function tokenHandlers(ctx: ServerContext) {
  const { store, auth } = ctx;

  return {
    createToken: async ({ principal, body, source }) => {
      const { token, record } = await auth.createApiToken(principal, body.name, body.expiresInDays, source);
      return { ...tokenView(record), token };
    },

    listTokens: async ({ principal, query, source }) => {
      const user = query.user ?? principal.user;
      if (user !== principal.user && principal.role !== 'admin') {
        await ctx.audit.record({
          actor: principal.user,
          action: 'forbidden',
          target: `tokens of ${user}`,
          source,
        });
        throw new StewardError(
          'STEWARD_FORBIDDEN',
          "only admins can list another user's tokens; an admin grants the admin role (`steward user role NAME admin`)",
        );
      }
      return { tokens: (await store.listTokens(user)).map(tokenView) };
    },

    revokeToken: async ({ principal, params, source }) => {
      await auth.revokeApiToken(principal, params.id, source);
      return undefined;
    },
  } satisfies Partial<Handlers>;
}

/** Users, for admins (and a user's own password). */
function userHandlers(ctx: ServerContext) {
  const { store, auth } = ctx;

  return {
    createUser: async ({ principal, body, source }) => {
      await auth.createUser(principal, body, source);
      const user = await store.getUser(body.name);
      return userView(user!);
    },

    listUsers: async ({ query }) => ({
      users: (await store.listUsers())
        .filter((user) => query.deleted === 'true' || user.deletedAt === null)
        .map(userView),
    }),

    disableUser: async ({ principal, params, source }) => {
      const { user, canceledJobs } = await ctx.users.disable(principal, params.name, source);
      return { ...userView(user), canceledJobs };
    },

    enableUser: async ({ principal, params, source }) =>
      userView(await ctx.users.enable(principal, params.name, source)),

    setUserRole: async ({ principal, params, body, source }) =>
      userView(await ctx.users.setRole(principal, params.name, body.role, source)),

    setUserPassword: async ({ principal, params, body, source }) => {
      await auth.changePassword(principal, params.name, body, source);
      return undefined;
    },

    deleteUser: async ({ principal, params, source }) => {
      await ctx.users.delete(principal, params.name, source);
      return undefined;
    },
  } satisfies Partial<Handlers>;
}

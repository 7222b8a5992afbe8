/** Route handlers: workflows, spaces and groups. */
import type { WorkflowRecord } from '../../store/index.js';
import type { Principal } from '../auth.js';
import type { ServerContext } from '../context.js';
import {
  groupView,
  iso,
  spaceMemberView,
  spaceView,
  workflowDetailView,
  workflowVersionView,
} from '../views.js';
import type { Handlers } from './types.js';

export function workflowsHandlers(ctx: ServerContext) {
  return {
    ...workflowHandlers(ctx),
    ...spaceHandlers(ctx),
  } satisfies Partial<Handlers>;
}

/** Workflows: in the caller's personal space (bare names) and in any space by name. */
function workflowHandlers(ctx: ServerContext) {
  const { workflows, spaces } = ctx;

  return {
    pushWorkflow: async ({ principal, body, source }) =>
      pushedView(await workflows.push(principal, body, source)),

    listWorkflows: async ({ principal }) =>
      listSpaceWorkflows(ctx, principal, (await spaces.ownPersonal(principal)).name),

    showWorkflow: async ({ principal, params }) =>
      workflowDetailView(await workflows.resolve(principal, { space: principal.user, name: params.name })),

    showWorkflowVersion: async ({ principal, params }) =>
      workflowDetailView(
        await workflows.resolve(principal, {
          space: principal.user,
          name: params.name,
          version: params.version,
        }),
      ),

    listWorkflowVersions: async ({ principal, params }) => ({
      versions: (await workflows.versions(principal, { space: principal.user, name: params.name })).map(
        workflowVersionView,
      ),
    }),

    deleteWorkflow: async ({ principal, params, source }) =>
      workflows.delete(principal, { space: principal.user, name: params.name }, source),

    pushSpaceWorkflow: async ({ principal, params, body, source }) =>
      pushedView(await workflows.push(principal, body, source, params.space)),

    listSpaceWorkflows: async ({ principal, params }) => listSpaceWorkflows(ctx, principal, params.space),

    showSpaceWorkflow: async ({ principal, params }) =>
      workflowDetailView(await workflows.resolve(principal, { space: params.space, name: params.name })),

    listSpaceWorkflowVersions: async ({ principal, params }) => ({
      versions: (await workflows.versions(principal, { space: params.space, name: params.name })).map(
        workflowVersionView,
      ),
    }),

    showSpaceWorkflowVersion: async ({ principal, params }) =>
      workflowDetailView(
        await workflows.resolve(principal, {
          space: params.space,
          name: params.name,
          version: params.version,
        }),
      ),

    deleteSpaceWorkflow: async ({ principal, params, source }) =>
      workflows.delete(principal, { space: params.space, name: params.name }, source),
  } satisfies Partial<Handlers>;
}

/** Spaces, their members, and local groups. */
function spaceHandlers(ctx: ServerContext) {
  const { store, spaces } = ctx;

  return {
    createSpace: async ({ principal, body, source }) =>
      spaceView(await spaces.createShared(principal, body.name, body.description, source), null),

    listSpaces: async ({ principal }) => ({
      spaces: (await spaces.visible(principal)).map(({ space, role }) => spaceView(space, role)),
    }),

    showSpace: async ({ principal, params }) => {
      const { space, role } = await spaces.require(principal, params.space, 'view');
      return {
        ...spaceView(space, role),
        members: (await store.spaces.listMembers(space.name)).map(spaceMemberView),
        workflows: await store.countWorkflows(space.name),
      };
    },

    deleteSpace: async ({ principal, params, source }) => {
      await spaces.deleteShared(principal, params.space, source);
      return undefined;
    },

    setSpaceMember: async ({ principal, params, body, source }) =>
      spaceMemberView(await spaces.setMember(principal, params.space, body, source)),

    removeSpaceMember: async ({ principal, params, query, source }) => {
      await spaces.removeMember(principal, params.space, query, source);
      return undefined;
    },

    createGroup: async ({ principal, body, source }) =>
      groupView(await spaces.createGroup(principal, body.name, body.description, source)),

    listGroups: async () => ({ groups: (await store.spaces.listGroups()).map(groupView) }),

    addGroupMember: async ({ principal, params, source }) =>
      groupView(await spaces.addGroupMember(principal, params.group, params.user, source)),

    removeGroupMember: async ({ principal, params, source }) =>
      groupView(await spaces.removeGroupMember(principal, params.group, params.user, source)),
  } satisfies Partial<Handlers>;
}

/** A space's workflows, for a caller who may view the space. */
async function listSpaceWorkflows(ctx: ServerContext, principal: Principal, space: string) {
  const { store, spaces } = ctx;
  await spaces.require(principal, space, 'view');
  return {
    workflows: (await store.listWorkflows(space)).map((w) => ({
      space: w.space,
      name: w.name,
      latestVersion: w.latestVersion,
      description: w.description,
      updatedAt: iso(w.updatedAt),
      updatedBy: w.updatedBy,
    })),
  };
}

/** A push's answer: the version, and whether it was the latest one already (nothing new was stored). */
function pushedView(pushed: { record: WorkflowRecord; unchanged: boolean }) {
  return { ...workflowVersionView(pushed.record), unchanged: pushed.unchanged };
}

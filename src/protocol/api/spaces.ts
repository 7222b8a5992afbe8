/** Shared spaces, their members and workflows, and local groups. */
import { z } from 'zod';
import { SpaceName, UserName, WorkflowName } from './common.js';
import type { ApiRoute } from './route.js';
import {
  DeleteWorkflowResponse,
  PushWorkflowRequest,
  PushedWorkflow,
  WorkflowDetail,
  WorkflowSummary,
  WorkflowVersion,
} from './workflows.js';

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

const SpaceParams = z.object({ space: SpaceName }).strict();
const SpaceNameParams = z.object({ space: SpaceName, name: WorkflowName }).strict();
const GroupMemberParams = z.object({ group: GroupName, user: UserName }).strict();

/** Routes of this area, in the order the OpenAPI document lists them. */
export const spaceRoutes = {
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
    response: PushedWorkflow,
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
} as const satisfies Record<string, ApiRoute>;

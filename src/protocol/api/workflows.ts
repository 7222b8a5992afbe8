/** Pushing, listing, showing and deleting workflows in the caller's personal space. */
import { z } from 'zod';
import { ParamValue } from '../messages.js';
import { WorkflowName } from './common.js';
import type { ApiRoute } from './route.js';

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

/** One param a workflow declares: the one shape for the engine (`ParamSpec`), the store and the API. */
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
/** A workflow's declared param, as the engine parses it, the store keeps it and the API shows it. */
export type ParamDefinition = z.infer<typeof ParamDefinition>;
export type ParamType = ParamDefinition['type'];

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
/** A push's answer. `unchanged`: the file and its assets equal the latest version, which stays the latest. */
export const PushedWorkflow = WorkflowVersion.extend({
  // A server older than this field stored a new version every time.
  unchanged: z.boolean().default(false),
});
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

export const DeleteWorkflowResponse = z.object({
  space: z.string(),
  name: z.string(),
  /** How many versions were marked deleted (jobs that ran them keep them readable). */
  versions: z.number().int(),
});

const NameParams = z.object({ name: WorkflowName }).strict();

/** Routes of this area, in the order the OpenAPI document lists them. */
export const workflowRoutes = {
  pushWorkflow: {
    method: 'POST',
    path: '/api/workflows',
    summary: 'Validate and store a new workflow version in your personal space',
    tag: 'workflows',
    auth: 'user',
    body: PushWorkflowRequest,
    response: PushedWorkflow,
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
} as const satisfies Record<string, ApiRoute>;

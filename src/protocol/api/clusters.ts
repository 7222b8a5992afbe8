/** Clusters: named agent pools behind bus connections of their own, attached and detached at run time. */
import { z } from 'zod';
import { CheckReport } from '../checks.js';
import type { ApiRoute } from './route.js';

/** The cluster of the server's own bus: always there, where `steward up` and `steward server` run agents. */
export const LOCAL_CLUSTER = 'local';

export const ClusterName = z
  .string()
  .regex(/^[a-z][a-z0-9-]{0,62}$/, 'expected a cluster name: a-z first, then a-z, 0-9 or -, at most 63');

export const ClusterState = z.enum(['attached', 'detaching', 'detached']);

const AbsolutePath = z.string().min(1).max(4096).regex(/^\//, 'expected an absolute path');

export const AddClusterRequest = z
  .object({
    name: ClusterName,
    /**
     * `amqp://USER@HOST:PORT/VHOST` or `amqps://…`. A password in the URL is refused: give `passwordFile`,
     * which the server reads when it connects (secrets never go into the store).
     */
    broker: z
      .string()
      .max(2048)
      .regex(/^amqps?:\/\/[^\s]+$/, 'expected an amqp:// or amqps:// URL'),
    /** Virtual host; default the URL's, else `/`. */
    vhost: z.string().min(1).max(255).optional(),
    /** File on the server holding the broker password. */
    passwordFile: AbsolutePath.optional(),
    /** PEM files on the server: the CA of the broker's certificate, and a client certificate and key. */
    ca: AbsolutePath.optional(),
    cert: AbsolutePath.optional(),
    key: AbsolutePath.optional(),
  })
  .strict();

export const ClusterInfo = z.object({
  name: z.string(),
  /** `local` is built in: the server's own bus; it cannot be detached or removed. */
  builtIn: z.boolean(),
  /** Jobs that name no cluster go to the default one. */
  default: z.boolean(),
  state: ClusterState,
  /** The broker URL without credentials; null for `local`. */
  broker: z.string().nullable(),
  vhost: z.string().nullable(),
  passwordFile: z.string().nullable(),
  ca: z.string().nullable(),
  cert: z.string().nullable(),
  key: z.string().nullable(),
  /** Agents heard from within the server's agent lease, their slots and free slots. */
  agents: z.array(z.string()),
  slots: z.number().int(),
  freeSlots: z.number().int(),
  /** Jobs of the cluster not ended, by state. */
  jobs: z.object({
    queued: z.number().int(),
    offered: z.number().int(),
    loading: z.number().int(),
    running: z.number().int(),
  }),
});
export type ClusterInfo = z.infer<typeof ClusterInfo>;

const ClusterParams = z.object({ name: ClusterName }).strict();

export const AttachClusterRequest = z
  .object({
    /** Attach although checks failed (they are still run, reported and audited). */
    force: z.boolean().default(false),
  })
  .strict();

export const AttachClusterResponse = z.object({ cluster: ClusterInfo, report: CheckReport });

export const ClusterAgentConfig = z.object({
  /** A complete `steward agent --config` file (YAML), the server's public key inline. */
  yaml: z.string(),
});

export const clusterRoutes = {
  listClusters: {
    method: 'GET',
    path: '/api/clusters',
    summary: 'Clusters with their state, agents, slots and jobs (admins)',
    tag: 'clusters',
    auth: 'admin',
    response: z.object({ clusters: z.array(ClusterInfo) }),
  },
  addCluster: {
    method: 'POST',
    path: '/api/clusters',
    summary: 'Define a cluster, detached (admins)',
    tag: 'clusters',
    auth: 'admin',
    body: AddClusterRequest,
    response: ClusterInfo,
    status: 201,
  },
  clusterAgentConfig: {
    method: 'GET',
    path: '/api/clusters/:name/agent-config',
    summary:
      "A complete agent config for the cluster: broker, password file path, server URL, the server's key",
    tag: 'clusters',
    auth: 'admin',
    params: ClusterParams,
    response: ClusterAgentConfig,
  },
  checkCluster: {
    method: 'POST',
    path: '/api/clusters/:name/check',
    summary: "Run the cluster's checks: broker, credentials, permissions, topology, agents (admins)",
    tag: 'clusters',
    auth: 'admin',
    params: ClusterParams,
    response: CheckReport,
  },
  attachCluster: {
    method: 'POST',
    path: '/api/clusters/:name/attach',
    summary:
      'Run the checks and attach the cluster: it takes jobs (admins; refused when a check fails unless force)',
    tag: 'clusters',
    auth: 'admin',
    params: ClusterParams,
    body: AttachClusterRequest,
    response: AttachClusterResponse,
  },
  detachCluster: {
    method: 'POST',
    path: '/api/clusters/:name/detach',
    summary:
      'Detach a cluster: new submits are refused at once, queued jobs fail, offered and running jobs finish (admins)',
    tag: 'clusters',
    auth: 'admin',
    params: ClusterParams,
    response: ClusterInfo,
  },
  removeCluster: {
    method: 'DELETE',
    path: '/api/clusters/:name',
    summary: "Delete a detached cluster's definition (admins); its jobs and results stay",
    tag: 'clusters',
    auth: 'admin',
    params: ClusterParams,
    response: z.object({ name: z.string(), removed: z.literal(true) }),
  },
} as const satisfies Record<string, ApiRoute>;

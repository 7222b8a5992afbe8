/**
 * The `cluster` label of metrics: the cluster a job was routed to, the cluster an agent heartbeats on. The
 * number of clusters is small and admin-defined, so the label stays bounded.
 */
import type { AgentRecord, JobRecord } from '../../store/index.js';

export const DEFAULT_CLUSTER = 'local';

export function clusterOf(job: JobRecord): string {
  return job.cluster;
}

export function clusterOfAgent(agent: AgentRecord): string {
  return agent.cluster;
}

/**
 * The `cluster` label of metrics. Until jobs and agents name their cluster, everything is in the default
 * one; these two functions (and `JOB_CLUSTER` in store/stats.ts) are the only places to change then.
 */
import type { AgentRecord, JobRecord } from '../../store/index.js';

export const DEFAULT_CLUSTER = 'local';

export function clusterOf(_job: JobRecord): string {
  return DEFAULT_CLUSTER;
}

export function clusterOfAgent(_agent: AgentRecord): string {
  return DEFAULT_CLUSTER;
}

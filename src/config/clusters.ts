/** The server's cluster settings: which cluster a job goes to by default, and what the attach checks allow. */
import { z } from 'zod';
import { ClusterName, DEFAULT_DELIVERY_LIMIT, Duration } from '../protocol/index.js';
import { compileBus, type CompiledBusConfig } from './bus.js';

export const ClustersConfig = z
  .object({
    /**
     * The cluster a job goes to when neither the submit (`--cluster`) nor the workflow (`cluster:`) names
     * one. Default `local`: the server's own bus.
     */
    default: ClusterName.default('local'),
    /** Largest difference between an agent's clock and the server's that `cluster check` accepts. Default `30s`. */
    maxClockSkew: Duration.default(30_000),
    /**
     * How long `cluster check` and `attach` listen for the heartbeats of a detached cluster's agents.
     * Keep it above the agents' `heartbeatInterval`. Default `6s`.
     */
    heartbeatWait: Duration.default(6_000),
  })
  .strict();
export type ClustersConfig = z.input<typeof ClustersConfig>;

export interface CompiledClustersConfig {
  readonly default: string;
  readonly maxClockSkewMs: number;
  readonly heartbeatWaitMs: number;
}

export function compileClustersConfig(c: z.output<typeof ClustersConfig>): CompiledClustersConfig {
  return Object.freeze({
    default: c.default,
    maxClockSkewMs: c.maxClockSkew,
    heartbeatWaitMs: c.heartbeatWait,
  });
}

/** A cluster's broker as defined (and stored): secrets as file paths on the server, read when connecting. */
export interface ClusterBroker {
  name: string;
  brokerUrl: string;
  vhost: string | null;
  passwordFile: string | null;
  caFile: string | null;
  certFile: string | null;
  keyFile: string | null;
}

/** A stored cluster's bus: its files (password, TLS) are read now, never kept in the store. */
export function clusterBusConfig(cluster: ClusterBroker): CompiledBusConfig & { kind: 'amqp' } {
  const compiled = compileBus(
    {
      kind: 'amqp',
      urls: [cluster.brokerUrl],
      ...(cluster.vhost !== null ? { vhost: cluster.vhost } : {}),
      ...(cluster.passwordFile !== null ? { passwordFile: cluster.passwordFile } : {}),
      ...(cluster.caFile !== null ? { ca: cluster.caFile } : {}),
      ...(cluster.certFile !== null ? { cert: cluster.certFile } : {}),
      ...(cluster.keyFile !== null ? { key: cluster.keyFile } : {}),
      deliveryLimit: DEFAULT_DELIVERY_LIMIT,
      queueType: 'auto',
    },
    `cluster ${cluster.name}`,
  );
  if (compiled.kind !== 'amqp') throw new Error('unreachable: a cluster bus is amqp');
  return compiled;
}

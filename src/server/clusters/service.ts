/**
 * Cluster administration (admins only, every change audited) and the submit-time admission of a job to its
 * cluster. Attaching runs the checks first and refuses on a failure unless forced; detaching refuses new
 * submits at once, fails the cluster's queued jobs (they were never offered: nothing would run them) and
 * lets offered, loading and running jobs finish on the cluster's bus, which the registry closes once the
 * last of them ended.
 */
import { stringify } from 'yaml';
import type { z } from 'zod';
import {
  checkReport,
  LOCAL_CLUSTER,
  StewardError,
  type CheckReport,
  type ClusterInfo,
  type AddClusterRequest,
} from '../../protocol/index.js';
import type { ClusterRecord, Store } from '../../store/index.js';
import type { AuditLog } from '../audit.js';
import type { Principal } from '../auth.js';
import type { TransitionJob } from '../jobs/transition.js';
import { agentChecks, brokerChecks, listenForAgents, type ClusterCheckDeps } from './checks.js';
import type { ClusterRegistry } from './registry.js';

export interface ClusterServiceDeps extends ClusterCheckDeps {
  store: Store;
  audit: AuditLog;
  registry: ClusterRegistry;
  /** The server's offer-signing public key (PEM), printed inline in agent configs. */
  publicKeyPem: string;
  /** Moves a job (the job service's transition), for the queued jobs of a detached cluster. */
  transition: () => TransitionJob;
}

type AddCluster = z.output<typeof AddClusterRequest>;

export class ClusterService {
  constructor(private readonly deps: ClusterServiceDeps) {}

  /** The cluster a job goes to, refused when it could not run there (unknown, detached, no agent, a label). */
  async admit(requested: string | undefined, labels: readonly string[]): Promise<string> {
    const cluster = requested ?? this.deps.config.clusters.default;
    if (cluster !== LOCAL_CLUSTER) {
      const record = await this.deps.store.clusters.get(cluster);
      if (!record)
        throw new StewardError('STEWARD_CLUSTER_UNKNOWN', `no cluster ${cluster}`, { details: { cluster } });
      if (record.state !== 'attached' || !this.deps.registry.isOpen(cluster))
        throw new StewardError(
          'STEWARD_CLUSTER_DETACHED',
          `cluster ${cluster} is ${record.state === 'attached' ? 'not open on this server yet' : record.state}: it takes no new jobs`,
          { details: { cluster, state: record.state } },
        );
    }
    const agents = await this.deps.store.listAgents(Date.now() - this.deps.config.agentLeaseMs, cluster);
    // The local cluster's agent may still be starting (`steward up` starts it with the server): its jobs
    // wait for it. Any other cluster without a live agent refuses at once.
    if (agents.length === 0) {
      if (cluster === LOCAL_CLUSTER) return cluster;
      throw new StewardError(
        'STEWARD_CLUSTER_NO_AGENTS',
        `cluster ${cluster} has no live agent: nothing could run the job`,
        { details: { cluster } },
      );
    }
    const missing = labels.find((label) => !agents.some((agent) => agent.labels.includes(label)));
    const fitting = agents.some((agent) => labels.every((label) => agent.labels.includes(label)));
    if (!fitting)
      throw new StewardError(
        'STEWARD_LABEL_UNAVAILABLE',
        missing !== undefined
          ? `no live agent of cluster ${cluster} has label ${missing}`
          : `no live agent of cluster ${cluster} has all of the labels ${labels.join(', ')}`,
        { details: { cluster, labels: [...labels], ...(missing !== undefined ? { missing } : {}) } },
      );
    return cluster;
  }

  async list(): Promise<ClusterInfo[]> {
    const [records, unfinished, agents] = await Promise.all([
      this.deps.store.clusters.list(),
      this.deps.store.clusters.unfinishedJobs(),
      this.deps.store.listAgents(Date.now() - this.deps.config.agentLeaseMs),
    ]);
    const info = (name: string, record: ClusterRecord | undefined): ClusterInfo => {
      const mine = agents.filter((agent) => agent.cluster === name);
      const jobs = unfinished.get(name) ?? {};
      return {
        name,
        builtIn: record === undefined,
        default: this.deps.config.clusters.default === name,
        state: record?.state ?? 'attached',
        broker: record ? withoutCredentials(record.brokerUrl) : null,
        vhost: record?.vhost ?? null,
        passwordFile: record?.passwordFile ?? null,
        ca: record?.caFile ?? null,
        cert: record?.certFile ?? null,
        key: record?.keyFile ?? null,
        agents: mine.map((agent) => agent.id),
        slots: mine.reduce((sum, agent) => sum + agent.capacity.slots, 0),
        freeSlots: mine.reduce((sum, agent) => sum + (agent.draining ? 0 : agent.capacity.free), 0),
        jobs: {
          queued: jobs.queued ?? 0,
          offered: jobs.offered ?? 0,
          loading: jobs.loading ?? 0,
          running: jobs.running ?? 0,
        },
      };
    };
    return [info(LOCAL_CLUSTER, undefined), ...records.map((record) => info(record.name, record))];
  }

  async get(name: string): Promise<ClusterInfo> {
    const found = (await this.list()).find((cluster) => cluster.name === name);
    if (!found)
      throw new StewardError('STEWARD_CLUSTER_UNKNOWN', `no cluster ${name}`, { details: { cluster: name } });
    return found;
  }

  async add(principal: Principal, input: AddCluster, source: string): Promise<ClusterInfo> {
    if (input.name === LOCAL_CLUSTER)
      throw new StewardError('STEWARD_CONFLICT', "cluster local is built in: it is the server's own bus");
    const url = new URL(input.broker);
    if (url.password !== '')
      throw new StewardError(
        'STEWARD_BAD_REQUEST',
        'broker: a password in the URL would be stored; put it in a file and give --password-file',
      );
    if ((input.cert === undefined) !== (input.key === undefined))
      throw new StewardError('STEWARD_BAD_REQUEST', 'cert and key go together (mutual TLS)');
    const created = await this.deps.store.clusters.create({
      name: input.name,
      brokerUrl: input.broker,
      vhost: input.vhost ?? null,
      passwordFile: input.passwordFile ?? null,
      caFile: input.ca ?? null,
      certFile: input.cert ?? null,
      keyFile: input.key ?? null,
    });
    if (!created) throw new StewardError('STEWARD_CONFLICT', `cluster ${input.name} already exists`);
    await this.audit(principal, 'cluster.add', input.name, source, {
      broker: withoutCredentials(input.broker),
      ...(input.vhost !== undefined ? { vhost: input.vhost } : {}),
    });
    return this.get(input.name);
  }

  async remove(principal: Principal, name: string, source: string): Promise<void> {
    const record = await this.record(name);
    if (record.state !== 'detached')
      throw new StewardError('STEWARD_CONFLICT', `cluster ${name} is ${record.state}: detach it first`);
    if (!(await this.deps.store.clusters.remove(name)))
      throw new StewardError('STEWARD_CONFLICT', `cluster ${name} changed meanwhile; try again`);
    await this.audit(principal, 'cluster.remove', name, source);
  }

  /** The checks; for a cluster not open here, after listening to its heartbeats for a while. */
  async check(name: string): Promise<CheckReport> {
    if (name === LOCAL_CLUSTER) return checkReport(await agentChecks(this.deps, LOCAL_CLUSTER));
    const record = await this.record(name);
    const broker = await brokerChecks(record);
    if (broker.some((check) => check.status === 'fail')) return checkReport(broker);
    if (!this.deps.registry.isOpen(name)) await listenForAgents(this.deps, record);
    return checkReport([...broker, ...(await agentChecks(this.deps, name))]);
  }

  async attach(
    principal: Principal,
    name: string,
    force: boolean,
    source: string,
  ): Promise<{ cluster: ClusterInfo; report: CheckReport }> {
    if (name === LOCAL_CLUSTER)
      throw new StewardError('STEWARD_CONFLICT', 'cluster local is always attached');
    const report = await this.check(name);
    const failed = report.checks.filter((check) => check.status === 'fail').map((check) => check.id);
    if (!report.ok && !force) {
      await this.audit(principal, 'cluster.attach.refused', name, source, { failed });
      throw new StewardError(
        'STEWARD_CLUSTER_CHECK_FAILED',
        `cluster ${name} not attached: checks failed: ${failed.join(', ')}`,
        { details: { checks: report.checks } },
      );
    }
    await this.deps.store.clusters.setState(name, 'attached', ['detached', 'detaching']);
    await this.deps.registry.reconcile();
    await this.audit(principal, 'cluster.attach', name, source, {
      force,
      ...(failed.length ? { failed } : {}),
    });
    return { cluster: await this.get(name), report };
  }

  async detach(principal: Principal, name: string, source: string): Promise<ClusterInfo> {
    if (name === LOCAL_CLUSTER)
      throw new StewardError('STEWARD_CONFLICT', 'cluster local cannot be detached');
    const record = await this.record(name);
    if (record.state === 'attached') await this.deps.store.clusters.setState(name, 'detaching', ['attached']);
    const failed = await this.failQueued(name);
    await this.deps.registry.reconcile();
    await this.audit(principal, 'cluster.detach', name, source, { queuedFailed: failed });
    return this.get(name);
  }

  /** The policy for a detached cluster's queued jobs: they fail, saying so (never offered, nothing ran). */
  private async failQueued(name: string): Promise<number> {
    let count = 0;
    for (const id of await this.deps.store.clusters.jobIds(name, ['queued'])) {
      const moved = await this.deps.transition()(
        id,
        'failed',
        {
          error: {
            code: 'STEWARD_CLUSTER_DETACHED',
            message: `cluster ${name} was detached before the job was offered`,
          },
        },
        { from: ['queued'] },
      );
      if (moved.ok) count++;
    }
    return count;
  }

  /** A complete `steward agent` config for the cluster, with this server's key inline. */
  async agentConfig(name: string): Promise<string> {
    if (name === LOCAL_CLUSTER)
      throw new StewardError(
        'STEWARD_CONFLICT',
        "cluster local's agents are configured with the server (steward up)",
      );
    const record = await this.record(name);
    const bus: Record<string, unknown> = { kind: 'amqp', urls: [withoutCredentials(record.brokerUrl, true)] };
    if (record.vhost !== null) bus.vhost = record.vhost;
    if (record.passwordFile !== null) bus.passwordFile = record.passwordFile;
    if (record.caFile !== null) bus.ca = record.caFile;
    const config = {
      agent: {
        serverUrl: this.deps.serverUrl(),
        serverPublicKey: this.deps.publicKeyPem,
        bus,
      },
    };
    return (
      `# steward agent --config FILE, as root, for cluster ${name}.\n` +
      '# The agent id defaults to the host name: set agent.id for a second agent on one host.\n' +
      (record.passwordFile !== null
        ? `# Copy the broker password to ${record.passwordFile} on the agent machine (mode 0600).\n`
        : '') +
      (record.certFile !== null
        ? "# Mutual TLS: add bus.cert and bus.key with this machine's certificate.\n"
        : '') +
      stringify(config, { lineWidth: 0 })
    );
  }

  private async record(name: string): Promise<ClusterRecord> {
    const record = await this.deps.store.clusters.get(name);
    if (!record)
      throw new StewardError('STEWARD_CLUSTER_UNKNOWN', `no cluster ${name}`, { details: { cluster: name } });
    return record;
  }

  private audit(
    principal: Principal,
    action: string,
    target: string,
    source: string,
    detail?: Record<string, unknown>,
  ): Promise<void> {
    return this.deps.audit.record({
      actor: principal.user,
      action,
      target,
      source,
      ...(detail ? { detail } : {}),
    });
  }
}

/** The URL without a password; with `keepUser`, the user name stays (agents connect as it). */
function withoutCredentials(url: string, keepUser = true): string {
  try {
    const parsed = new URL(url);
    parsed.password = '';
    if (!keepUser) parsed.username = '';
    return parsed.toString().replace(/\/$/, '');
  } catch {
    return url;
  }
}

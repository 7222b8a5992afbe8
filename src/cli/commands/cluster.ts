/**
 * `steward cluster add|agent-config|check|attach|list|detach|remove` (admins): clusters are agent pools
 * behind bus connections of their own, attached to and detached from the server at run time.
 */
import type { Command } from 'commander';
import { CheckResult, checkReport, type ClusterInfo } from '../../protocol/index.js';
import type { ApiClient } from '../client.js';
import { formatCheckTable } from '../checks-table.js';
import { CliError } from '../failures.js';
import { formatTable } from '../output.js';
import { contextOf, positiveInteger } from './shared.js';

export function registerClusterCommands(program: Command): void {
  const cluster = program
    .command('cluster')
    .description('agent pools behind other brokers: add, check, attach, list, detach (admins)');
  addCommand(cluster);
  agentConfigCommand(cluster);
  checkCommand(cluster);
  attachCommand(cluster);
  listCommand(cluster);
  detachCommand(cluster);
  removeCommand(cluster);
}

/** `steward cluster add NAME --broker URL`: define a cluster, detached. */
function addCommand(cluster: Command): void {
  cluster
    .command('add')
    .description('define a cluster, detached: a RabbitMQ broker and vhost its agents use')
    .argument('<name>', 'cluster name (a-z, 0-9, -)')
    .requiredOption('--broker <url>', 'amqp://USER@HOST:5672/VHOST or amqps://… (no password in it)')
    .option('--vhost <vhost>', "virtual host (default: the URL's, else /)")
    .option('--password-file <file>', 'file on the server holding the broker password')
    .option('--ca <file>', "PEM file on the server: the CA of the broker's certificate (amqps)")
    .option('--cert <file>', 'PEM client certificate on the server (mutual TLS)')
    .option('--key <file>', 'PEM client key on the server (mutual TLS)')
    .action(
      async (
        name: string,
        options: {
          broker: string;
          vhost?: string;
          passwordFile?: string;
          ca?: string;
          cert?: string;
          key?: string;
        },
        command: Command,
      ) => {
        const context = contextOf(command);
        const client = await context.client();
        const added = await client.call('addCluster', {
          body: {
            name,
            broker: options.broker,
            ...(options.vhost !== undefined ? { vhost: options.vhost } : {}),
            ...(options.passwordFile !== undefined ? { passwordFile: options.passwordFile } : {}),
            ...(options.ca !== undefined ? { ca: options.ca } : {}),
            ...(options.cert !== undefined ? { cert: options.cert } : {}),
            ...(options.key !== undefined ? { key: options.key } : {}),
          },
        });
        if (context.json) return context.printJson(added);
        context.out(
          `added cluster ${added.name} (detached); next: steward cluster agent-config ${name}, then steward cluster attach ${name}\n`,
        );
      },
    );
}

/** `steward cluster agent-config NAME`: print an agent config for the cluster. */
function agentConfigCommand(cluster: Command): void {
  cluster
    .command('agent-config')
    .description("print a complete agent config for the cluster (broker, server URL, the server's key)")
    .argument('<name>', 'cluster name')
    .action(async (name: string, _options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const { yaml } = await client.call('clusterAgentConfig', { params: { name } });
      if (context.json) return context.printJson({ yaml });
      context.out(yaml);
    });
}

/** `steward cluster check NAME`: run the cluster's checks. */
function checkCommand(cluster: Command): void {
  cluster
    .command('check')
    .description("run the cluster's checks; exit 1 when one fails")
    .argument('<name>', 'cluster name')
    .action(async (name: string, _options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const report = await client.call('checkCluster', { params: { name } });
      if (context.json) context.printJson(report);
      else context.out(formatCheckTable(report));
      if (!report.ok) process.exitCode = 1;
    });
}

/** `steward cluster attach NAME`: run the checks and attach the cluster. */
function attachCommand(cluster: Command): void {
  cluster
    .command('attach')
    .description('run the checks and attach the cluster: it takes jobs. Refused when a check fails')
    .argument('<name>', 'cluster name')
    .option('--force', 'attach although checks failed')
    .action(async (name: string, options: { force?: boolean }, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      let attached;
      try {
        attached = await client.call('attachCluster', {
          params: { name },
          body: { force: options.force === true },
        });
      } catch (error) {
        const checks = refusedChecks(error);
        if (checks) {
          if (context.json) context.printJson(checkReport(checks));
          else context.out(formatCheckTable(checkReport(checks)));
        }
        throw error;
      }
      if (context.json) return context.printJson(attached);
      context.out(formatCheckTable(attached.report));
      context.out(`attached cluster ${name}${attached.report.ok ? '' : ' (forced past failed checks)'}\n`);
    });
}

/** `steward cluster list`: clusters with their state, agents, slots and jobs. */
function listCommand(cluster: Command): void {
  cluster
    .command('list')
    .description('clusters with their state, agents, free and used slots, and jobs')
    .action(async (_options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const { clusters } = await client.call('listClusters');
      if (context.json) return context.printJson({ clusters });
      context.out(
        formatTable(
          ['name', 'state', 'broker', 'agents', 'free/slots', 'jobs (queued/offered/loading/running)'],
          clusters.map((item) => [
            `${item.name}${item.default ? ' (default)' : ''}`,
            item.state,
            item.broker === null
              ? '(server bus)'
              : `${item.broker}${item.vhost === null ? '' : ` vhost ${item.vhost}`}`,
            item.agents.length === 0 ? '-' : item.agents.join(','),
            `${item.freeSlots}/${item.slots}`,
            `${item.jobs.queued}/${item.jobs.offered}/${item.jobs.loading}/${item.jobs.running}`,
          ]),
        ),
      );
    });
}

/** `steward cluster detach NAME`: detach a cluster, with --wait until it is detached. */
function detachCommand(cluster: Command): void {
  cluster
    .command('detach')
    .description(
      'detach a cluster: new submits are refused at once, its queued jobs fail, offered and running jobs finish',
    )
    .argument('<name>', 'cluster name')
    .option('--wait', 'wait until its last job ended and it is detached')
    .option(
      '--timeout <seconds>',
      'with --wait: give up (exit 1) after this long',
      positiveInteger('--timeout'),
    )
    .action(async (name: string, options: { wait?: boolean; timeout?: number }, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      let info = await client.call('detachCluster', { params: { name } });
      if (options.wait) info = await waitDetached(client, name, options.timeout);
      if (context.json) return context.printJson(info);
      context.out(
        info.state === 'detached'
          ? `cluster ${name} detached\n`
          : `cluster ${name} detaching: new submits refused; ${unfinished(info)} job(s) finish first (--wait waits)\n`,
      );
    });
}

/** `steward cluster remove NAME`: delete a detached cluster's definition. */
function removeCommand(cluster: Command): void {
  cluster
    .command('remove')
    .description("delete a detached cluster's definition (its jobs and results stay)")
    .argument('<name>', 'cluster name')
    .action(async (name: string, _options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const removed = await client.call('removeCluster', { params: { name } });
      if (context.json) return context.printJson(removed);
      context.out(`removed cluster ${name}\n`);
    });
}

function unfinished(info: ClusterInfo): number {
  return info.jobs.queued + info.jobs.offered + info.jobs.loading + info.jobs.running;
}

async function waitDetached(
  client: ApiClient,
  name: string,
  timeoutSeconds: number | undefined,
): Promise<ClusterInfo> {
  const deadline = timeoutSeconds === undefined ? Infinity : Date.now() + timeoutSeconds * 1000;
  for (;;) {
    const { clusters } = await client.call('listClusters');
    const info = clusters.find((item) => item.name === name);
    if (!info) throw new CliError('STEWARD_CLUSTER_UNKNOWN', `cluster ${name} is gone`);
    if (info.state === 'detached') return info;
    if (Date.now() >= deadline)
      throw new CliError(
        'STEWARD_UNAVAILABLE',
        `cluster ${name} still has ${unfinished(info)} job(s) after ${timeoutSeconds}s`,
      );
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

/** The failed attach's checks, from the refusal's details. */
function refusedChecks(error: unknown): CheckResult[] | undefined {
  if (!(error instanceof CliError) || error.code !== 'STEWARD_CLUSTER_CHECK_FAILED') return undefined;
  const parsed = CheckResult.array().safeParse(error.details?.checks);
  return parsed.success ? parsed.data : undefined;
}

/**
 * Checks a broker before a cluster is attached: reachable (and its TLS certificate valid), the credentials
 * accepted, the vhost open to the user, every permission the topology needs — declaring it, consuming,
 * publishing through the default exchange (`amq.default`, which every Steward message goes through) and the
 * dead-letter exchange — and a topology of a compatible shape. One connection, closed at the end; each
 * operation on a channel of its own, since the broker closes a channel on a refusal.
 */
import { randomBytes } from 'node:crypto';
import amqp from 'amqplib';
import type { ChannelModel } from 'amqplib';
import { PROTOCOL_VERSION, type CheckResult } from '../../protocol/index.js';
import {
  connectOptions,
  describeConnectError,
  socketOptions,
  type ConnectionSettings,
} from './connection.js';
import { Topology, type QueueTypeOption } from './topology.js';

export interface BrokerProbeTarget extends Omit<ConnectionSettings, 'urls'> {
  url: string;
  /** Prefix of the topology's names. Default `steward.v1`. */
  prefix?: string;
  queueType?: QueueTypeOption;
  deliveryLimit: number;
  /** Longest wait for the connection. Default 10 s. */
  timeoutMs?: number;
}

type Outcome = Pick<CheckResult, 'status' | 'detail' | 'code' | 'fix'>;

const PERMISSION_FIX =
  "grant the broker user configure and read on Steward's names, and write on them and the default exchange: " +
  "rabbitmqctl set_permissions -p VHOST USER '^steward\\.' '^(amq\\.default|steward\\..*)$' '^steward\\.'";

function check(id: string, title: string, outcome: Outcome): CheckResult {
  return { id, title, fatal: false, ...outcome };
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Runs the broker checks in order; the first failure ends the list (later ones cannot run). */
export async function probeBroker(target: BrokerProbeTarget): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  const where = safeUrl(target.url);
  let connection: ChannelModel;
  try {
    connection = await connect(target);
  } catch (error) {
    results.push(...classifyConnectFailure(target, where, error));
    return results;
  }
  connection.on('error', () => {});
  try {
    results.push(
      check('cluster.broker.reachable', 'broker reachable', {
        status: 'pass',
        detail: `${where}${target.url.startsWith('amqps:') ? ' (TLS certificate valid)' : ''}`,
      }),
      check('cluster.broker.credentials', 'credentials accepted', {
        status: 'pass',
        detail: `user ${userOf(target)}, vhost ${vhostOf(target)}`,
      }),
    );
    results.push(...(await probePermissions(connection, target)));
  } finally {
    await connection.close().catch(() => {});
  }
  return results;
}

async function connect(target: BrokerProbeTarget): Promise<ChannelModel> {
  const settings: ConnectionSettings = { ...target, urls: [target.url] };
  const timeout = target.timeoutMs ?? 10_000;
  return await amqp.connect(connectOptions(settings, target.url), {
    ...socketOptions(settings),
    timeout,
  });
}

function classifyConnectFailure(target: BrokerProbeTarget, where: string, error: unknown): CheckResult[] {
  const message = messageOf(describeConnectError(target.url, error));
  if (/ACCESS[-_]REFUSED|403/.test(message))
    return [
      check('cluster.broker.reachable', 'broker reachable', { status: 'pass', detail: where }),
      check('cluster.broker.credentials', 'credentials accepted', {
        status: 'fail',
        code: 'STEWARD_CLUSTER_BROKER_AUTH',
        detail: `the broker refused user ${userOf(target)}: ${message}`,
        fix: 'check the user in the broker URL and the password file (--password-file); rabbitmqctl authenticate_user USER PASSWORD',
      }),
    ];
  // Credentials were accepted, but the vhost was not opened to the user (amqplib reports only that the
  // broker closed the connection instead of answering connection.open).
  if (/NOT[-_]ALLOWED|530|Expected ConnectionOpenOk/.test(message))
    return [
      check('cluster.broker.reachable', 'broker reachable', { status: 'pass', detail: where }),
      check('cluster.broker.credentials', 'credentials accepted', {
        status: 'pass',
        detail: `user ${userOf(target)}`,
      }),
      check('cluster.broker.permissions', 'permissions for the topology', {
        status: 'fail',
        code: 'STEWARD_CLUSTER_BROKER_PERMISSION',
        detail: `user ${userOf(target)} may not open vhost ${vhostOf(target)}: ${message}`,
        fix: `create the vhost and ${PERMISSION_FIX}`,
      }),
    ];
  return [
    check('cluster.broker.reachable', 'broker reachable', {
      status: 'fail',
      code: 'STEWARD_CLUSTER_BROKER_UNREACHABLE',
      detail: `${where}: ${message}`,
      fix: message.startsWith('TLS')
        ? 'check the CA file (--ca), the client certificate and key (--cert, --key) and the host name in the URL'
        : 'check the broker URL, that RabbitMQ listens there, and firewalls between this server and the broker',
    }),
  ];
}

/** Declares the topology, then consumes and publishes as server and agents do; names what was refused. */
async function probePermissions(connection: ChannelModel, target: BrokerProbeTarget): Promise<CheckResult[]> {
  const topology = new Topology(
    target.prefix ?? 'steward.v1',
    target.queueType ?? 'auto',
    target.deliveryLimit,
  );
  const version = (connection.connection as unknown as { serverProperties?: { version?: string } })
    .serverProperties?.version;
  topology.resolveFor(version);
  const probeQueue = `${target.prefix ?? 'steward.v1'}.probe.${randomBytes(6).toString('hex')}`;
  const steps: Array<[string, (channel: amqp.ConfirmChannel) => Promise<unknown>]> = [
    ['declare the queues and the dead-letter exchange', () => topology.declare(connection)],
    ['declare a queue', (c) => c.assertQueue(probeQueue, { exclusive: true, autoDelete: true })],
    ['consume from a queue', (c) => c.consume(probeQueue, () => {}).then((ok) => c.cancel(ok.consumerTag))],
    ['publish through the default exchange (amq.default)', (c) => publishConfirmed(c, '', probeQueue)],
    ['publish to the dead-letter exchange', (c) => publishConfirmed(c, topology.name('dlx'), 'probe')],
  ];
  for (const [what, step] of steps) {
    const channel = await connection.createConfirmChannel();
    channel.on('error', () => {});
    try {
      await step(channel);
    } catch (error) {
      const message = messageOf(error);
      if (/PRECONDITION[-_]FAILED|406/.test(message)) return [topologyFailure(`${what}: ${message}`)];
      return [
        check('cluster.broker.permissions', 'permissions for the topology', {
          status: 'fail',
          code: 'STEWARD_CLUSTER_BROKER_PERMISSION',
          detail: `refused to ${what}: ${message}`,
          fix: PERMISSION_FIX,
        }),
      ];
    } finally {
      await channel.close().catch(() => {});
    }
  }
  return [
    check('cluster.broker.permissions', 'permissions for the topology', {
      status: 'pass',
      detail: 'declare, consume, publish (default exchange and dead-letter exchange)',
    }),
    check('cluster.broker.topology', 'compatible topology and protocol', {
      status: 'pass',
      detail: `${topology.name('offers').replace(/\.offers$/, '.*')} (${topology.type ?? 'quorum'} queues, RabbitMQ ${version ?? 'unknown'}), protocol v${PROTOCOL_VERSION}`,
    }),
  ];
}

function topologyFailure(detail: string): CheckResult {
  return check('cluster.broker.topology', 'compatible topology and protocol', {
    status: 'fail',
    code: 'STEWARD_CLUSTER_TOPOLOGY',
    detail,
    fix: 'the broker holds Steward queues of another shape (another queue type or version): drain them and switch as the architecture page ("Queue type") describes',
  });
}

async function publishConfirmed(channel: amqp.ConfirmChannel, exchange: string, key: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    channel.once('close', () => reject(new Error('channel closed by the broker')));
    channel.once('error', (error: unknown) => reject(new Error(messageOf(error))));
    channel.publish(exchange, key, Buffer.from('{}'), { persistent: false }, (error: unknown) =>
      error ? reject(new Error(messageOf(error))) : resolve(),
    );
  });
}

function safeUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}${parsed.pathname === '/' ? '' : parsed.pathname}`;
  } catch {
    return 'the broker URL';
  }
}

function userOf(target: BrokerProbeTarget): string {
  if (target.user) return target.user;
  try {
    return decodeURIComponent(new URL(target.url).username) || 'guest';
  } catch {
    return 'guest';
  }
}

function vhostOf(target: BrokerProbeTarget): string {
  if (target.vhost) return target.vhost;
  try {
    return decodeURIComponent(new URL(target.url).pathname.slice(1)) || '/';
  } catch {
    return '/';
  }
}

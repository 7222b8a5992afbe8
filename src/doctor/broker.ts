/**
 * Broker checks: each configured bus answers at its URLs and accepts its credentials and vhost. Takes a list,
 * so the server's own bus and every attached cluster's are checked alike.
 */
import { brokerAddress, brokerRefusal, describeConnectError, tryBrokerLogin } from '../bus/index.js';
import type { CompiledBusConfig } from '../config/index.js';
import type { CheckResult } from '../protocol/index.js';
import { fail, oneLine, pass, warn } from './check.js';

export interface NamedBus {
  /** Names the check: `broker.<name>`. `default` for the daemon's own bus; a cluster's name otherwise. */
  name: string;
  bus: CompiledBusConfig;
  /** A failure stops the daemon at start. */
  fatal?: boolean;
}

/** One check per bus: every URL connected and logged in (pass), some (warn), none (fail). */
export async function brokerChecks(buses: readonly NamedBus[], timeoutMs = 5_000): Promise<CheckResult[]> {
  return Promise.all(buses.map((entry) => brokerCheck(entry, timeoutMs)));
}

async function brokerCheck({ name, bus, fatal }: NamedBus, timeoutMs: number): Promise<CheckResult> {
  const head = { id: `broker.${name}`, title: `broker of bus "${name}"`, fatal: fatal ?? false };
  if (bus.kind !== 'amqp') return pass(head, 'embedded bus (in-process)');
  const vhost = bus.vhost ?? 'the URL’s vhost';
  const user = bus.user ?? 'the URL’s user';
  const outcomes = await Promise.all(
    bus.urls.map(async (url) => {
      try {
        await tryBrokerLogin({ ...bus, urls: [...bus.urls] }, url, timeoutMs);
        return { url, ok: true as const };
      } catch (error) {
        return { url, ok: false as const, refusal: brokerRefusal(error), error };
      }
    }),
  );
  const refused = outcomes.find((outcome) => !outcome.ok && outcome.refusal !== undefined);
  if (refused && !refused.ok) {
    return fail(
      head,
      'STEWARD_BROKER_ACCESS_REFUSED',
      `${brokerAddress(refused.url)} ${refused.refusal} (user ${user}, vhost ${vhost})`,
      'check bus.user and bus.passwordFile, and that the vhost exists and the user has permissions on it (rabbitmqctl list_permissions -p VHOST)',
    );
  }
  const down = outcomes.filter((outcome) => !outcome.ok);
  const describe = (outcome: (typeof outcomes)[number]): string =>
    outcome.ok
      ? ''
      : `${brokerAddress(outcome.url)}: ${oneLine(describeConnectError(outcome.url, outcome.error))}`;
  if (down.length === outcomes.length) {
    return fail(
      head,
      'STEWARD_BROKER_UNREACHABLE',
      down.map(describe).join('; '),
      'start RabbitMQ or fix bus.urls (host, port, amqps and bus.ca); check firewalls between this machine and the broker',
    );
  }
  const reached = outcomes.filter((outcome) => outcome.ok).map((outcome) => brokerAddress(outcome.url));
  if (down.length > 0) {
    return warn(
      head,
      'STEWARD_BROKER_UNREACHABLE',
      `reached ${reached.join(', ')}; not ${down.map(describe).join('; ')}`,
      'a broker node of the list is down or unreachable; failover uses the others',
    );
  }
  return pass(head, `logged in as ${user} to vhost ${vhost} at ${reached.join(', ')}`);
}

/** The bus between server and agents, and the compiled form with the files it names already read. */
import { z } from 'zod';
import { DEFAULT_DELIVERY_LIMIT, StewardError } from '../protocol/index.js';
import { readSecretFile } from './read.js';

/** How server and agents talk: in-process (`steward up`) or through RabbitMQ (distributed). */
export const BusConfig = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('embedded') }).strict(),
  z
    .object({
      kind: z.literal('amqp'),
      /** Broker URLs (`amqp://host:5672`, `amqps://host:5671`), tried in order: failover. */
      urls: z.array(z.string().regex(/^amqps?:\/\/[^\s]+$/, 'expected an amqp:// or amqps:// URL')).min(1),
      /** Virtual host. Default: the one in the URL, else `/`. */
      vhost: z.string().min(1).optional(),
      /** User name. Default: the one in the URL, else `guest`. */
      user: z.string().min(1).optional(),
      /** Password (prefer `passwordFile`). Default: the one in the URL, else `guest`. */
      password: z.string().optional(),
      /** File holding the password (trailing newline ignored). */
      passwordFile: z.string().optional(),
      /** PEM files for amqps: CA certificate, and client certificate + key for mutual TLS. */
      ca: z.string().optional(),
      cert: z.string().optional(),
      key: z.string().optional(),
      /**
       * Deliveries after which an offer nobody takes is dead-lettered. Default 20. Counted by the broker on
       * quorum queues, by Steward on classic ones.
       */
      deliveryLimit: z.number().int().min(1).max(1000).default(DEFAULT_DELIVERY_LIMIT),
      /**
       * Queue type: `quorum`, `classic` (for brokers without quorum queues; Steward counts offers' deliveries
       * itself there), or `auto` (quorum when the broker has them, RabbitMQ ≥ 3.8). Classic queues have
       * their own names (`steward.v1.classic.*`). Default `auto`.
       */
      queueType: z.enum(['auto', 'quorum', 'classic']).default('auto'),
    })
    .strict(),
]);
export type BusConfig = z.input<typeof BusConfig>;

export type CompiledBusConfig =
  | { readonly kind: 'embedded' }
  | {
      readonly kind: 'amqp';
      readonly urls: readonly string[];
      readonly vhost: string | undefined;
      readonly user: string | undefined;
      readonly password: string | undefined;
      readonly ca: string | undefined;
      readonly cert: string | undefined;
      readonly key: string | undefined;
      readonly deliveryLimit: number;
      readonly queueType: 'auto' | 'quorum' | 'classic';
    };

/** Reads the files a bus config names (password, certificates) once, here at the boundary. */
export function compileBus(bus: z.output<typeof BusConfig> | undefined, what: string): CompiledBusConfig {
  if (!bus || bus.kind === 'embedded') return Object.freeze({ kind: 'embedded' as const });
  if (bus.password !== undefined && bus.passwordFile !== undefined) {
    throw new StewardError('STEWARD_CONFIG_INVALID', `${what}.bus: give password or passwordFile, not both`);
  }
  if ((bus.cert === undefined) !== (bus.key === undefined)) {
    throw new StewardError('STEWARD_CONFIG_INVALID', `${what}.bus: cert and key go together`);
  }
  const password =
    bus.passwordFile !== undefined
      ? readSecretFile(bus.passwordFile, `${what}.bus.passwordFile`).replace(/\r?\n$/, '')
      : bus.password;
  return Object.freeze({
    kind: 'amqp' as const,
    urls: Object.freeze([...bus.urls]),
    vhost: bus.vhost,
    user: bus.user,
    password,
    ca: bus.ca !== undefined ? readSecretFile(bus.ca, `${what}.bus.ca`) : undefined,
    cert: bus.cert !== undefined ? readSecretFile(bus.cert, `${what}.bus.cert`) : undefined,
    key: bus.key !== undefined ? readSecretFile(bus.key, `${what}.bus.key`) : undefined,
    deliveryLimit: bus.deliveryLimit,
    queueType: bus.queueType,
  });
}

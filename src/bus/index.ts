export type { Bus, Delivery, Subscription, DeadLetter, Handler } from './types.js';
export { EmbeddedBus } from './embedded.js';
export {
  AmqpBus,
  describeConnectError,
  supportsQuorumQueues,
  probeBroker,
  type AmqpBusOptions,
  type BrokerProbeTarget,
  type QueueTypeOption,
} from './amqp/index.js';

export type { Bus, Delivery, Subscription, DeadLetter, Handler } from './types.js';
export { EmbeddedBus } from './embedded.js';
export {
  AmqpBus,
  describeConnectError,
  supportsQuorumQueues,
  type AmqpBusOptions,
  type QueueTypeOption,
} from './amqp/index.js';

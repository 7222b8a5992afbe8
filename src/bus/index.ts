export type { Bus, Delivery, Subscription, DeadLetter, Handler } from './types.js';
export { EmbeddedBus } from './embedded.js';
export {
  AmqpBus,
  amqpBusOptions,
  brokerAddress,
  brokerRefusal,
  describeConnectError,
  probeBroker,
  supportsQuorumQueues,
  tryBrokerLogin,
  type AmqpBusOptions,
  type BrokerProbeTarget,
  type QueueTypeOption,
} from './amqp/index.js';

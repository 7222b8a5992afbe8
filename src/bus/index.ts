export type { Bus, Delivery, Subscription, DeadLetter, Handler } from './types.js';
export { EmbeddedBus } from './embedded.js';
export { AmqpBus, type AmqpBusOptions } from './amqp.js';

export type { Bus, Delivery, Subscription, DeadLetter, Handler } from './types.js';
export { EmbeddedBus } from './embedded.js';

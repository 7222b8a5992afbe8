/**
 * The bus as the server uses it, with refused publishes counted for the metrics. The broker connection's
 * own failures are counted where the daemon learns of them (`onConnectionEvent`, `onHandlerError`).
 * Everything else is passed through unchanged.
 */
import type { Bus } from '../../bus/index.js';
import type { ServerMetrics } from './registry.js';

export function countingBus(bus: Bus, metrics: ServerMetrics): Bus {
  const counted = <T>(promise: Promise<T>): Promise<T> =>
    promise.catch((error: unknown) => {
      metrics.countBusError('publish');
      throw error;
    });
  return {
    get kind() {
      return bus.kind;
    },
    get deliveryLimit() {
      return bus.deliveryLimit;
    },
    publishOffer: (offer) => counted(bus.publishOffer(offer)),
    consumeOffers: (handler, options) => bus.consumeOffers(handler, options),
    publishDaskWorkerOffer: (offer) => counted(bus.publishDaskWorkerOffer(offer)),
    consumeDaskWorkerOffers: (handler, options) => bus.consumeDaskWorkerOffers(handler, options),
    publishEvent: (message) => bus.publishEvent(message),
    publishHeartbeat: (heartbeat) => bus.publishHeartbeat(heartbeat),
    consumeHeartbeats: (handler) => bus.consumeHeartbeats(handler),
    consumeEvents: (handler) => bus.consumeEvents(handler),
    publishControl: (agentId, control) => counted(bus.publishControl(agentId, control)),
    consumeControl: (agentId, handler) => bus.consumeControl(agentId, handler),
    pendingEvents: () => bus.pendingEvents(),
    consumeDeadLetters: (handler) => bus.consumeDeadLetters(handler),
    close: () => bus.close(),
  };
}

export { AmqpBus, type AmqpBusOptions } from './bus.js';
export { describeConnectError } from './connection.js';
export { supportsQuorumQueues, type QueueTypeOption } from './topology.js';
export { probeBroker, type BrokerProbeTarget } from './probe.js';

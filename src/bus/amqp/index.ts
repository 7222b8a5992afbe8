export { AmqpBus, type AmqpBusOptions } from './bus.js';
export { brokerAddress, brokerRefusal, describeConnectError, probeBroker } from './connection.js';
export { supportsQuorumQueues, type QueueTypeOption } from './topology.js';

export { AmqpBus, amqpBusOptions, type AmqpBusOptions } from './bus.js';
export { brokerAddress, brokerRefusal, describeConnectError, tryBrokerLogin } from './connection.js';
export { supportsQuorumQueues, type QueueTypeOption } from './topology.js';
export { probeBroker, type BrokerProbeTarget } from './probe.js';

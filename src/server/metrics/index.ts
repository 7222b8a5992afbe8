export { countingBus } from './bus.js';
export { clusterOf, clusterOfAgent, DEFAULT_CLUSTER } from './clusters.js';
export { bearerMatches, METRICS_PATH, MetricsListener, registerMetricsRoute } from './endpoint.js';
export { ServerMetrics, type BusErrorKind, type LoginFailureReason, type MetricsSource } from './registry.js';

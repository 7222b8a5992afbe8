/** Per-step Dask clusters: certificates, processes, worker placement, the step's view. */
export {
  DASK_HELPER_DIR,
  DEFAULT_DASK_PYTHON,
  helperPythonPath,
  startDaskCluster,
  type DaskCluster,
} from './cluster.js';
export { checkDask } from './check.js';
export { makeDaskCertificates, type DaskTlsFiles } from './certificates.js';
export {
  LocalWorkerPlacement,
  type DaskPlacementContext,
  type DaskWorkerPlacement,
  type DaskWorkerRequest,
  type PlacedDaskWorker,
  workerArgv,
} from './placement.js';
export { DaskLogSink, DaskProcess, type DaskExit } from './process.js';
export { startStepCluster, type StepCluster } from './step.js';

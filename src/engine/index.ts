/** The engine's public surface: parse + validate workflows, resolve params, run jobs. */
export type * from './types.js';
export { parseWorkflow, describeWorkflow, type ParseOptions } from './validator.js';
export { resolveParams } from './params.js';
export { runWorkflow } from './runner.js';
export { DuckDBHost } from './tables.js';
export { closeSqlAnalyzer } from './sql-analyzer.js';
export {
  DEFAULT_STEP_LOG_LIMIT_BYTES,
  MIN_STEP_LOG_LIMIT_BYTES,
  STEP_LOG_MARKER_MAX_BYTES,
  STEP_LOG_MARKER_PATTERN,
  StepLogWriter,
  stepLogMarker,
  type StepLogSummary,
} from './step-log.js';
export {
  checkDask,
  DASK_HELPER_DIR,
  DaskLogSink,
  DaskProcess,
  DEFAULT_DASK_PYTHON,
  helperPythonPath,
  LocalWorkerPlacement,
  workerArgv,
} from './dask/index.js';
export type {
  DaskExit,
  DaskPlacementContext,
  DaskWorkerPlacement,
  DaskWorkerRequest,
  PlacedDaskWorker,
} from './dask/index.js';

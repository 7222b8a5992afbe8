/**
 * Whether this machine can run `dask:` steps: the Python Steward runs Dask with can import `distributed`
 * and `pandas`. In the shared check shape, for `steward doctor` on an agent machine (a warning, not a
 * failure: only workflows with `dask:` need it).
 */
import { execFile } from 'node:child_process';
import type { CheckResult } from '../../protocol/index.js';
import { DEFAULT_DASK_PYTHON } from './cluster.js';

const PROBE = 'import distributed, pandas; print(distributed.__version__, pandas.__version__)';

export async function checkDask(python: string = DEFAULT_DASK_PYTHON): Promise<CheckResult> {
  const base = { id: 'agent.dask', title: 'Dask for dask: steps', fatal: false };
  const outcome = await new Promise<{ ok: true; stdout: string } | { ok: false; message: string }>(
    (resolve) => {
      execFile(
        python,
        ['-c', PROBE],
        { timeout: 30_000, env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' } },
        (error, stdout, stderr) =>
          resolve(
            error
              ? { ok: false, message: (stderr.trim().split('\n').pop() ?? '') || error.message }
              : { ok: true, stdout },
          ),
      );
    },
  );
  if (outcome.ok) {
    const [distributed, pandas] = outcome.stdout.trim().split(/\s+/);
    return {
      ...base,
      status: 'pass',
      detail: `${python}: distributed ${distributed ?? '?'}, pandas ${pandas ?? '?'}`,
    };
  }
  return {
    ...base,
    status: 'warn',
    code: 'STEWARD_DASK_START_FAILED',
    detail: `${python} cannot import distributed and pandas: ${outcome.message}`,
    fix: 'apt-get install python3-distributed python3-pandas (needed only by python steps with dask:)',
  };
}

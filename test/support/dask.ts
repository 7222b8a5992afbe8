/** Shared by the Dask tests: whether Dask is installed, and the workflows both the one-agent and the cluster tests run. */
import { execFileSync } from 'node:child_process';

/** Debian's python3-distributed and python3-pandas, as the steps run them. */
export const hasDask = (() => {
  try {
    execFileSync('/usr/bin/python3', ['-c', 'import distributed, pandas'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

/** A step's `dask:` block. */
export interface DaskSpec {
  workers: number;
  threads?: number;
  memory?: string;
}

/** Holds its cluster while the test's gate file exists (at most a minute). */
export function holdWorkflow(dask: DaskSpec) {
  return {
    name: 'hold',
    params: { gate: { type: 'string', required: true } },
    steps: [
      {
        id: 'hold',
        dask,
        python: [
          'import os, time',
          'import steward_dask',
          'client = steward_dask.client()',
          'assert client.submit(lambda x: x + 1, 1).result() == 2',
          'deadline = time.time() + 60',
          'while os.path.exists(os.environ["gate"]) and time.time() < deadline:',
          '    time.sleep(0.1)',
        ].join('\n'),
      },
    ],
  };
}

/**
 * Tries another job's scheduler (`target`) with this job's certificate and without TLS, then its own; writes
 * what each attempt gave to report.json.
 */
export function intrudeWorkflow(dask: DaskSpec) {
  return {
    name: 'intrude',
    params: { target: { type: 'string', required: true } },
    steps: [
      {
        id: 'intrude',
        dask,
        python: [
          'import json, os',
          'from distributed import Client',
          'import steward_dask',
          'target = os.environ["target"]',
          'report = {}',
          'def attempt(name, address, **kwargs):',
          '    try:',
          '        Client(address, timeout=8, **kwargs).close()',
          '        report[name] = "connected"',
          '    except Exception as error:',
          '        report[name] = "refused: " + type(error).__name__ + ": " + str(error)',
          'attempt("other_job_certificate", target, security=steward_dask.security())',
          'attempt("no_tls", target.replace("tls://", "tcp://"))',
          'attempt("own_cluster", steward_dask.scheduler_address(), security=steward_dask.security())',
          'json.dump(report, open(os.path.join(os.environ["STEWARD_OUTPUT_DIR"], "report.json"), "w"))',
        ].join('\n'),
      },
    ],
    outputs: ['intrude'],
  };
}

/** Long tasks (`seconds` in all); the output `started` tells the test that the computation is under way. */
export function slowWorkflow(dask: DaskSpec) {
  return {
    name: 'slow',
    params: { seconds: { type: 'number', default: 60 } },
    steps: [
      {
        id: 'slow',
        dask,
        python: [
          'import os, time',
          'import steward_dask',
          'client = steward_dask.client()',
          'seconds = float(os.environ["seconds"])',
          'def work(i):',
          '    time.sleep(seconds / 12)',
          '    return i * i',
          'futures = client.map(work, range(24))',
          'open(os.path.join(os.environ["STEWARD_OUTPUT_DIR"], "started"), "w").close()',
          'total = sum(client.gather(futures))',
          'assert total == sum(i * i for i in range(24)), total',
          'open(os.path.join(os.environ["STEWARD_OUTPUT_DIR"], "total.txt"), "w").write(str(total))',
        ].join('\n'),
      },
    ],
    outputs: ['slow'],
  };
}

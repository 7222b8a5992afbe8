/**
 * Places a job's input files (`file` params) in its job directory: `<job dir>/.inputs/<param>/<name>`,
 * directories 0700 and files 0600 (the executor runs as the job's user with umask 077, so only that user
 * reads them). Nothing the server sends is trusted to be a safe path: the param must be a declared `file`
 * param, and the name is made one plain segment again here (`safeFileName`). The step sees the param's value
 * as the file's absolute path.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Workflow } from '../engine/index.js';
import { safeFileName, StewardError, type ParamValue } from '../protocol/index.js';
import type { JobWorkflow, ServerClient } from './server-client.js';

export async function placeInputs(
  client: Pick<ServerClient, 'downloadInput'>,
  workflow: Workflow,
  fetched: Pick<JobWorkflow, 'params' | 'inputs'>,
  workDir: string,
): Promise<Record<string, ParamValue>> {
  const params = { ...fetched.params };
  const fileParams = new Set(workflow.params.filter((spec) => spec.type === 'file').map((spec) => spec.name));
  for (const input of fetched.inputs) {
    if (!fileParams.has(input.param))
      throw new StewardError(
        'STEWARD_INTERNAL',
        `the server sent an input for ${JSON.stringify(input.param)}, which is not a file param`,
      );
    const dir = path.join(workDir, '.inputs', input.param);
    const target = path.join(dir, safeFileName(input.name));
    if (path.dirname(target) !== dir)
      throw new StewardError('STEWARD_INTERNAL', `input ${input.param} has an unusable name`);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await client.downloadInput(input.param, target, { size: input.size, sha256: input.sha256 });
    params[input.param] = target;
  }
  // A file param the server gave no file for has no value in the run (an optional param left out).
  for (const name of fileParams)
    if (!fetched.inputs.some((input) => input.param === name)) delete params[name];
  return params;
}

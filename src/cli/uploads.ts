/**
 * `steward run -p data=@./local.csv`: a param value starting with `@` names a local file, which is uploaded
 * (`POST /api/uploads`) before the submission; the submission then carries the upload's id. `@@text` is the
 * literal value `@text`.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { UploadInfo } from '../protocol/index.js';
import type { ApiClient } from './client.js';
import { CliError } from './failures.js';

export async function uploadFileParams(
  client: ApiClient,
  params: Record<string, string>,
  note: (line: string) => void = () => {},
): Promise<Record<string, string>> {
  const resolved: Record<string, string> = {};
  for (const [name, value] of Object.entries(params)) {
    if (value.startsWith('@@')) resolved[name] = value.slice(1);
    else if (value.startsWith('@'))
      resolved[name] = (await uploadFile(client, name, value.slice(1), note)).id;
    else resolved[name] = value;
  }
  return resolved;
}

async function uploadFile(
  client: ApiClient,
  param: string,
  file: string,
  note: (line: string) => void,
): Promise<UploadInfo> {
  const info = await stat(file).catch((error: NodeJS.ErrnoException) => {
    throw new CliError(
      'STEWARD_BAD_REQUEST',
      `-p ${param}=@${file}: cannot read the file (${error.code ?? error.message})`,
    );
  });
  if (!info.isFile()) throw new CliError('STEWARD_BAD_REQUEST', `-p ${param}=@${file}: not a regular file`);
  const upload = await client.call('createUpload', {
    query: { name: path.basename(file) },
    rawBody: { open: () => createReadStream(file), length: info.size },
  });
  note(`uploaded ${file} for ${param} (${upload.size} bytes, sha256 ${upload.sha256.slice(0, 12)}…)`);
  return upload;
}

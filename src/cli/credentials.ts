/**
 * Stored logins: `$XDG_CONFIG_HOME/steward/credentials.json` (default `~/.config/steward`), keyed by server URL,
 * with the `current` server used when none is named. The file holds bearer tokens, so the directory is 0700
 * and the file 0600 — created with those modes, re-chmodded when they already exist, and replaced atomically
 * (write a temp file in the same directory, then rename) so a crash never leaves half a file.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { CliError, UsageError } from './failures.js';

const StoredLogin = z.object({ server: z.string(), user: z.string(), token: z.string() });
export type StoredLogin = z.infer<typeof StoredLogin>;
const CredentialsFile = z.object({
  current: z.string().nullable().default(null),
  servers: z.record(z.string(), StoredLogin).default({}),
});
export type CredentialsFile = z.infer<typeof CredentialsFile>;

export function credentialsDir(env: NodeJS.ProcessEnv = process.env): string {
  const base =
    env.XDG_CONFIG_HOME && path.isAbsolute(env.XDG_CONFIG_HOME)
      ? env.XDG_CONFIG_HOME
      : path.join(os.homedir(), '.config');
  return path.join(base, 'steward');
}

export function credentialsPath(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(credentialsDir(env), 'credentials.json');
}

/** `http://host:8080/` and `http://host:8080` are the same server. */
export function normaliseServerUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(
      `invalid server URL ${JSON.stringify(text)}: expected something like http://127.0.0.1:8080`,
    );
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`invalid server URL ${JSON.stringify(text)}: expected http:// or https://`);
  }
  if (url.search || url.hash || url.username || url.password) {
    throw new UsageError(
      `invalid server URL ${JSON.stringify(text)}: no credentials, query or fragment allowed`,
    );
  }
  return url.toString().replace(/\/+$/, '');
}

export async function readCredentials(env: NodeJS.ProcessEnv = process.env): Promise<CredentialsFile> {
  const file = credentialsPath(env);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { current: null, servers: {} };
    throw new CliError('STEWARD_CONFIG_INVALID', `cannot read ${file}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new CliError(
      'STEWARD_CONFIG_INVALID',
      `${file} is not valid JSON; delete it and run \`steward login\` again`,
      { cause: error },
    );
  }
  const result = CredentialsFile.safeParse(parsed);
  if (!result.success) {
    throw new CliError(
      'STEWARD_CONFIG_INVALID',
      `${file} has an unexpected shape; delete it and run \`steward login\` again`,
      { cause: result.error },
    );
  }
  return result.data;
}

export async function writeCredentials(
  credentials: CredentialsFile,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string> {
  const dir = credentialsDir(env);
  await fs.mkdir(path.dirname(dir), { recursive: true });
  try {
    await fs.mkdir(dir, { mode: 0o700 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  // mkdir's mode is filtered by the umask and an existing directory keeps its old mode: set it explicitly.
  await fs.chmod(dir, 0o700);
  const file = path.join(dir, 'credentials.json');
  const temp = path.join(dir, `.credentials.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await fs.open(temp, 'wx', 0o600);
  try {
    await handle.chmod(0o600);
    await handle.writeFile(`${JSON.stringify(credentials, null, 2)}\n`, 'utf8');
    await handle.sync();
  } catch (error) {
    await handle.close();
    await fs.rm(temp, { force: true });
    throw error;
  }
  await handle.close();
  await fs.rename(temp, file);
  return file;
}

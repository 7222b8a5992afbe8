/** Where the server keeps its records: embedded SQLite or PostgreSQL. */
import { statSync } from 'node:fs';
import { z } from 'zod';
import { StewardError } from '../protocol/index.js';
import { readSecretFile } from './read.js';

export const StoreConfig = z.discriminatedUnion('kind', [
  z
    .object({ kind: z.literal('sqlite'), /** Default `<dataDir>/steward.db`. */ path: z.string().optional() })
    .strict(),
  z
    .object({
      kind: z.literal('postgres'),
      url: z.string().min(1),
      /**
       * A file holding the role's password (one line; mode 0600 or stricter, owned by the server's user),
       * so the URL need not carry it. Read once at start; never logged. Default: the URL's password, if any.
       */
      passwordFile: z.string().min(1).optional(),
      schema: z
        .string()
        .regex(/^[a-z_][a-z0-9_]*$/)
        .optional(),
    })
    .strict(),
]);
export type StoreConfig = z.infer<typeof StoreConfig>;

/** The store settings the server runs with: a PostgreSQL password file already read. */
export type CompiledStoreConfig =
  | { kind: 'sqlite'; path?: string | undefined }
  | { kind: 'postgres'; url: string; schema?: string | undefined; password?: string | undefined };

/**
 * Reads `passwordFile` once. A password file others can read is refused: the password is the whole
 * database's (every user's token hashes and jobs), and a loose mode is usually a mistake worth stopping for.
 */
export function compileStoreConfig(store: StoreConfig, what: string): CompiledStoreConfig {
  if (store.kind === 'sqlite' || store.passwordFile === undefined) {
    if (store.kind === 'sqlite') return store;
    return { kind: 'postgres', url: store.url, schema: store.schema };
  }
  const file = store.passwordFile;
  let mode: number;
  try {
    mode = statSync(file).mode;
  } catch (error) {
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      `${what}.store.passwordFile: cannot read ${file}: ${(error as Error).message}`,
    );
  }
  if ((mode & 0o077) !== 0)
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      `${what}.store.passwordFile: ${file} has mode ${(mode & 0o777).toString(8).padStart(4, '0')}; it must be readable by its owner only (chmod 600 ${file})`,
    );
  const password = readSecretFile(file, `${what}.store.passwordFile`).replace(/\r?\n$/, '');
  if (password.length === 0 || password.includes('\n'))
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      `${what}.store.passwordFile: ${file} must hold the password on one line`,
    );
  return { kind: 'postgres', url: store.url, schema: store.schema, password };
}

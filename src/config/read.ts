/**
 * Reading configuration input: config files (YAML or JSON), secret files a config names, and the one
 * parse-or-throw every section's compile step starts with.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { StewardError } from '../protocol/index.js';

export function readSecretFile(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      `${what}: cannot read ${file}: ${(error as Error).message}`,
    );
  }
}

/** Reads a YAML or JSON config file; `{}` when `file` is undefined. */
export function readConfigFile(file: string | undefined): unknown {
  if (!file) return {};
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      `cannot read config file ${file}: ${(error as Error).message}`,
    );
  }
  try {
    return parseYaml(text) ?? {};
  } catch (error) {
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      `config file ${file} is not valid YAML/JSON: ${(error as Error).message}`,
    );
  }
}

export function parseOrThrow<T extends z.ZodType>(schema: T, input: unknown, what: string): z.output<T> {
  const result = schema.safeParse(input ?? {});
  if (result.success) return result.data;
  const first = result.error.issues
    .map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`)
    .join('; ');
  throw new StewardError('STEWARD_CONFIG_INVALID', `${what}: ${first}`);
}

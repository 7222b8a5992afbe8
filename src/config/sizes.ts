/** Byte sizes as people write them in config (`512MiB`, `4GiB`). */
import { z } from 'zod';
import { StewardError } from '../protocol/index.js';

const BYTE_SIZE = /^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$/;
const BYTE_UNITS: Record<string, number> = {
  B: 1,
  KB: 1e3,
  MB: 1e6,
  GB: 1e9,
  TB: 1e12,
  KiB: 1024,
  MiB: 1024 ** 2,
  GiB: 1024 ** 3,
  TiB: 1024 ** 4,
};
/** A size like `512MiB`, `4GiB`, `1.5GB`. */
export const ByteSize = z.string().regex(BYTE_SIZE, 'expected a size like 512MiB or 4GiB');

/** Bytes in a size string (validated by ByteSize). */
export function parseByteSize(text: string): number {
  const match = BYTE_SIZE.exec(text.trim());
  if (!match) throw new StewardError('STEWARD_CONFIG_INVALID', `expected a size like 512MiB, got ${text}`);
  return Math.floor(Number(match[1]) * BYTE_UNITS[match[2]!]!);
}

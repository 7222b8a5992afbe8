/**
 * Result names, one rule for every stage: the engine checks a write step's file name when the workflow is
 * pushed and every output file's name before the job's uploads start, the executor's upload URL carries it,
 * the server accepts it at upload and download (its route limit fits the longest name percent-encoded), and
 * the CLI writes it as one file name. A result name is a file name, so its limit is the file systems' one.
 */

/** Longest result name in UTF-8 bytes: one file name on ext4, xfs, btrfs (255). */
export const MAX_RESULT_NAME_BYTES = 255;

/**
 * Longest URL path parameter the server accepts: a name of `MAX_RESULT_NAME_BYTES` percent-encoded is up to
 * three characters a byte, plus room for a table's `.parquet`.
 */
export const MAX_URL_PARAM_LENGTH = 3 * MAX_RESULT_NAME_BYTES + 64;

const encoder = new TextEncoder();

/**
 * Why `name` cannot be a result (or step log) name, or undefined when it can: one plain path segment, at
 * most 255 bytes, not hidden, no "/", "\", NUL.
 */
export function plainNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'is empty';
  const bytes = encoder.encode(name).length;
  if (bytes > MAX_RESULT_NAME_BYTES) return `is ${bytes} bytes long (at most ${MAX_RESULT_NAME_BYTES})`;
  if (name.includes('/') || name.includes('\\') || name.includes('\0')) return 'contains "/", "\\" or NUL';
  if (name.startsWith('.')) return 'starts with "." (hidden files are not published)';
  return undefined;
}

/** Longest name kept for an uploaded file, in UTF-8 bytes (room for a prefix within one file name). */
export const MAX_UPLOAD_NAME_BYTES = 200;

/**
 * The name an uploaded file is stored and placed under, from whatever name the client sent: its last path
 * segment (either separator), control and format characters and NUL replaced by "_", no leading dots or
 * spaces, at most MAX_UPLOAD_NAME_BYTES (whole characters). Always one plain, visible segment: a hostile
 * name (`../../etc/passwd`, `a\nb`) can neither leave a directory nor break a line of a log or a header.
 * The server applies it at upload and the executor again before writing (it trusts no name).
 */
export function safeFileName(raw: string): string {
  let name = raw
    .replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '_')
    .replace(/\\/g, '/');
  name = name.slice(name.lastIndexOf('/') + 1);
  name = name
    .replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\uFFFD]/gu, '_')
    .replace(/^[.\s]+/u, '')
    .replace(/\s+$/u, '');
  let bytes = encoder.encode(name);
  if (bytes.length > MAX_UPLOAD_NAME_BYTES) {
    let end = MAX_UPLOAD_NAME_BYTES;
    while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
    name = new TextDecoder().decode(bytes.subarray(0, end));
    bytes = encoder.encode(name);
  }
  return name === '' ? 'upload' : name;
}

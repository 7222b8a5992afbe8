/** Names of results, steps and files as path segments on disk, and as download names in a response header. */
import { MAX_RESULT_NAME_BYTES, StewardError, plainNameProblem } from '../protocol/index.js';

/** A result, step or file name that is safe as one path segment (the rule is `plainNameProblem`'s). */
export function checkSegmentName(name: string, what: string): void {
  const problem = plainNameProblem(name);
  if (problem !== undefined) {
    throw new StewardError(
      'STEWARD_BAD_REQUEST',
      `${what}: ${JSON.stringify(name)} ${problem}; it must be a plain name (no "/", no "..", not starting with ".", at most ${MAX_RESULT_NAME_BYTES} bytes)`,
      {
        details: { issues: [{ field: what, rule: 'plain_name', message: problem, value: name }] },
      },
    );
  }
}

/**
 * `Content-Disposition` for a download of any UTF-8 name (RFC 6266): `filename*` carries it exactly
 * (RFC 8187 encoding), `filename` an ASCII stand-in for old clients. A raw non-Latin-1 name is not a legal
 * header value at all (Node refuses it).
 */
export function contentDisposition(name: string): string {
  // encodeURIComponent throws on a lone surrogate: replace those as String#toWellFormed does (ES2024).
  const wellFormed = name.replace(
    /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g,
    '\uFFFD',
  );
  const fallback = wellFormed.replace(/[^\x20-\x7e]|["\\%]/g, '_');
  const encoded = encodeURIComponent(wellFormed).replace(
    /['()*]/g,
    (char) => `%${char.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  return `attachment; filename="${fallback}"; filename*=UTF-8''${encoded}`;
}

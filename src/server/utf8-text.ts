/** Cutting text to a byte budget without splitting a UTF-8 character (previews and log listings). */

/** The text of a value cut to `maxBytes` of UTF-8 (whole characters), and whether it was cut. */
export function cutText(text: string, maxBytes: number): [string, boolean] {
  // At most 3 bytes per UTF-16 unit: shorter texts need no encoding to know they fit.
  if (text.length * 3 <= maxBytes) return [text, false];
  const bytes = Buffer.from(text);
  if (bytes.length <= maxBytes) return [text, false];
  return [bytes.toString('utf8', 0, utf8Boundary(bytes, maxBytes)), true];
}

/** The largest length <= `length` that does not end inside a UTF-8 character of `bytes`. */
export function utf8Boundary(bytes: Buffer, length: number): number {
  let end = Math.min(length, bytes.length);
  if (end === bytes.length) return end;
  // bytes[end] is the first byte left out: if it continues a character, that character goes too.
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return end;
}

/** Bytes of a string's JSON form, quotes left out. */
export function jsonTextBytes(text: string): number {
  return Buffer.byteLength(JSON.stringify(text)) - 2;
}

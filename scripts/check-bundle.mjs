// Measures the portal's first load: the JavaScript that dist/web/index.html loads (its module scripts and
// module preloads, not the chunks loaded later on demand), gzip-compressed as a server would send it.
// Prints the figure and fails when it is over the budget (250 KB gzip, issue 13).
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const BUDGET = 250 * 1024;
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'web');
const html = await readFile(path.join(root, 'index.html'), 'utf8');
const scripts = [
  ...html.matchAll(/<script[^>]*\bsrc="([^"]+)"/g),
  ...html.matchAll(/<link[^>]*rel="modulepreload"[^>]*href="([^"]+)"/g),
].map((match) => match[1]);
if (/<script(?![^>]*\bsrc=)[^>]*>/.test(html) || /<style/.test(html) || /\sstyle=/.test(html)) {
  console.error('portal bundle: index.html has an inline script or style, which the CSP forbids');
  process.exit(1);
}
let raw = 0;
let gzip = 0;
for (const src of new Set(scripts)) {
  const body = await readFile(path.join(root, src.replace(/^\//, '')));
  raw += body.length;
  gzip += gzipSync(body, { level: 9 }).length;
}
const kb = (bytes) => `${(bytes / 1024).toFixed(1)} KB`;
console.log(
  `portal first-load JavaScript: ${kb(gzip)} gzip (${kb(raw)} raw, ${scripts.length} file(s)); budget ${kb(BUDGET)} gzip`,
);
if (gzip > BUDGET) {
  console.error('portal bundle: over the first-load budget');
  process.exit(1);
}

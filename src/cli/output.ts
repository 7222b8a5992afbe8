/** Human output: aligned tables, local times, short durations. Machine output is `--json`, never these. */

/**
 * Terminal escape sequences, removed whole: CSI (`ESC [ … final`), OSC (`ESC ] … BEL|ST`, e.g. window titles
 * and hyperlinks), DCS/SOS/PM/APC strings, and two-character escapes. An unterminated string runs to the end.
 */
const ESCAPE_SEQUENCES =
  // eslint-disable-next-line no-control-regex
  /\x1b(?:\[[0-?]*[ -/]*[@-~]?|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[PX^_][^\x1b]*(?:\x1b\\)?|[ -/]*[0-~]?)|\x9b[0-?]*[ -/]*[@-~]?|\x9d[^\x07\x1b\x9c]*(?:\x07|\x9c)?/g;
/** C0 controls but tab and newline, DEL, C1 controls: whatever is left once sequences are gone. */
// eslint-disable-next-line no-control-regex
const CONTROLS = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/g;

/**
 * `text` without terminal control: every string the server provides (names, messages, descriptions) is
 * written by some user, and an escape sequence in it could rewrite the screen, set the window title, plant
 * a hyperlink or (on some terminals) answer back as keyboard input. Tab and newline stay unless
 * `keepLines` is false.
 */
export function stripControl(text: string, keepLines = true): string {
  const cleaned = text.replace(ESCAPE_SEQUENCES, '').replace(CONTROLS, '');
  return keepLines ? cleaned : cleaned.replace(/[\t\n]/g, ' ');
}

export type Cell = string | number | null | undefined;

/** Columns separated by two spaces; the last column is not padded so lines carry no trailing blanks. */
export function formatTable(headers: readonly string[], rows: readonly (readonly Cell[])[]): string {
  const text = [headers.map((header) => header.toUpperCase()), ...rows.map((row) => row.map(cellText))];
  const widths = headers.map((_, column) => Math.max(...text.map((row) => (row[column] ?? '').length)));
  return text
    .map((row) =>
      row
        .map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column] ?? 0)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')
    .concat('\n');
}

function cellText(cell: Cell): string {
  if (cell === null || cell === undefined || cell === '') return '-';
  return stripControl(String(cell).replace(/[\r\n\t]+/g, ' '));
}

/** `2026-11-22 14:03:09` in the local time zone; `-` for null. */
export function formatTime(iso: string | null | undefined): string {
  if (!iso) return '-';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const two = (value: number): string => String(value).padStart(2, '0');
  return `${date.getFullYear()}-${two(date.getMonth() + 1)}-${two(date.getDate())} ${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`;
}

/**
 * An elapsed time for people to read, rounded to what matters at its size: `850ms`, `12.3s`, `4m05s`,
 * `2h03m`, `3d04h` (columns line up). Not parseable as a duration setting: for an exact value that
 * `parseDuration` reads back, see `formatExactDuration` in protocol.
 */
export function formatElapsed(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms) || ms < 0) return '-';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const seconds = Math.floor(ms / 1000);
  const two = (value: number): string => String(value).padStart(2, '0');
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${two(seconds % 60)}s`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)}h${two(Math.floor(seconds / 60) % 60)}m`;
  return `${Math.floor(seconds / 86_400)}d${two(Math.floor(seconds / 3600) % 24)}h`;
}

/** Duration between two ISO times; a running span (no end) counts up to now. */
export function spanMs(
  start: string | null | undefined,
  end: string | null | undefined,
  now = Date.now(),
): number | null {
  if (!start) return null;
  const from = Date.parse(start);
  const to = end ? Date.parse(end) : now;
  if (Number.isNaN(from) || Number.isNaN(to)) return null;
  return Math.max(0, to - from);
}

export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export function formatCount(value: number | null | undefined): string {
  return value === null || value === undefined ? '-' : value.toLocaleString('en-US');
}

/**
 * Stable machine output: two-space indented JSON and a newline. JSON.stringify escapes C0 controls; DEL and
 * C1 controls are escaped too (`\u009b` is a CSI on some terminals), so the document reaches a terminal
 * inert and parses to the same values.
 */
export function formatJson(value: unknown): string {
  return `${JSON.stringify(value, null, 2).replace(
    /[\x7f-\x9f]/g,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`,
  )}\n`;
}

/** Terminal control never leaves the CLI through its human output; --json keeps values exact but inert. */
import { describe, expect, it } from 'vitest';
import { formatJson, formatTable, stripControl } from '../../src/cli/output.js';

describe('stripping terminal control from server-provided text', () => {
  it.each([
    ['a colour (CSI)', 'x\x1b[1;31mred\x1b[0my', 'xredy'],
    ['a window title (OSC ended by BEL)', 'x\x1b]0;owned\x07y', 'xy'],
    ['a hyperlink (OSC ended by ST)', '\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\', 'link'],
    ['a screen clear as an 8-bit CSI', 'x\x9b2Jy', 'xy'],
    ['a device status request that makes terminals answer', 'x\x1b[6ny', 'xy'],
    ['an unterminated OSC', 'x\x1b]0;no end', 'x'],
    ['a two-character escape (RIS)', 'x\x1bcy', 'xy'],
    ['carriage return, backspace, BEL, DEL and C1', 'a\rb\bc\x07d\x7fe\x85f', 'abcdef'],
  ])('removes %s', (_what, input, expected) => {
    expect(stripControl(input)).toBe(expected);
  });

  it('keeps tab, newline and any other text, and folds lines when asked', () => {
    expect(stripControl('é🙂\tcol\nnext')).toBe('é🙂\tcol\nnext');
    expect(stripControl('a\tb\nc', false)).toBe('a b c');
  });

  it('strips table cells and measures columns without the escapes', () => {
    const table = formatTable(
      ['name', 'size'],
      [
        ['\x1b[31mred\x1b[0m', 1],
        ['plain', 2],
      ],
    );
    expect(table).toBe('NAME   SIZE\nred    1\nplain  2\n');
  });

  it('escapes DEL and C1 in JSON output, which still parses to the same values', () => {
    const value = { name: 'a\x1b[31m\x7f\x9bz' };
    const text = formatJson(value);
    // eslint-disable-next-line no-control-regex
    expect(text).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f-\x9f]/);
    expect(JSON.parse(text)).toEqual(value);
  });
});

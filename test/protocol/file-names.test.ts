import { describe, expect, it } from 'vitest';
import { plainNameProblem, safeFileName } from '../../src/protocol/index.js';

describe('safeFileName', () => {
  it('keeps one plain, visible segment of any name a client sends', () => {
    const cases: [string, string][] = [
      ['sales.csv', 'sales.csv'],
      ['../../etc/passwd', 'passwd'],
      ['C:\\Users\\me\\..\\data.csv', 'data.csv'],
      ['a\nb\r\u0007c.txt', 'a_b__c.txt'],
      ['\u202Egnp.exe', '_gnp.exe'],
      ['..', 'upload'],
      ['', 'upload'],
      ['dir/', 'upload'],
      ['...hidden', 'hidden'],
      ['  spaced  ', 'spaced'],
      ['bad\uD800half', 'bad_half'],
      ['x'.repeat(300), 'x'.repeat(200)],
      ['é'.repeat(150), 'é'.repeat(100)],
    ];
    for (const [raw, expected] of cases) {
      const name = safeFileName(raw);
      expect(name, JSON.stringify(raw)).toBe(expected);
      expect(plainNameProblem(name), JSON.stringify(raw)).toBeUndefined();
    }
  });
});

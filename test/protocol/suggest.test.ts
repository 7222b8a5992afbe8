import { describe, expect, it } from 'vitest';
import { closestNames, didYouMean, editDistance } from '../../src/protocol/index.js';

describe('did you mean', () => {
  it('measures edit distance', () => {
    expect(editDistance('kitten', 'sitting')).toBe(3);
    expect(editDistance('', 'abc')).toBe(3);
    expect(editDistance('same', 'same')).toBe(0);
  });

  it('suggests close names best first, and nothing for a name far from all', () => {
    const names = ['sales-report', 'sales-export', 'inventory', 'payroll'];
    expect(closestNames('sales-reprot', names)).toEqual(['sales-report']);
    expect(closestNames('Inventory', names)).toEqual(['inventory']);
    expect(closestNames('payrol', names)).toEqual(['payroll']);
    expect(closestNames('sales', names)).toEqual(['sales-export', 'sales-report']);
    expect(closestNames('weather', names)).toEqual([]);
    expect(didYouMean('sqll', ['read', 'sql', 'write'])).toBe(' (did you mean "sql"?)');
    expect(didYouMean('zzz', ['read', 'sql'])).toBe('');
  });
});

import { describe, expect, it } from 'vitest';
import { newId } from '../../src/server/secrets.js';

describe('newId', () => {
  it('never starts with a dash or underscore, so an id passes as a command-line argument', () => {
    // base64url starts 1 id in 32 with `-` or `_`: 20,000 ids would hold hundreds of them.
    const ids = Array.from({ length: 20_000 }, () => newId());
    expect(ids.filter((id) => !/^[A-Za-z0-9]/.test(id))).toEqual([]);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.every((id) => /^[A-Za-z0-9_-]{12}$/.test(id))).toBe(true);
  });
});

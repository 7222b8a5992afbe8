import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { errorCatalogue } from '../../src/protocol/index.js';

describe('error catalogue', () => {
  it('documents every error code with its HTTP status in docs/errors.md', async () => {
    const doc = await readFile(new URL('../../docs/errors.md', import.meta.url), 'utf8');
    for (const [code, { status }] of Object.entries(errorCatalogue)) {
      expect(doc, code).toMatch(new RegExp(`\\| \`${code}\` \\| ${status} \\|`));
    }
  });
});

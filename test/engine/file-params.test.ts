import { describe, expect, it } from 'vitest';
import { parseWorkflow, resolveParams } from '../../src/engine/index.js';
import { StewardError } from '../../src/protocol/index.js';

const source = (param: string) => `name: files
params:
  data:
${param}
steps:
  - id: show
    shell: cat "$data"
`;

describe('file params', () => {
  it('parses a file param with accept and maxSize, normalising extensions', async () => {
    const workflow = await parseWorkflow(
      source('    type: file\n    required: true\n    accept: [CSV, .tsv]\n    maxSize: 1000'),
    );
    expect(workflow.params).toEqual([
      { name: 'data', type: 'file', required: true, accept: ['.csv', '.tsv'], maxSize: 1000 },
    ]);
  });

  it('refuses a default for a file param, and accept or maxSize on other types', async () => {
    await expect(parseWorkflow(source('    type: file\n    default: x.csv'))).rejects.toThrow(
      /params\.data\.default: a file param cannot have a default/,
    );
    await expect(parseWorkflow(source('    type: string\n    accept: [.csv]'))).rejects.toThrow(
      /accept is only allowed for file params/,
    );
    await expect(parseWorkflow(source('    type: integer\n    maxSize: 5'))).rejects.toThrow(
      /maxSize is only allowed for file params/,
    );
  });

  it('takes an upload id as the value and names the param at fault in the error details', async () => {
    const workflow = await parseWorkflow(source('    type: file\n    required: true'));
    expect(resolveParams(workflow, { data: 'upl_abc' })).toEqual({ data: 'upl_abc' });
    for (const raw of [{}, { data: '' }, { data: 5 }] as Record<string, string | number>[]) {
      try {
        resolveParams(workflow, raw);
        expect.unreachable();
      } catch (error) {
        expect(error).toBeInstanceOf(StewardError);
        expect((error as StewardError).code).toBe('STEWARD_PARAMS_INVALID');
        expect((error as StewardError).details).toMatchObject({ param: 'data' });
      }
    }
  });
});

/**
 * The workflow file format (v1) as zod schemas: the shape only. Cross-field rules (references, cycles,
 * SQL analysis, param typing) live in validator.ts. Objects are strict: unknown keys are errors.
 */
import { z } from 'zod';
import { ClusterName, WorkflowName } from '../protocol/index.js';

export const STEP_ID = /^[a-z_][a-z0-9_]*$/;
export const stepKinds = ['read', 'sql', 'write', 'shell', 'python', 'command'] as const;
export const tableFormats = ['csv', 'tsv', 'parquet', 'json', 'ndjson'] as const;
export type TableFormat = (typeof tableFormats)[number];

const Scalar = z.union([z.string(), z.number(), z.boolean()]);
const OptionName = z.string().regex(/^[a-z_][a-z0-9_]*$/, 'expected a lowercase option name');
const Options = z.record(OptionName, Scalar);
const StepId = z
  .string()
  .max(64)
  .regex(STEP_ID, 'expected lowercase letters, digits and "_", not starting with a digit');
const Timeout = z.union([z.string(), z.number()]);

export const ParamDefinitionSchema = z
  .object({
    type: z.enum(['string', 'number', 'integer', 'boolean', 'date', 'enum', 'file']),
    required: z.boolean().optional(),
    default: Scalar.optional(),
    values: z.array(Scalar).optional(),
    description: z.string().max(2000).optional(),
    /** `file` params: accepted extensions (`csv` or `.csv`). */
    accept: z
      .array(
        z.string().regex(/^\.?[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/, 'expected a file name extension like .csv'),
      )
      .min(1)
      .max(50)
      .optional(),
    /** `file` params: largest accepted file in bytes. */
    maxSize: z.number().int().positive().optional(),
  })
  .strict();

export const WorkflowFileSchema = z
  .object({
    version: z.literal(1).optional(),
    name: WorkflowName,
    description: z.string().max(10_000).optional(),
    params: z.record(z.string(), z.unknown()).optional(),
    assets: z.array(z.string().min(1).max(1024)).optional(),
    steps: z.array(z.unknown()).min(1, 'a workflow needs at least one step'),
    outputs: z.array(z.string()).optional(),
    /** The cluster the workflow's jobs run on unless the submit names one. Default: the server's default. */
    cluster: ClusterName.optional(),
  })
  .strict();

const common = { id: StepId, needs: z.array(z.string()).optional(), timeout: Timeout.optional() };
const scriptCommon = {
  env: z.record(z.string(), Scalar).optional(),
  inputs: z.array(z.string()).optional(),
  inputFormat: z.enum(['csv', 'parquet']).optional(),
};

/** Most workers and threads per worker one step may ask for. */
export const DASK_MAX_WORKERS = 64;
export const DASK_MAX_THREADS = 64;

/** A `python` step's `dask:` request (sizes are checked by the validator, like other sizes). */
const DaskSchema = z
  .object({
    workers: z.number().int().min(1).max(DASK_MAX_WORKERS),
    threads: z.number().int().min(1).max(DASK_MAX_THREADS).optional(),
    memory: z.string().optional(),
  })
  .strict();

export const stepSchemas = {
  read: z
    .object({
      ...common,
      read: z.union([
        z.string().min(1),
        z
          .object({
            path: z.string().min(1),
            format: z.enum(tableFormats).optional(),
            options: Options.optional(),
          })
          .strict(),
      ]),
    })
    .strict(),
  sql: z.object({ ...common, sql: z.string().min(1) }).strict(),
  write: z
    .object({
      ...common,
      write: z
        .object({
          table: z.string(),
          path: z.string().min(1),
          format: z.enum(tableFormats).optional(),
          options: Options.optional(),
        })
        .strict(),
    })
    .strict(),
  shell: z.object({ ...common, ...scriptCommon, shell: z.string().min(1) }).strict(),
  python: z
    .object({ ...common, ...scriptCommon, python: z.string().min(1), dask: DaskSchema.optional() })
    .strict(),
  command: z
    .object({
      ...common,
      ...scriptCommon,
      command: z.array(z.union([z.string(), z.number()])).min(1, 'expected a program and its arguments'),
    })
    .strict(),
} as const;

export type StepKindName = (typeof stepKinds)[number];

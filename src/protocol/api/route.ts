/** The shape of a route in the table, and the path-parameter schemas several areas share. */
import { z } from 'zod';

export const IdParams = z.object({ id: z.string().min(1).max(100) }).strict();
export const ResultParams = z
  .object({ id: z.string().min(1).max(100), name: z.string().min(1).max(255) })
  .strict();
export const LogParams = z
  .object({
    id: z.string().min(1).max(100),
    step: z.string().min(1).max(100),
    stream: z.enum(['stdout', 'stderr']),
  })
  .strict();
export const InputParams = z
  .object({ id: z.string().min(1).max(100), param: z.string().regex(/^[a-z_][a-z0-9_]{0,63}$/) })
  .strict();

export interface ApiRoute {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Fastify path syntax (`:id`). */
  path: string;
  summary: string;
  tag: string;
  /** `none` routes need no credentials; `job` routes take a job-scoped executor token. */
  auth: 'none' | 'user' | 'admin' | 'job';
  params?: z.ZodType;
  query?: z.ZodType;
  body?: z.ZodType;
  /** JSON response schema for the success status, or a media type for raw bodies. */
  response?: z.ZodType;
  responseMediaType?: string;
  status?: number;
}

/** Where the server keeps its records: embedded SQLite or PostgreSQL. */
import { z } from 'zod';

export const StoreConfig = z.discriminatedUnion('kind', [
  z
    .object({ kind: z.literal('sqlite'), /** Default `<dataDir>/steward.db`. */ path: z.string().optional() })
    .strict(),
  z
    .object({
      kind: z.literal('postgres'),
      url: z.string().min(1),
      schema: z
        .string()
        .regex(/^[a-z_][a-z0-9_]*$/)
        .optional(),
    })
    .strict(),
]);
export type StoreConfig = z.infer<typeof StoreConfig>;

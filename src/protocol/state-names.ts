/**
 * The job and step state names and which job states are final, with no dependency: the server's schemas
 * (`states.ts`) and the browser portal (`web/`) read the same lists.
 */
export const jobStates = [
  'queued',
  'offered',
  'loading',
  'running',
  'succeeded',
  'failed',
  'canceled',
  'expired',
  'lost',
] as const;
export type JobStateName = (typeof jobStates)[number];

export const terminalJobStates: ReadonlySet<JobStateName> = new Set([
  'succeeded',
  'failed',
  'canceled',
  'expired',
  'lost',
]);

export const stepStates = ['pending', 'running', 'succeeded', 'failed', 'canceled', 'skipped'] as const;

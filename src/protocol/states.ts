import { z } from 'zod';
import { jobStates, stepStates, terminalJobStates } from './state-names.js';

export { jobStates, stepStates, terminalJobStates } from './state-names.js';

export const JobState = z.enum(jobStates);
export type JobState = z.infer<typeof JobState>;

export function isTerminal(state: JobState): boolean {
  return terminalJobStates.has(state);
}

/**
 * Allowed job transitions, in one place. Events may arrive late or twice (at-least-once delivery), so
 * callers skip events whose target state is not reachable (`canTransition`) instead of failing.
 */
const transitions: Record<JobState, readonly JobState[]> = {
  queued: ['offered', 'canceled', 'failed', 'expired'],
  // An agent can report loading/running before the server recorded the offer as published.
  offered: ['loading', 'running', 'succeeded', 'failed', 'canceled', 'expired', 'queued'],
  loading: ['running', 'succeeded', 'failed', 'canceled', 'lost', 'offered', 'expired'],
  running: ['succeeded', 'failed', 'canceled', 'lost'],
  succeeded: [],
  failed: [],
  canceled: [],
  expired: [],
  lost: ['offered'],
};

/**
 * States from which a job may begin a new attempt (a retry): its current attempt is lost to the server
 * (agent silent, executor crashed) while the job itself has not ended. A retry is not an ordinary transition:
 * the attempt number changes with it, so `Store.retryJob` checks this instead of `canTransition`.
 */
const retryableStates: ReadonlySet<JobState> = new Set(['offered', 'loading', 'running', 'lost']);

export function canStartNewAttempt(from: JobState): boolean {
  return retryableStates.has(from);
}

export function canTransition(from: JobState, to: JobState): boolean {
  return transitions[from].includes(to);
}

export const StepState = z.enum(stepStates);
export type StepState = z.infer<typeof StepState>;

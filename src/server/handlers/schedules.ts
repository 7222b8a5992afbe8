/** Route handlers: schedules (create, list, show, pause, resume, delete). */
import type { ServerContext } from '../context.js';
import { scheduleView } from '../schedules/index.js';
import type { Handlers } from './types.js';

export function schedulesHandlers(ctx: ServerContext) {
  const { schedules } = ctx;
  return {
    createSchedule: async ({ principal, body, source }) =>
      scheduleView(await schedules.create(principal, body, source)),

    listSchedules: async ({ principal, query }) => ({
      schedules: (await schedules.list(principal, query.all === 'true')).map((schedule) =>
        scheduleView(schedule, query.runs),
      ),
    }),

    showSchedule: async ({ principal, params, query, source }) =>
      scheduleView(await schedules.require(principal, params.schedule, source), query.runs),

    pauseSchedule: async ({ principal, params, source }) =>
      scheduleView(await schedules.pause(principal, params.schedule, source)),

    resumeSchedule: async ({ principal, params, source }) =>
      scheduleView(await schedules.resume(principal, params.schedule, source)),

    deleteSchedule: async ({ principal, params, source }) => {
      await schedules.delete(principal, params.schedule, source);
    },
  } satisfies Partial<Handlers>;
}

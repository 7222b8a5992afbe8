/** Schedules: cron times (`cron.ts`), tick policies (`ticks.ts`), the firing loop (`scheduler.ts`), management. */
export { compileCron, type CronTimes } from './cron.js';
export { Scheduler, type FireCounts, type SchedulerOptions } from './scheduler.js';
export { ScheduleService, scheduleView, type NewScheduleInput } from './service.js';
export { planTick, type TickPlan } from './ticks.js';

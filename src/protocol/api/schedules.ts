/** Schedules: a workflow run with fixed params on a cron expression in a time zone, as its owner. */
import { z } from 'zod';
import { ErrorInfo, ParamValue } from '../messages.js';
import { JobLabels, WorkflowRef } from './common.js';
import type { ApiRoute } from './route.js';

export const ScheduleName = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[a-z0-9][a-z0-9_.-]*$/, 'expected lowercase letters, digits, "_", "." or "-"');
/** After downtime: fire the missed tick once (`catch-up`), or not at all (`skip`). */
export const MisfirePolicy = z.enum(['catch-up', 'skip']);
/** While a job of the schedule has not ended: skip the tick, hold it until the job ends, or fire anyway. */
export const OverlapPolicy = z.enum(['skip', 'queue', 'allow']);

export const CreateScheduleRequest = z
  .object({
    /** Unique among the owner's schedules. */
    name: ScheduleName,
    /** `[space/]name[@version]`; without a version, the latest version at each firing. */
    workflow: WorkflowRef,
    /** Fixed values, checked against the workflow's params now and at every firing. */
    params: z.record(z.string(), ParamValue).default({}),
    labels: JobLabels,
    /** Five fields (minute first) or six (seconds first), read by croner. */
    cron: z.string().min(1).max(200),
    /** The IANA time zone the expression is read in (daylight saving included). Default `UTC`. */
    timeZone: z.string().min(1).max(100).default('UTC'),
    misfire: MisfirePolicy.default('catch-up'),
    overlap: OverlapPolicy.default('skip'),
  })
  .strict();
export type CreateScheduleRequest = z.input<typeof CreateScheduleRequest>;

export const ScheduleInfo = z.object({
  id: z.string(),
  name: z.string(),
  owner: z.string(),
  workflow: z.string(),
  params: z.record(z.string(), ParamValue),
  labels: z.array(z.string()),
  cron: z.string(),
  timeZone: z.string(),
  misfire: MisfirePolicy,
  overlap: OverlapPolicy,
  paused: z.boolean(),
  /** Why it is paused (its owner paused it, or the owner was disabled); null while active. */
  pausedReason: z.string().nullable(),
  /** The next run times (ISO, UTC), soonest first; empty while paused. */
  nextRuns: z.array(z.string()),
  /** A tick held by the `queue` overlap policy until the running job ends. */
  queuedRun: z.string().nullable(),
  lastFiredAt: z.string().nullable(),
  lastJobId: z.string().nullable(),
  /** Why the last tick did not fire; null once a tick fires again. */
  lastError: ErrorInfo.nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type ScheduleInfo = z.infer<typeof ScheduleInfo>;

export const ListSchedulesQuery = z
  .object({
    /** Admins: every user's schedules (users always see only their own). */
    all: z.enum(['true', 'false']).optional(),
    /** How many next run times each schedule shows (default 3). */
    runs: z.coerce.number().int().min(1).max(20).default(3),
  })
  .strict();
export const ShowScheduleQuery = z
  .object({ runs: z.coerce.number().int().min(1).max(20).default(3) })
  .strict();
/** A schedule's id, or the name of one of the caller's schedules. */
const ScheduleParams = z.object({ schedule: z.string().min(1).max(100) }).strict();

/** Routes of this area, in the order the OpenAPI document lists them. */
export const scheduleRoutes = {
  createSchedule: {
    method: 'POST',
    path: '/api/schedules',
    summary: 'Create a schedule that runs a workflow as you on a cron expression',
    tag: 'schedules',
    auth: 'user',
    body: CreateScheduleRequest,
    response: ScheduleInfo,
    status: 201,
  },
  listSchedules: {
    method: 'GET',
    path: '/api/schedules',
    summary: 'Your schedules with their next run times (admins: all=true for every user)',
    tag: 'schedules',
    auth: 'user',
    query: ListSchedulesQuery,
    response: z.object({ schedules: z.array(ScheduleInfo) }),
  },
  showSchedule: {
    method: 'GET',
    path: '/api/schedules/:schedule',
    summary: 'A schedule (by id, or the name of one of yours) with its next run times',
    tag: 'schedules',
    auth: 'user',
    params: ScheduleParams,
    query: ShowScheduleQuery,
    response: ScheduleInfo,
  },
  pauseSchedule: {
    method: 'POST',
    path: '/api/schedules/:schedule/pause',
    summary: 'Pause a schedule: no tick fires until it is resumed',
    tag: 'schedules',
    auth: 'user',
    params: ScheduleParams,
    response: ScheduleInfo,
  },
  resumeSchedule: {
    method: 'POST',
    path: '/api/schedules/:schedule/resume',
    summary: 'Resume a paused schedule from the next tick after now',
    tag: 'schedules',
    auth: 'user',
    params: ScheduleParams,
    response: ScheduleInfo,
  },
  deleteSchedule: {
    method: 'DELETE',
    path: '/api/schedules/:schedule',
    summary: 'Delete a schedule (the jobs it fired stay)',
    tag: 'schedules',
    auth: 'user',
    params: ScheduleParams,
    status: 204,
  },
} as const satisfies Record<string, ApiRoute>;

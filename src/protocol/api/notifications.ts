/** Notification rules (who is told what on job end, where) and their deliveries. */
import { z } from 'zod';
import { NotifyWhen } from '../notifications.js';
import { type ApiRoute, IdParams } from './route.js';

/** `value` as a URL, or null (`URL.parse` is Node 22 only). */
function parseUrl(value: string): URL | null {
  try {
    return new URL(value);
  } catch {
    return null;
  }
}

/** An http(s) URL without credentials in it (they would be shown in listings and logs). */
export const WebhookUrl = z
  .string()
  .max(2048)
  .refine((value) => parseUrl(value) !== null, 'expected an absolute URL like https://example.org/hook')
  .refine((value) => {
    const url = parseUrl(value);
    return url === null || url.protocol === 'https:' || url.protocol === 'http:';
  }, 'expected an http:// or https:// URL')
  .refine((value) => {
    const url = parseUrl(value);
    return url === null || (url.username === '' && url.password === '');
  }, 'no user name or password in the URL: the request is signed with the rule secret instead');

/** One plain address (`name@example.org`), no display name, no list. */
export const EmailAddress = z.email({ error: 'expected one email address like name@example.org' }).max(254);

/** A schedule's name as rules refer to it (the schedule's owner's). */
export const ScheduleRefName = z
  .string()
  .min(1)
  .max(100)
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'expected a schedule name: letters, digits, "_", "." or "-"');

/** A webhook secret given by the user: long enough to be one. */
const WebhookSecret = z
  .string()
  .min(16, 'a webhook secret needs at least 16 characters')
  .max(256)
  .refine((value) => !/\p{Cc}/u.test(value), 'no control characters');

export const NotificationChannelInput = z.discriminatedUnion('type', [
  z
    .object({
      type: z.literal('webhook'),
      url: WebhookUrl,
      /** The HMAC key; omitted: the server generates one and returns it once. */
      secret: WebhookSecret.optional(),
    })
    .strict(),
  z.object({ type: z.literal('email'), address: EmailAddress }).strict(),
]);

export const CreateNotificationRuleRequest = z
  .object({
    when: NotifyWhen,
    /** Only jobs of this schedule of yours; omitted: your default for jobs without a rule of their schedule. */
    schedule: ScheduleRefName.optional(),
    channel: NotificationChannelInput,
  })
  .strict();
export type CreateNotificationRuleRequest = z.infer<typeof CreateNotificationRuleRequest>;

export const NotificationRule = z.object({
  id: z.string(),
  user: z.string(),
  when: NotifyWhen,
  schedule: z.string().nullable(),
  channel: z.enum(['webhook', 'email']),
  /** The webhook URL or the email address. Admins see another user's webhook URL cut to its origin. */
  target: z.string(),
  createdAt: z.string(),
});
export type NotificationRule = z.infer<typeof NotificationRule>;

export const CreateNotificationRuleResponse = NotificationRule.extend({
  /** The webhook's signing secret: returned only here, once (null for email rules). */
  secret: z.string().nullable(),
});

export const ListNotificationRulesQuery = z
  .object({
    /** Admins: every user's rules. */
    all: z.enum(['true', 'false']).default('false'),
  })
  .strict();

export const NotificationDelivery = z.object({
  id: z.string(),
  ruleId: z.string(),
  user: z.string(),
  jobId: z.string(),
  jobState: z.string(),
  channel: z.enum(['webhook', 'email']),
  /** `pending` (waiting or being sent), `delivered`, `failed` (given up) or `dropped` (no longer wanted). */
  state: z.enum(['pending', 'delivered', 'failed', 'dropped']),
  attempts: z.number().int(),
  lastError: z.string().nullable(),
  nextAttemptAt: z.string().nullable(),
  createdAt: z.string(),
  deliveredAt: z.string().nullable(),
});
export type NotificationDelivery = z.infer<typeof NotificationDelivery>;

export const ListNotificationDeliveriesQuery = z
  .object({
    /** Admins: every user's deliveries. */
    all: z.enum(['true', 'false']).default('false'),
    limit: z.coerce.number().int().min(1).max(500).default(50),
  })
  .strict();

export const TestNotificationResponse = z.object({
  delivered: z.boolean(),
  /** What went wrong when not delivered (status, timeout, SMTP reply). */
  error: z.string().nullable(),
});

export const notificationRoutes = {
  createNotificationRule: {
    method: 'POST',
    path: '/api/notifications/rules',
    summary:
      'Add a notification rule for your jobs (a webhook or an email on failure, success or always); a generated webhook secret is returned once',
    tag: 'notifications',
    auth: 'user',
    body: CreateNotificationRuleRequest,
    response: CreateNotificationRuleResponse,
    status: 201,
  },
  listNotificationRules: {
    method: 'GET',
    path: '/api/notifications/rules',
    summary: "Your notification rules (without secrets); admins may ask for everyone's with `all=true`",
    tag: 'notifications',
    auth: 'user',
    query: ListNotificationRulesQuery,
    response: z.object({ rules: z.array(NotificationRule) }),
  },
  deleteNotificationRule: {
    method: 'DELETE',
    path: '/api/notifications/rules/:id',
    summary: "Remove one of your notification rules (admins: anyone's); its pending deliveries are dropped",
    tag: 'notifications',
    auth: 'user',
    params: IdParams,
    status: 204,
  },
  testNotificationRule: {
    method: 'POST',
    path: '/api/notifications/rules/:id/test',
    summary: 'Send a test message through one of your rules now (one attempt) and say whether it arrived',
    tag: 'notifications',
    auth: 'user',
    params: IdParams,
    response: TestNotificationResponse,
  },
  listNotificationDeliveries: {
    method: 'GET',
    path: '/api/notifications/deliveries',
    summary: "Recent deliveries of your rules, newest first; admins may ask for everyone's with `all=true`",
    tag: 'notifications',
    auth: 'user',
    query: ListNotificationDeliveriesQuery,
    response: z.object({ deliveries: z.array(NotificationDelivery) }),
  },
} as const satisfies Record<string, ApiRoute>;

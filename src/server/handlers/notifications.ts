/** Route handlers: notification rules and their deliveries. */
import type { ServerContext } from '../context.js';
import type { Handlers } from './types.js';

export function notificationsHandlers(ctx: ServerContext) {
  const { notifications } = ctx;

  return {
    createNotificationRule: async ({ principal, body, source }) =>
      notifications.create(principal, body, source),

    listNotificationRules: async ({ principal, query, source }) => ({
      rules: await notifications.list(principal, query.all === 'true', source),
    }),

    deleteNotificationRule: async ({ principal, params, source }) => {
      await notifications.remove(principal, params.id, source);
      return undefined;
    },

    testNotificationRule: async ({ principal, params }) => notifications.test(principal, params.id),

    listNotificationDeliveries: async ({ principal, query, source }) => ({
      deliveries: await notifications.deliveries(
        principal,
        { all: query.all === 'true', limit: query.limit },
        source,
      ),
    }),
  } satisfies Partial<Handlers>;
}

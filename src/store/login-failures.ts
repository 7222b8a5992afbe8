/**
 * The login throttle's memory (migration 0006): one row per failed login and key (a user, a source
 * address). What a count of failures allows is decided in the server (`server/throttle.ts`).
 */
import type { StoreContext } from './context.js';

export class LoginFailureStore {
  constructor(private readonly ctx: StoreContext) {}

  /**
   * Records one failed login under each of `keys` (one insert) and deletes every failure at or before
   * `forgetBefore`: the table holds only the failures of the current window.
   */
  async recordLoginFailure(keys: readonly string[], time: number, forgetBefore: number): Promise<void> {
    if (keys.length === 0) return;
    await this.ctx.db
      .insertInto('login_failures')
      .values(keys.map((key) => ({ key, time })))
      .execute();
    await this.ctx.db.deleteFrom('login_failures').where('time', '<=', forgetBefore).execute();
  }

  /**
   * For each `{ key, nth }`, the time of the key's `nth` most recent failure after `since`, or null when it
   * has fewer: the failure that must leave the window before the key is under a limit of `nth`. One query
   * for all keys.
   */
  async nthRecentLoginFailures(
    queries: readonly { key: string; nth: number }[],
    since: number,
  ): Promise<(number | null)[]> {
    if (queries.length === 0) return [];
    const row = (await this.ctx.db
      .selectNoFrom((eb) =>
        queries.map((query, index) =>
          eb
            .selectFrom('login_failures')
            .select('time')
            .where('key', '=', query.key)
            .where('time', '>', since)
            .orderBy('time', 'desc')
            .limit(1)
            .offset(query.nth - 1)
            .as(`t${index}`),
        ),
      )
      .executeTakeFirstOrThrow()) as Record<string, number | string | null>;
    return queries.map((_, index) => {
      const time = row[`t${index}`];
      return time === null || time === undefined ? null : Number(time);
    });
  }

  /** Forgets the failures recorded under `key` (a successful login clears its user's count). */
  async clearLoginFailures(key: string): Promise<void> {
    await this.ctx.db.deleteFrom('login_failures').where('key', '=', key).execute();
  }
}

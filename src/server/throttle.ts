/**
 * Login throttling: failed logins are counted per user name and per source address in a sliding window;
 * past the limit, further attempts are refused before any password is checked (so a throttled guess
 * reveals nothing). A successful login clears the user's count, not the address's.
 *
 * The counts live in the store (table `login_failures`), not in this process: several servers on one
 * PostgreSQL database throttle together, so an attacker gains nothing by spreading guesses over them. The
 * cost is one insert per failure (plus a delete of failures older than the window) and one query per check.
 * Two failures racing on two servers may both pass their check: the limit can be overshot by the number of
 * attempts in flight at once, never more.
 */
import type { CompiledLoginThrottle } from '../config/index.js';
import { StewardError } from '../protocol/index.js';
import type { Store } from '../store/index.js';

export class LoginThrottle {
  constructor(
    private readonly store: Store,
    private readonly config: CompiledLoginThrottle,
  ) {}

  /** Throws STEWARD_LOGIN_THROTTLED when either the user or the source is over its limit. */
  async check(user: string, source: string, now = Date.now()): Promise<void> {
    const [userOldest, sourceOldest] = await this.store.nthRecentLoginFailures(
      [
        { key: userKey(user), nth: this.config.maxFailuresPerUser },
        { key: sourceKey(source), nth: this.config.maxFailuresPerSource },
      ],
      now - this.config.windowMs,
    );
    // The oldest failure that keeps a count at its limit must leave the window first.
    const userWait = this.waitUntilGone(userOldest ?? null, now);
    const sourceWait = this.waitUntilGone(sourceOldest ?? null, now);
    const wait = Math.max(userWait, sourceWait);
    if (wait > 0) {
      const retryAfterSeconds = Math.ceil(wait / 1000);
      throw new StewardError(
        'STEWARD_LOGIN_THROTTLED',
        `too many failed logins ${userWait >= sourceWait ? 'for this user' : 'from this address'}; retry in ${retryAfterSeconds} s`,
        { details: { retryAfterSeconds } },
      );
    }
  }

  async recordFailure(user: string, source: string, now = Date.now()): Promise<void> {
    await this.store.recordLoginFailure([userKey(user), sourceKey(source)], now, now - this.config.windowMs);
  }

  async recordSuccess(user: string): Promise<void> {
    await this.store.clearLoginFailures(userKey(user));
  }

  private waitUntilGone(time: number | null, now: number): number {
    return time === null ? 0 : Math.max(0, time + this.config.windowMs - now);
  }
}

function userKey(user: string): string {
  return `u:${user.toLowerCase()}`;
}

function sourceKey(source: string): string {
  return `s:${source}`;
}

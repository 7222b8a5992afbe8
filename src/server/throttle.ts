/**
 * Login throttling: failed logins are counted in a sliding window per (user name, source address) pair, per
 * user name, and — only when configured — per source address. Past a limit, further attempts are refused
 * before any password is checked (so a throttled guess reveals nothing).
 *
 * The pair is the close bound. A burst of wrong passwords locks that name out of that address only: failures
 * on other accounts from the same address (a shared NAT, a proxy, a colleague mistyping) never lock out a
 * user with the right password, which a per-address bound did. The per-name bound catches guessing spread
 * over many addresses; since a pair stops counting at its own limit, one address adds at most that much to
 * it per window, so locking a user out of every address takes several addresses. A successful login clears
 * the name's count and that pair's, not the address's.
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

interface Bound {
  key: string;
  nth: number;
  what: string;
}

export class LoginThrottle {
  constructor(
    private readonly store: Store,
    private readonly config: CompiledLoginThrottle,
  ) {}

  /** Throws STEWARD_LOGIN_THROTTLED when the pair, the user or (if bounded) the source is over its limit. */
  async check(user: string, source: string, now = Date.now()): Promise<void> {
    const bounds: Bound[] = [
      {
        key: pairKey(user, source),
        nth: this.config.maxFailuresPerUserAndSource,
        what: 'for this user from this address',
      },
      { key: userKey(user), nth: this.config.maxFailuresPerUser, what: 'for this user' },
    ];
    if (this.config.maxFailuresPerSource !== undefined) {
      bounds.push({
        key: sourceKey(source),
        nth: this.config.maxFailuresPerSource,
        what: 'from this address',
      });
    }
    const oldest = await this.store.nthRecentLoginFailures(bounds, now - this.config.windowMs);
    // The oldest failure that keeps a count at its limit must leave the window first.
    let wait = 0;
    let reason = '';
    bounds.forEach((bound, index) => {
      const until = this.waitUntilGone(oldest[index] ?? null, now);
      if (until > wait) {
        wait = until;
        reason = bound.what;
      }
    });
    if (wait > 0) {
      const retryAfterSeconds = Math.ceil(wait / 1000);
      throw new StewardError(
        'STEWARD_LOGIN_THROTTLED',
        `too many failed logins ${reason}; retry in ${retryAfterSeconds} s`,
        { details: { retryAfterSeconds } },
      );
    }
  }

  async recordFailure(user: string, source: string, now = Date.now()): Promise<void> {
    const keys = [pairKey(user, source), userKey(user)];
    if (this.config.maxFailuresPerSource !== undefined) keys.push(sourceKey(source));
    await this.store.recordLoginFailure(keys, now, now - this.config.windowMs);
  }

  async recordSuccess(user: string, source: string): Promise<void> {
    await this.store.clearLoginFailures(userKey(user));
    await this.store.clearLoginFailures(pairKey(user, source));
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

/** Address first: it has no spaces, so the pair cannot collide with another (a name may contain anything). */
function pairKey(user: string, source: string): string {
  return `p:${source} ${user.toLowerCase()}`;
}

/**
 * Login throttling: failed logins are counted per user name and per source address in a sliding window;
 * past the limit, further attempts are refused before any password is checked (so a throttled guess
 * reveals nothing). A successful login clears the user's count, not the address's. The counts live in this
 * server process: each server of an HA pair throttles on its own.
 */
import type { CompiledLoginThrottle } from '../config/index.js';
import { StewardError } from '../protocol/index.js';

/** Bounds memory when many distinct names or addresses fail: the oldest keys are dropped first. */
const MAX_KEYS = 50_000;

export class LoginThrottle {
  private readonly failures = new Map<string, number[]>();

  constructor(private readonly config: CompiledLoginThrottle) {}

  /** Throws STEWARD_LOGIN_THROTTLED when either the user or the source is over its limit. */
  check(user: string, source: string, now = Date.now()): void {
    const userWait = this.waitFor(`u:${user.toLowerCase()}`, this.config.maxFailuresPerUser, now);
    const sourceWait = this.waitFor(`s:${source}`, this.config.maxFailuresPerSource, now);
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

  recordFailure(user: string, source: string, now = Date.now()): void {
    this.push(`u:${user.toLowerCase()}`, now);
    this.push(`s:${source}`, now);
  }

  recordSuccess(user: string): void {
    this.failures.delete(`u:${user.toLowerCase()}`);
  }

  /** Milliseconds until the key is under its limit again; 0 when it is already. */
  private waitFor(key: string, limit: number, now: number): number {
    const times = this.prune(key, now);
    if (times.length < limit) return 0;
    // The oldest failure that keeps the count at the limit must leave the window first.
    return times[times.length - limit]! + this.config.windowMs - now;
  }

  private prune(key: string, now: number): number[] {
    const times = this.failures.get(key);
    if (!times) return [];
    const kept = times.filter((t) => now - t < this.config.windowMs);
    if (kept.length === 0) this.failures.delete(key);
    else this.failures.set(key, kept);
    return kept;
  }

  private push(key: string, now: number): void {
    const times = this.prune(key, now);
    times.push(now);
    // Only the newest `limit` failures matter; keep a few more, never an unbounded list.
    if (times.length > 1000) times.splice(0, times.length - 1000);
    this.failures.delete(key);
    this.failures.set(key, times);
    if (this.failures.size > MAX_KEYS) {
      const oldest = this.failures.keys().next().value;
      if (oldest !== undefined) this.failures.delete(oldest);
    }
  }
}

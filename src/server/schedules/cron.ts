/**
 * Cron expressions in a time zone, read by croner (daylight saving included: a local time that a spring
 * change skips runs at the first time after the gap, one an autumn change repeats runs once). Nothing here
 * parses cron itself.
 */
import { Cron } from 'croner';
import { StewardError } from '../../protocol/index.js';

/** A compiled expression: when it runs after a moment. */
export interface CronTimes {
  /** The first run strictly after `after` (epoch ms), or null when the expression has none. */
  nextAfter(after: number): number | null;
  /** Up to `count` runs strictly after `after`, soonest first. */
  nextRuns(count: number, after: number): number[];
}

/** Compiles `expression` in `timeZone`; STEWARD_SCHEDULE_INVALID names the field that is wrong. */
export function compileCron(expression: string, timeZone: string): CronTimes {
  checkTimeZone(timeZone);
  let cron: Cron;
  try {
    cron = new Cron(expression, { timezone: timeZone, paused: true });
  } catch (error) {
    const why = error instanceof Error ? error.message.replace(/^CronPattern:\s*/, '') : String(error);
    throw new StewardError(
      'STEWARD_SCHEDULE_INVALID',
      `cron: ${JSON.stringify(expression)} is not understood: ${why}`,
    );
  }
  return {
    nextAfter(after) {
      return cron.nextRun(new Date(after))?.getTime() ?? null;
    },
    nextRuns(count, after) {
      return cron.nextRuns(count, new Date(after)).map((date) => date.getTime());
    },
  };
}

function checkTimeZone(timeZone: string): void {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone });
  } catch {
    throw new StewardError(
      'STEWARD_SCHEDULE_INVALID',
      `timeZone: ${JSON.stringify(timeZone)} is not an IANA time zone (such as UTC or Europe/Berlin)`,
    );
  }
}

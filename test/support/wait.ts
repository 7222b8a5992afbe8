/**
 * The one polling helper for tests that wait for a state no event announces (a process gone, a row written
 * by another process): it checks every `intervalMs` (50 ms) and fails naming what it waited for. It returns
 * what the check returned once that is truthy, so a test can wait for a value and use it.
 *
 * A test that must show something did *not* happen does not sleep and look: it waits for a later event that
 * would have come after the unwanted one (the next job's offer in a first-in-first-out queue, a later log
 * record), then checks.
 */
export async function until<T>(
  /** What is awaited, for the failure; a function is asked only then (to name the last state seen). */
  what: string | (() => string),
  check: () => T | Promise<T>,
  timeoutMs = 15_000,
  intervalMs = 50,
): Promise<Exclude<T, false | undefined | null | 0 | ''>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value as Exclude<T, false | undefined | null | 0 | ''>;
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${typeof what === 'string' ? what : what()}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** `until` for a check whose "not yet" is `undefined` (so that `0`, `''` or `false` count as found). */
export async function untilDefined<T>(
  what: string | (() => string),
  check: () => T | undefined,
  timeoutMs?: number,
  intervalMs?: number,
): Promise<T> {
  const found = await until(
    what,
    () => {
      const value = check();
      return value === undefined ? undefined : { value };
    },
    timeoutMs,
    intervalMs,
  );
  return found.value;
}

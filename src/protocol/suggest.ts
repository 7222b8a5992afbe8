/**
 * "Did you mean …?" for names people type: workflow names, step keys. Edit distance over short names is a
 * dozen lines, so it is written here rather than taken as a dependency; inputs are bounded (names are at
 * most a few hundred characters and candidates are compared only when their lengths are close).
 */

/** Levenshtein distance between `a` and `b` (insertions, deletions, substitutions each cost 1). */
export function editDistance(a: string, b: string): number {
  if (a === b) return 0;
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/**
 * The candidates close enough to `input` to be what was meant, best first (at most `limit`). Close enough:
 * case-insensitively at most a third of the input's length apart (at least 1, at most 3 edits), or one
 * contains the other (names of 3 characters or more).
 */
export function closestNames(input: string, candidates: Iterable<string>, limit = 3): string[] {
  const wanted = input.toLowerCase();
  const maxDistance = Math.min(3, Math.max(1, Math.floor(wanted.length / 3)));
  const scored: { name: string; distance: number }[] = [];
  for (const name of new Set(candidates)) {
    const lower = name.toLowerCase();
    if (lower === wanted) {
      scored.push({ name, distance: 0 });
      continue;
    }
    const contains =
      wanted.length >= 3 && lower.length >= 3 && (lower.includes(wanted) || wanted.includes(lower));
    if (!contains && Math.abs(lower.length - wanted.length) > maxDistance) continue;
    const distance = contains ? 1 : editDistance(wanted, lower);
    if (distance <= maxDistance) scored.push({ name, distance });
  }
  return scored
    .sort((x, y) => x.distance - y.distance || x.name.localeCompare(y.name))
    .slice(0, limit)
    .map((entry) => entry.name);
}

/** ` (did you mean "a" or "b"?)`, or '' when nothing is close. */
export function didYouMean(input: string, candidates: Iterable<string>): string {
  const names = closestNames(input, candidates);
  if (names.length === 0) return '';
  const quoted = names.map((name) => JSON.stringify(name));
  const list = quoted.length === 1 ? quoted[0] : `${quoted.slice(0, -1).join(', ')} or ${quoted.at(-1)}`;
  return ` (did you mean ${list}?)`;
}

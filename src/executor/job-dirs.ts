/** The directories of one job in an executor: its working directory and its TMPDIR. */
import { lstatSync, mkdirSync } from 'node:fs';
import { mkdir, rm, rmdir } from 'node:fs/promises';

/**
 * Makes one of the job's directories (0700, parents included), empty. What an executor of this attempt
 * killed while loading left there is removed first (assets are written exclusively). Usually this is one
 * `mkdir`: the removal, and making the parents, happen only when it fails for their reason. A warm
 * executor's job waits for this before it starts, and a removal of nothing (its module, its `lstat` calls,
 * each a turn of the thread pool) cost more than the `mkdir` itself.
 */
export async function emptyDir(dir: string): Promise<void> {
  try {
    // Synchronous: a `mkdir` is a few microseconds of metadata, where a turn of the thread pool (shared with
    // DuckDB's calls and the last job's removal) cost a warm start 0.3–4.6 ms.
    mkdirSync(dir, { mode: 0o700 });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') await rm(dir, { recursive: true, force: true });
    else if (code !== 'ENOENT') throw error;
    await mkdir(dir, { recursive: true, mode: 0o700 });
  }
}

/**
 * Removes one of the job's directories with everything in it, never following a link. A job of SQL steps
 * alone usually has none: a synchronous `lstat` finds that out without a turn of the thread pool or the error
 * a failed `rmdir` makes (both were a good part of such a job's CPU in the executor). An empty one goes
 * with one `rmdir`, where a recursive removal costs two `lstat` calls and loading its module.
 */
export async function removeDir(dir: string): Promise<void> {
  if (!lstatSync(dir, { throwIfNoEntry: false })) return;
  try {
    await rmdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    await rm(dir, { recursive: true, force: true });
  }
}

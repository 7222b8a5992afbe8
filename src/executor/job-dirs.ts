/** The directories of one job in an executor: its working directory and its TMPDIR. */
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
    await mkdir(dir, { mode: 0o700 });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') await rm(dir, { recursive: true, force: true });
    else if (code !== 'ENOENT') throw error;
    await mkdir(dir, { recursive: true, mode: 0o700 });
  }
}

/**
 * Removes one of the job's directories with everything in it, never following a link. A job of SQL steps
 * alone usually has none: one `rmdir` finds that out (or removes an empty one), where a recursive removal
 * costs two `lstat` calls and loading its module.
 */
export async function removeDir(dir: string): Promise<void> {
  try {
    await rmdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    await rm(dir, { recursive: true, force: true });
  }
}

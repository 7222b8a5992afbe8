/**
 * Per-user directories, created by root for a user without ever following a link someone planted:
 * every directory is opened with O_NOFOLLOW and changed through its file descriptor, and a pre-existing
 * path with the wrong owner or type is refused, never "fixed".
 *
 * Layout: <workspaceRoot>/                 root-owned, not writable by others
 *           <user>/                        user-owned, 0700
 *             work/   jobs/<job>-<n>/     the job directories (created by the executor, as the user)
 *             tmp/                         TMPDIR, DuckDB databases and spill files
 */
import { constants } from 'node:fs';
import { cp, lchown, lstat, mkdir, open, readdir } from 'node:fs/promises';
import path from 'node:path';
import { StewardError } from '../protocol/index.js';
import type { OsAccount } from './accounts.js';

export interface UserDirs {
  root: string;
  workspaceDir: string;
  tempDir: string;
}

/** Creates the workspace root if missing and checks it is safe to create user directories in. */
export async function prepareWorkspaceRoot(root: string, asRoot: boolean): Promise<void> {
  await mkdir(root, { recursive: true, mode: 0o755 });
  const info = await lstat(root);
  if (!info.isDirectory())
    throw new StewardError('STEWARD_WORKSPACE_UNSAFE', `workspace root ${root} is not a directory`);
  if (asRoot && info.uid !== 0)
    throw new StewardError(
      'STEWARD_WORKSPACE_UNSAFE',
      `workspace root ${root} must be owned by root (owner uid ${info.uid})`,
    );
  if ((info.mode & 0o022) !== 0) {
    throw new StewardError(
      'STEWARD_WORKSPACE_UNSAFE',
      `workspace root ${root} is writable by group or others (mode ${(info.mode & 0o7777).toString(8)})`,
    );
  }
  if (asRoot) {
    // Executors run as users: they must be able to traverse every ancestor to reach their own directory.
    for (let dir = root; ; dir = path.dirname(dir)) {
      const ancestor = await lstat(dir);
      if ((ancestor.mode & 0o001) === 0) {
        throw new StewardError(
          'STEWARD_WORKSPACE_UNSAFE',
          `workspace root ${root} is not reachable by users: ${dir} has mode ${(ancestor.mode & 0o7777).toString(8)} (needs o+x); choose another workspaceRoot or data dir`,
        );
      }
      if (dir === path.dirname(dir)) break;
    }
  }
}

/**
 * Makes `dir` a directory owned by uid:gid with `mode`, refusing links and foreign owners. When `asRoot` is
 * false (single-user mode) ownership is the invoking user's and only type and mode are enforced.
 */
export async function ensureOwnedDir(
  dir: string,
  account: OsAccount,
  mode: number,
  asRoot: boolean,
): Promise<void> {
  let created = false;
  try {
    await mkdir(dir, { mode: 0o700 });
    created = true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  let handle;
  try {
    handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ELOOP' || code === 'ENOTDIR') {
      throw new StewardError(
        'STEWARD_WORKSPACE_UNSAFE',
        `${dir} exists and is not a plain directory (a symlink or file was planted there); refusing to use it`,
      );
    }
    throw error;
  }
  try {
    const info = await handle.stat();
    if (!info.isDirectory()) throw new StewardError('STEWARD_WORKSPACE_UNSAFE', `${dir} is not a directory`);
    if (asRoot) {
      if (created) {
        await handle.chown(account.uid, account.gid);
      } else if (info.uid !== account.uid) {
        throw new StewardError(
          'STEWARD_WORKSPACE_UNSAFE',
          `${dir} exists but is owned by uid ${info.uid}, not ${account.name} (uid ${account.uid}); refusing to use it`,
        );
      }
    }
    if ((info.mode & 0o7777) !== mode) await handle.chmod(mode);
  } finally {
    await handle.close();
  }
}

/**
 * Preparations in progress, per user root: two jobs of one user placed at once must not race between one's
 * mkdir and its chown (the other would find a root-owned directory and refuse it).
 */
const preparing = new Map<string, Promise<unknown>>();

export async function prepareUserDirs(root: string, account: OsAccount, asRoot: boolean): Promise<UserDirs> {
  const key = path.join(root, account.name);
  const previous = preparing.get(key) ?? Promise.resolve();
  const next = previous.catch(() => {}).then(() => prepareUserDirsNow(root, account, asRoot));
  preparing.set(key, next);
  try {
    return await next;
  } finally {
    if (preparing.get(key) === next) preparing.delete(key);
  }
}

async function prepareUserDirsNow(root: string, account: OsAccount, asRoot: boolean): Promise<UserDirs> {
  const userRoot = path.join(root, account.name);
  await ensureOwnedDir(userRoot, account, 0o700, asRoot);
  const workspaceDir = path.join(userRoot, 'work');
  const tempDir = path.join(userRoot, 'tmp');
  await ensureOwnedDir(workspaceDir, account, 0o700, asRoot);
  await ensureOwnedDir(tempDir, account, 0o700, asRoot);
  return { root: userRoot, workspaceDir, tempDir };
}

/**
 * Creates a missing home directory from /etc/skel (the "user never logged in on this machine" case), owned
 * by the user, 0700. An existing home is left as it is.
 */
export async function ensureHome(account: OsAccount): Promise<void> {
  if (!path.isAbsolute(account.home) || account.home === '/') return;
  try {
    await lstat(account.home);
    return;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  await mkdir(path.dirname(account.home), { recursive: true, mode: 0o755 });
  await ensureOwnedDir(account.home, account, 0o700, true);
  let entries: string[] = [];
  try {
    entries = await readdir('/etc/skel');
  } catch {
    return;
  }
  for (const entry of entries) {
    const target = path.join(account.home, entry);
    await cp(path.join('/etc/skel', entry), target, {
      recursive: true,
      verbatimSymlinks: true,
      errorOnExist: false,
      force: false,
    });
    await chownTree(target, account);
  }
}

async function chownTree(target: string, account: OsAccount): Promise<void> {
  await lchown(target, account.uid, account.gid);
  const info = await lstat(target);
  if (info.isDirectory()) {
    for (const entry of await readdir(target)) await chownTree(path.join(target, entry), account);
  }
}

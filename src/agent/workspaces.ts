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
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import {
  access,
  chmod,
  copyFile,
  cp,
  lchown,
  lstat,
  mkdir,
  mkdtemp,
  open,
  readdir,
  rmdir,
  type FileHandle,
} from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { StewardError } from '../protocol/index.js';
import type { OsAccount } from './accounts.js';

const execFileAsync = promisify(execFile);

export interface UserDirs {
  root: string;
  workspaceDir: string;
  tempDir: string;
}

/**
 * Workspace roots whose default ACL this process set to the private one (`prepareWorkspaceRoot`). A
 * directory made in one gets that ACL from the kernel as it is made, and passes it on: a new user's
 * directories need no `setfacl` of their own, whose process start from a large daemon was most of what
 * making them cost, and they are never without their ACL, not even for an instant.
 */
const privateRoots = new Set<string>();

/**
 * Creates the workspace root if missing and checks it is safe to create user directories in; as root, also
 * that private ACLs can be set there (`checkAclSupport`), and gives it the private default ACL (owner rwx,
 * group and others nothing), which the directories made in it inherit.
 */
export async function prepareWorkspaceRoot(root: string, asRoot: boolean): Promise<void> {
  await mkdirTraversable(root);
  await inspectWorkspaceRoot(root, asRoot);
  if (!asRoot) return;
  await checkAclSupport(root);
  try {
    // The default ACL only (what is made inside inherits it); the root's own access stays as it is.
    await execFileAsync('setfacl', ['-d', '--set', 'u::rwx,g::---,o::---', root], { timeout: 10_000 });
  } catch (error) {
    throw aclFailure(root, error);
  }
  privateRoots.add(root);
}

/**
 * Checks an existing workspace root without changing anything: a directory, root's (when `asRoot`), not
 * writable by group or others, and every ancestor traversable by users. Throws STEWARD_WORKSPACE_UNSAFE.
 */
export async function inspectWorkspaceRoot(root: string, asRoot: boolean): Promise<void> {
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
 * The first ancestor of `root` that someone other than root could rename or replace (an ancestor not owned
 * by root, or writable by group or others without the sticky bit), described; undefined when all are safe.
 * With such a parent, another user could swap the workspace root for a tree of their own.
 */
export async function unsafeAncestor(root: string): Promise<string | undefined> {
  for (let dir = path.dirname(root); ; dir = path.dirname(dir)) {
    const info = await lstat(dir);
    const mode = (info.mode & 0o7777).toString(8);
    if (info.uid !== 0) return `${dir} is owned by uid ${info.uid}, not root`;
    if ((info.mode & 0o022) !== 0 && (info.mode & 0o1000) === 0)
      return `${dir} is writable by group or others without the sticky bit (mode ${mode})`;
    if (dir === path.dirname(dir)) return undefined;
  }
}

/**
 * Creates `dir` and its missing ancestors as 0755. mkdir's mode is narrowed by the umask, which is 077 in
 * the daemons (their store files are private from the first byte), so each directory created here gets its
 * mode explicitly; existing ones are left as they are.
 */
async function mkdirTraversable(dir: string): Promise<void> {
  const first = await mkdir(dir, { recursive: true, mode: 0o755 });
  if (first === undefined) return;
  for (let created = dir; ; created = path.dirname(created)) {
    await chmod(created, 0o755);
    if (created === first || created === path.dirname(created)) break;
  }
}

/**
 * Makes `dir` a directory owned by uid:gid with `mode`, refusing links and foreign owners. When `asRoot` is
 * false (single-user mode) ownership is the invoking user's and only type and mode are enforced. With `acl`,
 * a directory created here gets the private ACL (see `ensureOwnedDirs`).
 */
export async function ensureOwnedDir(
  dir: string,
  account: OsAccount,
  mode: number,
  asRoot: boolean,
  acl?: PrivateAcl,
): Promise<{ created: boolean }> {
  const [created] = await ensureOwnedDirs([dir], account, mode, asRoot, acl);
  return { created: created === true };
}

/** A directory checked by `openOwnedDir`, still open. */
interface OwnedDir {
  dir: string;
  handle: FileHandle;
  created: boolean;
}

/**
 * `ensureOwnedDir` for sibling directories, side by side, with one `setfacl` for all of those it created
 * (a process start from a large daemon is most of what making a new user's directories costs). A failure
 * removes every directory made here: the next job would find one "existing", skip the ACL and succeed, so a
 * user's first job would fail and the second run without the private ACL. Removed, every job fails the same
 * way until the cause is fixed. Resolves with whether each directory was created here.
 */
async function ensureOwnedDirs(
  dirs: string[],
  account: OsAccount,
  mode: number,
  asRoot: boolean,
  acl: PrivateAcl | undefined,
): Promise<boolean[]> {
  const opened = await Promise.allSettled(dirs.map((dir) => openOwnedDir(dir, account, mode, asRoot)));
  const owned = opened.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  try {
    const failed = opened.find((result) => result.status === 'rejected');
    if (failed) throw failed.reason;
    // Only on creation: the directory is the user's, who may change its ACL later as they may its mode.
    const fresh = owned.filter((entry) => entry.created);
    if (acl && asRoot && fresh.length > 0) await setPrivateAcl(fresh, acl);
    return owned.map((entry) => entry.created);
  } catch (error) {
    for (const entry of owned) if (entry.created) await rmdir(entry.dir).catch(() => {});
    throw error;
  } finally {
    for (const entry of owned) await entry.handle.close();
  }
}

/**
 * Creates `dir` if missing and opens it, refusing a link or a foreign owner; gives a new directory to the
 * account and sets `mode`. On failure, a directory it created is removed again.
 */
async function openOwnedDir(
  dir: string,
  account: OsAccount,
  mode: number,
  asRoot: boolean,
): Promise<OwnedDir> {
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
    if (created) await rmdir(dir).catch(() => {});
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
    return { dir, handle, created };
  } catch (error) {
    await handle.close();
    if (created) await rmdir(dir).catch(() => {});
    throw error;
  }
}

/** Default ACLs on a user's directories: what they create stays private whatever their umask. */
export interface PrivateAcl {
  /** A group given read (and traverse) access to everything, for audits. Default none. */
  auditorsGroup?: string | undefined;
}

/**
 * Sets an access ACL and a default (inherited) ACL on directories we hold open, with one `setfacl`: owner
 * rwx, group and others nothing, optionally an auditors group r-x. `setfacl` is given /proc/<our pid>/fd/<fd>,
 * which names the very directory we opened with O_NOFOLLOW, so a path swapped in the meantime cannot
 * redirect it.
 */
async function setPrivateAcl(dirs: OwnedDir[], acl: PrivateAcl): Promise<void> {
  const entries = ['u::rwx', 'g::---', 'o::---'];
  if (acl.auditorsGroup) entries.push(`g:${acl.auditorsGroup}:r-x`, 'm::r-x');
  const spec = [...entries, ...entries.map((entry) => `d:${entry}`)].join(',');
  const targets = dirs.map(({ handle }) => `/proc/${process.pid}/fd/${handle.fd}`);
  try {
    await execFileAsync('setfacl', ['-m', spec, ...targets], { timeout: 10_000 });
  } catch (error) {
    throw aclFailure(dirs.map(({ dir }) => dir).join(' and '), error);
  }
}

function aclFailure(dir: string, error: unknown): StewardError {
  const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
  return new StewardError(
    'STEWARD_ACL_TOOLS_MISSING',
    missing
      ? `cannot set the private ACL on ${dir}: setfacl is not installed (install the acl package)`
      : `cannot set the private ACL on ${dir} (is the file system mounted with ACL support?): ${(error as Error).message}`,
    { cause: error },
  );
}

/** The directories of PATH holding an executable `name`; empty when it is not on PATH. */
export async function findOnPath(name: string, searchPath = process.env.PATH ?? ''): Promise<string[]> {
  const found: string[] = [];
  for (const dir of searchPath.split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    if (
      await access(candidate, constants.X_OK).then(
        () => true,
        () => false,
      )
    )
      found.push(candidate);
  }
  return found;
}

/**
 * Checks that private ACLs can be set in the workspace root: setfacl and getfacl are on PATH, and a scratch
 * directory made there takes a default ACL (the file system supports them). Throws STEWARD_ACL_TOOLS_MISSING
 * otherwise. A root agent runs this at start, so a machine without the acl package refuses to start instead
 * of failing users' jobs.
 */
export async function checkAclSupport(root: string): Promise<void> {
  const missing: string[] = [];
  for (const tool of ['setfacl', 'getfacl']) if ((await findOnPath(tool)).length === 0) missing.push(tool);
  if (missing.length > 0) {
    throw new StewardError(
      'STEWARD_ACL_TOOLS_MISSING',
      `${missing.join(' and ')} not found on PATH: install the acl package (users' workspaces get private ACLs)`,
    );
  }
  const scratch = await mkdtemp(path.join(root, '.acl-check-'));
  try {
    await execFileAsync('setfacl', ['-m', 'u::rwx,g::---,o::---,d:u::rwx,d:g::---,d:o::---', scratch], {
      timeout: 10_000,
    });
  } catch (error) {
    throw aclFailure(root, error);
  } finally {
    await rmdir(scratch).catch(() => {});
  }
}

/**
 * Preparations in progress, per user root: two jobs of one user placed at once must not race between one's
 * mkdir and its chown (the other would find a root-owned directory and refuse it).
 */
const preparing = new Map<string, Promise<unknown>>();

/** Where a user's directories are under the workspace root (`prepareUserDirs` makes them). */
export function userDirPaths(root: string, account: Pick<OsAccount, 'name'>): UserDirs {
  const userRoot = path.join(root, account.name);
  return { root: userRoot, workspaceDir: path.join(userRoot, 'work'), tempDir: path.join(userRoot, 'tmp') };
}

export async function prepareUserDirs(
  root: string,
  account: OsAccount,
  asRoot: boolean,
  acl?: PrivateAcl,
): Promise<UserDirs> {
  const key = path.join(root, account.name);
  const previous = preparing.get(key) ?? Promise.resolve();
  const next = previous.catch(() => {}).then(() => prepareUserDirsNow(root, account, asRoot, acl));
  preparing.set(key, next);
  try {
    return await next;
  } finally {
    if (preparing.get(key) === next) preparing.delete(key);
  }
}

async function prepareUserDirsNow(
  root: string,
  account: OsAccount,
  asRoot: boolean,
  acl: PrivateAcl | undefined,
): Promise<UserDirs> {
  const { root: userRoot, workspaceDir, tempDir } = userDirPaths(root, account);
  const { created } = await ensureOwnedDir(
    userRoot,
    account,
    0o700,
    asRoot,
    acl?.auditorsGroup ? acl : undefined,
  );
  // A user root made just now in a root with the private default ACL has that ACL as its default too, and
  // the work and tmp directories inherit it as they are made. Otherwise (an auditors group, a user root
  // made before, a root not prepared by this process) they get it from setfacl.
  const inherited = asRoot && created && !acl?.auditorsGroup && privateRoots.has(root);
  // Independent of each other once their parent is safe: side by side, with one setfacl for both.
  await ensureOwnedDirs([workspaceDir, tempDir], account, 0o700, asRoot, inherited ? undefined : acl);
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
  await mkdirTraversable(path.dirname(account.home));
  await ensureOwnedDir(account.home, account, 0o700, true);
  let entries: string[] = [];
  try {
    entries = await readdir('/etc/skel');
  } catch {
    return;
  }
  // Side by side: a new user's first job waits for its home (see Launcher.executorFor).
  await Promise.all(entries.map((entry) => copySkelEntry(entry, account)));
}

/**
 * Copies one entry of /etc/skel into a new home, owned by the user. A plain file (the usual skel) is one
 * copyFile, which never overwrites nor follows anything already at the target (COPYFILE_EXCL); anything
 * else goes through fs.cp.
 */
async function copySkelEntry(entry: string, account: OsAccount): Promise<void> {
  const source = path.join('/etc/skel', entry);
  const target = path.join(account.home, entry);
  if ((await lstat(source)).isFile()) {
    try {
      await copyFile(source, target, constants.COPYFILE_EXCL);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') return; // left as it is, like cp's force: false
      throw error;
    }
    await lchown(target, account.uid, account.gid);
    return;
  }
  await cp(source, target, { recursive: true, verbatimSymlinks: true, errorOnExist: false, force: false });
  await chownTree(target, account);
}

async function chownTree(target: string, account: OsAccount): Promise<void> {
  await lchown(target, account.uid, account.gid);
  const info = await lstat(target);
  if (info.isDirectory()) {
    for (const entry of await readdir(target)) await chownTree(path.join(target, entry), account);
  }
}

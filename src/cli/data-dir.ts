/**
 * The data dir's modes, checked and fixed when a daemon starts. The store (SQLite database, its `-wal` and
 * `-shm`) holds every password hash, token hash and job parameter, and the signing key lets whoever reads
 * it run anything as anyone: no job may read them.
 *
 * Layout (per-user isolation, i.e. running as root with the workspace root inside the data dir):
 *   <dataDir>/               0711  users may traverse it (to reach their workspace) but not list it
 *     workspaces/            0755  root-owned; each user's directory in it is theirs, 0700
 *     steward.db, -wal, -shm 0600
 *     keys/ logs/ results/ jobs/ assets/   0700
 * Otherwise (no workspace root inside, or not root) the data dir is 0700.
 *
 * Directories are Steward's layout, so their modes are fixed here (tightening is always safe). Private
 * files readable by group or others are refused instead, with the chmod to run: they may already have been
 * copied, which an admin must know about (and rotate passwords and tokens) rather than have hidden.
 */
import { chmodSync, lstatSync, mkdirSync, readdirSync, type Stats } from 'node:fs';
import path from 'node:path';
import { StewardError } from '../protocol/index.js';

export interface DataDirLayout {
  dataDir: string;
  /**
   * The workspace root, when users' executors must reach it through the data dir (a root agent whose
   * workspace root is inside the data dir). The data dir is then 0711 and this child keeps its own mode.
   */
  reachableWorkspaceRoot?: string | undefined;
  /** Files no one but the owner may read: the SQLite store and its companions (`sqliteFiles`), the signing key. */
  privateFiles: readonly string[];
}

/** Modes that this check sets or demands. */
export const dataDirModes = { traversable: 0o711, private: 0o700, file: 0o600 } as const;

/**
 * Creates the data dir if missing, fixes the modes of it and its child directories, and refuses (with
 * STEWARD_STORE_READABLE, one line naming the chmod) when a private file is readable by group or others.
 */
export function secureDataDir(layout: DataDirLayout): void {
  const dataDir = path.resolve(layout.dataDir);
  mkdirSync(dataDir, { recursive: true, mode: dataDirModes.private });
  const info = lstatSync(dataDir);
  if (!info.isDirectory()) {
    throw new StewardError('STEWARD_CONFIG_INVALID', `dataDir ${dataDir} is not a directory`);
  }
  // A shared directory like /tmp must never be chmodded: the data dir has to be a directory of its own.
  if ((info.mode & 0o1000) !== 0 || (info.mode & 0o002) !== 0) {
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      `dataDir ${dataDir} is a shared directory (mode ${octal(info.mode)}); give Steward a directory of its own`,
    );
  }
  const workspaceRoot = layout.reachableWorkspaceRoot && path.resolve(layout.reachableWorkspaceRoot);
  const workspaceInside =
    workspaceRoot !== undefined && workspaceRoot !== '' && isInside(workspaceRoot, dataDir);
  setMode(dataDir, info, workspaceInside ? dataDirModes.traversable : dataDirModes.private);
  // The path from the data dir down to the workspace root is traversed by users; everything else is not.
  const onWorkspacePath = new Set<string>();
  if (workspaceInside) {
    for (let dir = workspaceRoot; dir !== dataDir; dir = path.dirname(dir)) onWorkspacePath.add(dir);
  }
  for (const entry of readdirSync(dataDir, { withFileTypes: true })) {
    const child = path.join(dataDir, entry.name);
    if (!entry.isDirectory()) continue;
    if (onWorkspacePath.has(child)) {
      // An ancestor of a deeper workspace root: traversable, not listable. The root itself is the agent's.
      if (child !== workspaceRoot) setMode(child, lstatSync(child), dataDirModes.traversable);
      continue;
    }
    setMode(child, lstatSync(child), dataDirModes.private);
  }
  const readable: string[] = [];
  for (const file of layout.privateFiles.map((name) => path.resolve(name))) {
    let stats: Stats;
    try {
      stats = lstatSync(file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw error;
    }
    if ((stats.mode & 0o077) !== 0) readable.push(`${file} (${octal(stats.mode)})`);
  }
  if (readable.length > 0) {
    const files = readable.map((item) => item.slice(0, item.lastIndexOf(' (')));
    throw new StewardError(
      'STEWARD_STORE_READABLE',
      `store files are readable by other users: ${readable.join(', ')}; jobs may have copied password and token hashes. Run: chmod 600 ${files.join(' ')} (then consider rotating passwords and tokens)`,
    );
  }
}

/** A SQLite database and the companions SQLite creates next to it (with the database's mode). */
export function sqliteFiles(file: string): string[] {
  return [file, `${file}-wal`, `${file}-shm`, `${file}-journal`];
}

function setMode(dir: string, info: Stats, mode: number): void {
  // Never through a link, and never someone else's directory (root may chmod anything: only what is root's).
  if (!info.isDirectory() || info.isSymbolicLink()) return;
  if (info.uid !== process.getuid?.()) return;
  if ((info.mode & 0o7777) !== mode) chmodSync(dir, mode);
}

function isInside(child: string, parent: string): boolean {
  const relative = path.relative(parent, child);
  return relative !== '' && !relative.startsWith('..') && !path.isAbsolute(relative);
}

function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

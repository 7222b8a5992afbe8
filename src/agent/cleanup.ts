/**
 * Deleting old job directories and temp files from users' workspaces (`steward cleanup`, and the agent's
 * optional schedule). Safe by construction:
 * - it only looks at `<workspaceRoot>/<user>/work/jobs/*` and `<workspaceRoot>/<user>/tmp/*`, checking each
 *   level with lstat (a symlink anywhere on the way is skipped, never followed);
 * - each deletion runs as the owning user (`rm` started with that uid/gid, no shell): should a user swap a
 *   directory for a link between our check and the deletion, the deletion can only reach what that user
 *   could delete anyway — never another user's files, never anything outside their reach;
 * - an entry containing a file named `.steward-keep` is kept (the exception users and admins can set).
 */
import { spawn } from 'node:child_process';
import { lstat, readdir } from 'node:fs/promises';
import path from 'node:path';

export interface CleanupItem {
  /** The user directory's name (the OS user). */
  user: string;
  uid: number;
  gid: number;
  kind: 'job-dir' | 'temp';
  path: string;
  /** Last modification of the entry itself. */
  modifiedAt: Date;
}

export const KEEP_MARKER = '.steward-keep';

async function realDir(target: string): Promise<{ uid: number; gid: number } | undefined> {
  const info = await lstat(target).catch(() => undefined);
  return info?.isDirectory() ? { uid: info.uid, gid: info.gid } : undefined;
}

/** Lists what `cleanup` would delete: entries older than `olderThanMs`, without touching anything. */
export async function planCleanup(
  root: string,
  olderThanMs: number,
  now = Date.now(),
): Promise<CleanupItem[]> {
  const cutoff = now - olderThanMs;
  const items: CleanupItem[] = [];
  if (!(await realDir(root))) return items;
  for (const user of (await readdir(root)).sort()) {
    const userDir = path.join(root, user);
    const owner = await realDir(userDir);
    if (!owner || owner.uid === 0) continue; // only user-owned directories; root's never
    const places: [CleanupItem['kind'], string[]][] = [
      ['job-dir', [userDir, 'work', 'jobs']],
      ['temp', [userDir, 'tmp']],
    ];
    for (const [kind, parts] of places) {
      let dir = '';
      let ok = true;
      for (const part of parts) {
        dir = dir ? path.join(dir, part) : part;
        const info = await realDir(dir);
        if (!info || info.uid !== owner.uid) {
          ok = false;
          break;
        }
      }
      if (!ok) continue;
      for (const entry of (await readdir(dir)).sort()) {
        const target = path.join(dir, entry);
        const info = await lstat(target).catch(() => undefined);
        if (!info || info.mtimeMs >= cutoff) continue;
        if (info.isDirectory() && (await lstat(path.join(target, KEEP_MARKER)).catch(() => undefined)))
          continue;
        items.push({ user, uid: owner.uid, gid: owner.gid, kind, path: target, modifiedAt: info.mtime });
      }
    }
  }
  return items;
}

/** Deletes one planned entry as its owner. Resolves with an error message, or undefined on success. */
export function removeAsOwner(item: CleanupItem): Promise<string | undefined> {
  return new Promise((resolve) => {
    const asRoot = process.getuid?.() === 0;
    const child = spawn('rm', ['-rf', '--one-file-system', '--', item.path], {
      ...(asRoot ? { uid: item.uid, gid: item.gid } : {}),
      env: { PATH: '/usr/bin:/bin', LANG: 'C' },
      cwd: '/',
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => (stderr += chunk));
    child.on('error', (error) => resolve(error.message));
    child.on('close', (code) => resolve(code === 0 ? undefined : stderr.trim() || `rm exited with ${code}`));
  });
}

export interface CleanupReport {
  removed: CleanupItem[];
  failed: { item: CleanupItem; error: string }[];
}

export async function runCleanup(items: readonly CleanupItem[]): Promise<CleanupReport> {
  const report: CleanupReport = { removed: [], failed: [] };
  for (const item of items) {
    const error = await removeAsOwner(item);
    if (error) report.failed.push({ item, error });
    else report.removed.push(item);
  }
  return report;
}

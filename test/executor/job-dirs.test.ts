/**
 * A job's directories: made private and empty whatever an earlier executor of the same attempt left there,
 * with their parents when those are missing; any other failure is the job's. Removed with their contents,
 * never through a link, and a missing one is no error.
 */
import { mkdtemp, mkdir, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { emptyDir, removeDir } from '../../src/executor/job-dirs.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function scratch(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'steward-job-dirs-'));
  dirs.push(dir);
  return dir;
}

describe('emptyDir', () => {
  it('makes a new directory 0700, and its missing parents', async () => {
    const root = await scratch();
    const dir = path.join(root, 'jobs', 'job1-1');
    await emptyDir(dir);
    const info = await stat(dir);
    expect(info.isDirectory()).toBe(true);
    expect(info.mode & 0o777).toBe(0o700);
    expect(await readdir(dir)).toEqual([]);
  });

  it('empties what an earlier executor of the attempt left', async () => {
    const root = await scratch();
    const dir = path.join(root, 'job1-1');
    await mkdir(path.join(dir, 'assets', 'deep'), { recursive: true });
    await writeFile(path.join(dir, 'assets', 'deep', 'data.csv'), 'a,b\n');
    await writeFile(path.join(dir, 'left.txt'), 'x');
    await emptyDir(dir);
    expect(await readdir(dir)).toEqual([]);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
  });

  it('replaces a file or a symlink at its place, and leaves the link target alone', async () => {
    const root = await scratch();
    const target = path.join(root, 'elsewhere');
    await mkdir(target);
    await writeFile(path.join(target, 'keep.txt'), 'keep');
    const file = path.join(root, 'a-file');
    await writeFile(file, 'x');
    await emptyDir(file);
    expect((await stat(file)).isDirectory()).toBe(true);
    const link = path.join(root, 'a-link');
    await symlink(target, link);
    await emptyDir(link);
    expect((await stat(link)).isDirectory()).toBe(true);
    expect(await readdir(target)).toEqual(['keep.txt']);
  });

  it('fails when a parent is not a directory', async () => {
    const root = await scratch();
    await writeFile(path.join(root, 'jobs'), 'not a directory');
    await expect(emptyDir(path.join(root, 'jobs', 'job1-1'))).rejects.toMatchObject({ code: 'ENOTDIR' });
  });
});

describe('removeDir', () => {
  it('removes a missing, an empty and a full directory, and links (live or dangling) without their targets', async () => {
    const root = await scratch();
    await removeDir(path.join(root, 'missing'));
    const empty = path.join(root, 'empty');
    await mkdir(empty);
    await removeDir(empty);
    const full = path.join(root, 'full');
    await mkdir(path.join(full, 'a', 'b'), { recursive: true });
    await writeFile(path.join(full, 'a', 'b', 'f.txt'), 'x');
    await removeDir(full);
    const target = path.join(root, 'target');
    await mkdir(target);
    await writeFile(path.join(target, 'keep.txt'), 'keep');
    const link = path.join(root, 'link');
    await symlink(target, link);
    await removeDir(link);
    const dangling = path.join(root, 'dangling');
    await symlink(path.join(root, 'nowhere'), dangling);
    await removeDir(dangling);
    expect((await readdir(root)).sort()).toEqual(['target']);
    expect(await readdir(target)).toEqual(['keep.txt']);
  });
});

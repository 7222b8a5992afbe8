/**
 * Cgroup names per agent instance, on the real cgroup file system (as root): starting an instance removes
 * the cgroups of dead instances of its own id — killing what still ran there — and never touches those of
 * another id, even one that starts with the same letters.
 */
import { spawn } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExecutorCgroup, detectCgroups, removeCgroupParents } from '../../src/agent/index.js';

const isRoot = process.getuid?.() === 0;
const probe = isRoot ? await detectCgroups('probe-cgroups', 'probe') : undefined;
if (probe) await removeCgroupParents(probe);
const limits = { memoryBytes: 256 * 1024 ** 2, cpus: 1, pids: 256 };

async function sleeperIn(group: ExecutorCgroup): Promise<number> {
  const child = spawn('sleep', ['3600'], { stdio: 'ignore', detached: true });
  child.unref();
  await group.join(child.pid!);
  return child.pid!;
}

async function running(pid: number): Promise<boolean> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return text !== '' && text.slice(text.lastIndexOf(')') + 2, text.lastIndexOf(')') + 3) !== 'Z';
}

describe.runIf(probe !== undefined && probe.version !== 'none')('agent instance cgroups', () => {
  it("removes a dead instance's cgroups of the same id with what ran in them, and leaves another id's alone", async () => {
    const tag = `cg${process.pid}`;
    const dead = await detectCgroups(tag, 'aaaa1111');
    const other = await detectCgroups(`${tag}-other`, 'bbbb2222');
    const deadPid = await sleeperIn(await ExecutorCgroup.create(dead, 'exec-1', limits));
    const otherPid = await sleeperIn(await ExecutorCgroup.create(other, 'exec-1', limits));
    try {
      const fresh = await detectCgroups(tag, 'cccc3333');
      expect(fresh.memoryParent).toMatch(/\+cccc3333$/);
      expect(await stat(dead.memoryParent!).catch(() => undefined)).toBeUndefined();
      expect(await running(deadPid)).toBe(false);
      expect(await stat(other.memoryParent!).catch(() => undefined)).toBeDefined();
      expect(await running(otherPid)).toBe(true);
      await removeCgroupParents(fresh);
    } finally {
      await removeCgroupParents(other);
      await removeCgroupParents(dead);
    }
    expect(await running(otherPid)).toBe(false);
    expect(path.basename(other.memoryParent!)).toBe(`steward-${tag}-other+bbbb2222`);
  });
});

/**
 * Cgroups on the real cgroup file system (as root). Names per agent instance: starting an instance removes
 * the cgroups of dead instances of its own id — killing what still ran there — and never touches those of
 * another id, even one that starts with the same letters. An executor's job cgroups: made ahead for its
 * user, killed empty at a job's end and kept for the next job, removed with the executor's; a job's process
 * that left its job cgroup for the executor's is killed. A spare's CPU weight: the least until it takes on a
 * user.
 */
import { spawn } from 'node:child_process';
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
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

describe.runIf(probe !== undefined && probe.version !== 'none' && probe.jobsParent !== undefined)(
  'executor and job cgroups',
  () => {
    it('makes the first job cgroup ahead, kills a job to empty at its end and reuses its cgroup, and removes kept ones with the executor', async () => {
      const support = await detectCgroups(`cgj${process.pid}`, 'dddd4444');
      try {
        const group = await ExecutorCgroup.create(support, 'exec-1', limits);
        const executorPid = await sleeperIn(group);
        await group.delegate(65534, 65534, executorPid);
        const execDir = path.join(support.jobsParent!, 'exec-1');
        // Made ahead at the delegation: the first job takes it.
        const first = (await group.takeJob())!;
        expect(path.dirname(first.dir)).toBe(execDir);
        expect((await stat(first.procsFile)).uid).toBe(65534);
        // A second job at once gets a cgroup of its own.
        const second = (await group.takeJob())!;
        expect(second.dir).not.toBe(first.dir);
        // A process of the first job: killed at the job's end, and the emptied cgroup serves the next job.
        const child = spawn('sleep', ['3600'], { stdio: 'ignore', detached: true });
        child.unref();
        await group.join(child.pid!);
        await writeFile(first.procsFile, String(child.pid));
        expect(await group.endJob(first)).toBe(1);
        expect(await running(child.pid!)).toBe(false);
        expect(await group.endJob(second)).toBe(0);
        const third = (await group.takeJob())!;
        expect([first.dir, second.dir]).toContain(third.dir);
        expect((await readFile(third.procsFile, 'utf8')).trim()).toBe('');
        // The executor's removal takes the kept job cgroups and everything in them with it.
        const kept = (await readdir(execDir, { withFileTypes: true })).filter((e) => e.isDirectory());
        expect(kept.length).toBe(2);
        await group.remove();
        expect(await stat(execDir).catch(() => undefined)).toBeUndefined();
        expect(await running(executorPid)).toBe(false);
      } finally {
        await removeCgroupParents(support);
      }
    });

    it("kills a job's process that moved itself out of its job cgroup into the executor's, and never the executor", async () => {
      const support = await detectCgroups(`cgs${process.pid}`, 'ffff6666');
      try {
        const group = await ExecutorCgroup.create(support, 'exec-1', limits);
        const executorPid = await sleeperIn(group);
        await group.delegate(65534, 65534, executorPid);
        // Nothing but the executor there: nothing killed, the executor untouched.
        expect(await group.killStrays(executorPid)).toBe(0);
        const job = (await group.takeJob())!;
        const stray = spawn('sleep', ['3600'], { stdio: 'ignore', detached: true });
        stray.unref();
        await group.join(stray.pid!);
        await writeFile(job.procsFile, String(stray.pid));
        // Out again, into the executor's own cgroup, where no process of a job belongs.
        await writeFile(path.join(support.jobsParent!, 'exec-1', 'cgroup.procs'), String(stray.pid));
        expect(await group.endJob(job)).toBe(0);
        expect(await running(stray.pid!)).toBe(true);
        expect(await group.killStrays(executorPid)).toBe(1);
        expect(await running(stray.pid!)).toBe(false);
        expect(await running(executorPid)).toBe(true);
        await group.remove();
      } finally {
        await removeCgroupParents(support);
      }
    });

    it('gives a spare the least CPU weight and a user’s executor the default', async () => {
      const support = await detectCgroups(`cgw${process.pid}`, 'eeee5555');
      try {
        const group = await ExecutorCgroup.create(support, 'exec-1', limits);
        const file =
          support.version === 'v2'
            ? path.join(support.cpuParent!, 'exec-1', 'cpu.weight')
            : path.join(support.cpuParent!, 'exec-1', 'cpu.shares');
        const weight = async () => Number((await readFile(file, 'utf8')).trim());
        const initial = await weight();
        await group.setBackground(true);
        expect(await weight()).toBe(support.version === 'v2' ? 1 : 2);
        await group.setBackground(false);
        expect(await weight()).toBe(initial);
        await group.remove();
      } finally {
        await removeCgroupParents(support);
      }
    });
  },
);

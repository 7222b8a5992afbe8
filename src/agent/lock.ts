/**
 * One agent per id per host: a lock file `agent-<id>.lock` in a host-wide, root-owned directory, created
 * with O_EXCL and holding the owner's pid and the kernel's start time of that pid (so a reused pid is not
 * taken for the owner). It is held for the process's lifetime and removed on stop. A lock whose owner is
 * gone (killed with SIGKILL, machine crash) is taken over: moved aside under a unique name, checked to be the
 * very lock found stale (else it is put back: another agent took it over first), and removed.
 *
 * Why not the data dir: two `steward up` with different data dirs on one host defaulted to the same id (the
 * host name), and the id names the agent's cgroups and its control queue.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { link, lstat, mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { StewardError } from '../protocol/index.js';

/** The kernel's start time of a process (clock ticks since boot, /proc/<pid>/stat field 22), or null. */
function startTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: fields after it follow the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

function alive(owner: string): boolean {
  const [pidText, started] = owner.trim().split(/\s+/);
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  // Where /proc tells, the start time must match too (a pid reused by another process is no owner).
  const now = startTime(pid);
  return now === null || started === undefined || now === started;
}

export class AgentLock {
  private constructor(
    readonly file: string,
    private readonly content: string,
  ) {}

  /**
   * Takes the lock for `agentId` in `dir`, or throws STEWARD_AGENT_ID_IN_USE naming the live owner. The
   * directory is made (0755) when missing; it must belong to this process's user and be writable by no one
   * else, or anyone could plant a lock that keeps the agent from starting.
   */
  static async acquire(dir: string, agentId: string): Promise<AgentLock> {
    await mkdir(dir, { recursive: true, mode: 0o755 });
    const info = await lstat(dir);
    const uid = process.getuid?.() ?? 0;
    if (!info.isDirectory() || info.uid !== uid || (info.mode & 0o022) !== 0)
      throw new StewardError(
        'STEWARD_CONFIG_INVALID',
        `agent lock directory ${dir} must be a directory owned by uid ${uid} and writable by no one else (chown ${uid} ${dir}; chmod go-w ${dir}), or set agent.lockDir`,
      );
    const file = path.join(dir, `agent-${agentId}.lock`);
    const content = `${process.pid} ${startTime(process.pid) ?? '-'}\n`;
    for (let attempt = 0; attempt < 10; attempt++) {
      try {
        const handle = await open(file, 'wx', 0o644);
        try {
          await handle.writeFile(content);
        } finally {
          await handle.close();
        }
        return new AgentLock(file, content);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      const found = await readFile(file, 'utf8').catch(() => undefined);
      if (found === undefined) continue;
      // An owner still writing its line reads as empty: give it a moment before judging.
      if (found === '') {
        await new Promise((resolve) => setTimeout(resolve, 50));
        if ((await readFile(file, 'utf8').catch(() => undefined)) === '') await unlink(file).catch(() => {});
        continue;
      }
      if (alive(found))
        throw new StewardError(
          'STEWARD_AGENT_ID_IN_USE',
          `another agent with id "${agentId}" runs on this host (pid ${found.trim().split(/\s+/)[0]}): set agent.id to an id of its own for this agent`,
        );
      const aside = `${file}.stale-${randomBytes(6).toString('hex')}`;
      try {
        await rename(file, aside);
      } catch {
        continue;
      }
      const moved = await readFile(aside, 'utf8').catch(() => undefined);
      if (moved !== found) {
        // Another agent replaced the stale lock between our read and our move: its lock goes back.
        await link(aside, file).catch(() => {});
      }
      await unlink(aside).catch(() => {});
    }
    throw new StewardError(
      'STEWARD_AGENT_ID_IN_USE',
      `could not take the lock ${file} for agent id "${agentId}": set agent.id to an id of its own for this agent`,
    );
  }

  /** Removes the lock, if it is still this process's. */
  async release(): Promise<void> {
    const found = await readFile(this.file, 'utf8').catch(() => undefined);
    if (found === this.content) await unlink(this.file).catch(() => {});
  }
}

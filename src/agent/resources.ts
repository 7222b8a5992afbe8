/**
 * What the agent's process holds, logged on SIGUSR2 (`agent.resources`): open file descriptors, Node's
 * active handles and timers by type, and the idle executors' and spares' measured memory. For leak checks
 * over long runs (bench/many-users.mjs compares them before and after churn).
 */
import { readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { AgentPool } from './collaborators.js';

export interface ResourceReport {
  fds: number | undefined;
  /**
   * The descriptors by what they are: `socket`, `pipe`, `anon_inode:[eventfd]`, … and, for files, their
   * directory (see `fdKind`). At most FD_KINDS entries; the rest are counted under `other`.
   */
  fdKinds: Record<string, number>;
  /** `process.getActiveResourcesInfo()` counted by type (Timeout, TCPWRAP, PipeWrap, …). */
  active: Record<string, number>;
  idle: ReturnType<NonNullable<AgentPool['idleMemory']>> | undefined;
}

const FD_KINDS = 32;

/** What a descriptor's /proc link names, without the inode that makes each one different. */
export function fdKind(target: string): string {
  const special = /^([a-z_]+):(\[[^\]]*\])?/.exec(target);
  if (special) return special[1] === 'anon_inode' ? `anon_inode:${special[2] ?? ''}` : special[1]!;
  // A file by its directory, with the parts that name one of many (a user's, a job's: any with a digit)
  // as `*`: each user's log file is then one kind, not one each.
  if (target.startsWith('/'))
    return `file:${path.posix
      .dirname(target)
      .split('/')
      .map((part) => (/\d/.test(part) ? '*' : part))
      .join('/')}`;
  return 'other';
}

export function resourceReport(pool: AgentPool): ResourceReport {
  let fds: number | undefined;
  const fdKinds: Record<string, number> = {};
  try {
    fds = 0;
    for (const fd of readdirSync('/proc/self/fd')) {
      let kind: string;
      try {
        kind = fdKind(readlinkSync(`/proc/self/fd/${fd}`));
      } catch {
        continue; // closed since: the one readdirSync itself held
      }
      fds += 1;
      if (!(kind in fdKinds) && Object.keys(fdKinds).length >= FD_KINDS) kind = 'other';
      fdKinds[kind] = (fdKinds[kind] ?? 0) + 1;
    }
  } catch {
    fds = undefined; // no /proc
  }
  const active: Record<string, number> = {};
  for (const type of process.getActiveResourcesInfo()) active[type] = (active[type] ?? 0) + 1;
  return { fds, fdKinds, active, idle: pool.idleMemory?.() };
}

/** Logs a `resourceReport` on every SIGUSR2 until the returned function is called. */
export function logResourcesOnSignal(pool: AgentPool, log: Logger): () => void {
  const onSignal = (): void => log.info({ event: 'agent.resources', ...resourceReport(pool) }, 'resources');
  process.on('SIGUSR2', onSignal);
  return () => process.off('SIGUSR2', onSignal);
}

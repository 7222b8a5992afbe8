/**
 * Taking on a user's identity. An executor is started by the agent before it knows its user (so the cost of
 * starting Node and loading DuckDB is paid ahead of time); when assigned, it drops root for good:
 * supplementary groups (initgroups), then gid, then uid — in that order, because after setuid it could no
 * longer change its groups. Once done there is no way back to root, which `assumeIdentity` verifies.
 */
import type { AgentToExecutor } from '../protocol/index.js';

export type AssumeMessage = Extract<AgentToExecutor, { type: 'assume' }>;

export interface AssumedIdentity {
  uid: number;
  gid: number;
  groups: number[];
}

/** Only these variables reach user code; nothing of the agent's environment does. */
export function cleanEnvironment(
  message: Pick<AssumeMessage, 'home' | 'osUser' | 'shell' | 'tempDir'>,
  base: NodeJS.ProcessEnv,
): Record<string, string> {
  return {
    HOME: message.home,
    USER: message.osUser,
    LOGNAME: message.osUser,
    SHELL: message.shell,
    PATH: base.PATH && !base.PATH.includes('..') ? base.PATH : '/usr/local/bin:/usr/bin:/bin',
    LANG: base.LANG ?? 'C.UTF-8',
    TMPDIR: message.tempDir,
  };
}

export function assumeIdentity(message: Pick<AssumeMessage, 'osUser' | 'uid' | 'gid'>): AssumedIdentity {
  const currentUid = process.getuid!();
  if (currentUid === 0) {
    if (message.uid === 0 || message.gid === 0) throw new Error('refusing to run user code as root');
    // Typed loosely in @types/node; present on POSIX.
    (process as unknown as { initgroups(user: string, extraGroup: number): void }).initgroups(
      message.osUser,
      message.gid,
    );
    process.setgid!(message.gid);
    process.setuid!(message.uid);
    let regained = false;
    try {
      process.setuid!(0);
      regained = true;
    } catch {
      // Expected: an unprivileged process cannot become root again.
    }
    if (regained) throw new Error('identity switch is reversible; refusing to continue');
  } else if (currentUid !== message.uid) {
    throw new Error(
      `executor runs as uid ${currentUid} and cannot switch to uid ${message.uid} without root`,
    );
  }
  if (process.getuid!() !== message.uid || process.geteuid!() !== message.uid) {
    throw new Error(`uid is ${process.getuid!()} after switching, expected ${message.uid}`);
  }
  if (currentUid === 0 && (process.getgid!() !== message.gid || process.getegid!() !== message.gid)) {
    throw new Error(`gid is ${process.getgid!()} after switching, expected ${message.gid}`);
  }
  // Files the executor and its steps create are private whatever the account's own umask says.
  process.umask(0o077);
  return { uid: process.getuid!(), gid: process.getgid!(), groups: process.getgroups!() };
}

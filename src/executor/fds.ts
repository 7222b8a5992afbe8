/**
 * Closing descriptors the executor inherited by accident. libuv opens every descriptor of its own with
 * O_CLOEXEC, and so does Node for the IPC channel once it is set up; a descriptor without that flag was
 * left open by some ancestor (a test runner, a service manager, a shell) and would otherwise pass on to
 * every step the user runs. The executor keeps only stdin/stdout/stderr and its pipe to the agent.
 */
import { closeSync, readFileSync, readdirSync } from 'node:fs';

const O_CLOEXEC = 0o2000000;

/** Closes every descriptor above 2 that is not close-on-exec. Returns the ones closed. Linux only. */
export function closeInheritedFds(): number[] {
  let entries: string[];
  try {
    entries = readdirSync('/proc/self/fd');
  } catch {
    return [];
  }
  const closed: number[] = [];
  for (const entry of entries) {
    const fd = Number(entry);
    if (!Number.isInteger(fd) || fd <= 2) continue;
    let info: string;
    try {
      info = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
    } catch {
      continue; // the directory listing's own descriptor, already gone
    }
    const flags = /^flags:\s+([0-7]+)/m.exec(info)?.[1];
    if (flags === undefined || (Number.parseInt(flags, 8) & O_CLOEXEC) !== 0) continue;
    try {
      closeSync(fd);
      closed.push(fd);
    } catch {
      // Not ours to close after all.
    }
  }
  return closed;
}

/** Memory as the idle budget measures it: a process's resident memory and the machine's available memory. */
import { readFileSync } from 'node:fs';

/** Resident memory of a process from /proc (Linux), or null (it exited, or no /proc). */
export function residentBytes(pid: number): number | null {
  try {
    const kib = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kib === undefined ? null : Number(kib) * 1024;
  } catch {
    return null;
  }
}

/** The machine's MemAvailable from /proc/meminfo, or undefined where there is none. */
export function availableBytes(): number | undefined {
  try {
    const kib = /^MemAvailable:\s+(\d+) kB$/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1];
    return kib === undefined ? undefined : Number(kib) * 1024;
  } catch {
    return undefined;
  }
}

export interface MemoryProbe {
  residentBytes(pid: number): number | null;
  availableBytes(): number | undefined;
}

export const procMemory: MemoryProbe = { residentBytes, availableBytes };

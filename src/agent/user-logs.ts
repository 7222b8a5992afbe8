/**
 * Executor output, captured by the agent into root-owned per-user files: <logDir>/<user>/executor-DATE.log.
 * A new file each day (daily rotation by name); files older than the retention are deleted.
 */
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';

export class UserLogs {
  private readonly streams = new Map<string, { day: string; stream: WriteStream }>();

  constructor(
    private readonly logDir: string,
    private readonly retentionDays = 90,
  ) {
    mkdirSync(logDir, { recursive: true, mode: 0o700 });
  }

  write(user: string, pid: number | undefined, stream: 'stdout' | 'stderr', line: string): void {
    const now = new Date();
    const day = now.toISOString().slice(0, 10);
    let entry = this.streams.get(user);
    if (!entry || entry.day !== day) {
      entry?.stream.end();
      const dir = path.join(this.logDir, user);
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      entry = {
        day,
        stream: createWriteStream(path.join(dir, `executor-${day}.log`), { flags: 'a', mode: 0o600 }),
      };
      entry.stream.on('error', () => {});
      this.streams.set(user, entry);
    }
    entry.stream.write(`${now.toISOString()} pid=${pid ?? '-'} ${stream} ${line}\n`);
  }

  /** Deletes per-user log files older than the retention. */
  async prune(now = Date.now()): Promise<number> {
    let removed = 0;
    const cutoff = now - this.retentionDays * 86_400_000;
    for (const user of await readdir(this.logDir).catch(() => [] as string[])) {
      const dir = path.join(this.logDir, user);
      for (const file of await readdir(dir).catch(() => [] as string[])) {
        const target = path.join(dir, file);
        const info = await stat(target).catch(() => undefined);
        if (info?.isFile() && info.mtimeMs < cutoff) {
          await rm(target, { force: true });
          removed += 1;
        }
      }
    }
    return removed;
  }

  close(): void {
    for (const { stream } of this.streams.values()) stream.end();
    this.streams.clear();
  }
}

/**
 * Real OS users and groups for tests (root only). Names derive from a per-run random tag so parallel runs
 * and leftovers never collide; `cleanup()` removes everything it created, homes included.
 */
import { randomBytes } from 'node:crypto';
import { run } from './steward.js';

export interface TestUser {
  name: string;
  uid: number;
  gid: number;
  groups: string[];
}

export class OsUsers {
  private readonly users: string[] = [];
  private readonly groups: string[] = [];
  readonly tag = randomBytes(3).toString('hex');

  async group(base: string): Promise<string> {
    const name = `stg${base}${this.tag}`.slice(0, 32);
    const result = await run('groupadd', [name]);
    if (result.code !== 0) throw new Error(`groupadd ${name}: ${result.stderr}`);
    this.groups.push(name);
    return name;
  }

  async user(
    base: string,
    options: { groups?: string[]; createHome?: boolean; system?: boolean } = {},
  ): Promise<TestUser> {
    const name = `st${base}${this.tag}`.slice(0, 32);
    const args = [options.createHome === false ? '-M' : '-m', '-U', '-s', '/bin/bash'];
    if (options.groups?.length) args.push('-G', options.groups.join(','));
    if (options.system) args.push('--system');
    const result = await run('useradd', [...args, name]);
    if (result.code !== 0) throw new Error(`useradd ${name}: ${result.stderr}`);
    this.users.push(name);
    const id = await run('id', ['-u', name]);
    const gid = await run('id', ['-g', name]);
    return {
      name,
      uid: Number(id.stdout.trim()),
      gid: Number(gid.stdout.trim()),
      groups: options.groups ?? [],
    };
  }

  async cleanup(): Promise<void> {
    for (const name of this.users.splice(0)) {
      await run('pkill', ['-KILL', '-u', name]);
      await run('userdel', ['-r', '-f', name]);
    }
    for (const name of this.groups.splice(0)) await run('groupdel', [name]);
  }
}

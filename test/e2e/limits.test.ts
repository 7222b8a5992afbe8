/**
 * Per-executor limits through real cgroups (as root), in a real `steward up`: the executor joins its cgroup
 * before taking on the user's identity, DuckDB is told limits below the cgroup's, and a job that allocates
 * past the memory limit ends `failed` with the cause read from the cgroup's own OOM counter.
 */
import { readFileSync } from 'node:fs';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { detectCgroups, removeCgroupParents } from '../../src/agent/index.js';
import { ApiUser } from '../support/api.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { StewardInstance, isRoot, tempDir } from '../support/steward.js';
import { until } from '../support/wait.js';

const MiB = 1024 ** 2;

function ownMemoryPath(): string {
  return /^\d+:memory:(.*)$/m.exec(readFileSync('/proc/self/cgroup', 'utf8'))?.[1] ?? '/';
}
const probe = isRoot ? await detectCgroups('probe-only', 'probe') : undefined;
if (probe) await removeCgroupParents(probe);
const hasCgroups = probe !== undefined && probe.version !== 'none';

const workflows = [
  {
    name: 'hog',
    steps: [
      { id: 'grab', python: 'blocks = [b"x" * (64 * 1024 * 1024) for _ in range(24)]\nprint(len(blocks))' },
    ],
  },
  {
    name: 'settings',
    steps: [
      {
        id: 'duck',
        sql: "SELECT current_setting('memory_limit') AS memory_limit, current_setting('threads') AS threads",
      },
      { id: 'where', shell: 'cat /proc/self/cgroup > "$STEWARD_OUTPUT_DIR/cgroup.txt"' },
    ],
    outputs: ['duck', 'where'],
  },
];

describe.runIf(hasCgroups)('executor limits with cgroups', () => {
  const osUsers = new OsUsers();
  let steward: StewardInstance;
  let scratch: string;
  let user: TestUser;
  let api: ApiUser;
  let admin: ApiUser;

  beforeAll(async () => {
    scratch = await tempDir('limits');
    user = await osUsers.user('lim', { createHome: false });
    const config = path.join(scratch, 'steward.yaml');
    await writeFile(
      config,
      stringify({
        agent: { id: 'exec-limits', heartbeatInterval: '300ms', limits: { memory: '512MiB', cpus: 1 } },
      }),
    );
    steward = await StewardInstance.start({ extraArgs: ['--config', config] });
    admin = await ApiUser.login(steward.url, 'admin', steward.adminPassword);
    await admin.createUser(user.name, 'limits-password-1');
    api = await ApiUser.login(steward.url, user.name, 'limits-password-1');
    // The user runs workflows of their own personal space.
    for (const workflow of workflows) await api.push(stringify(workflow));
  }, 60_000);

  afterAll(async () => {
    await steward?.destroy();
    // The agent removed its executors' cgroups and its own parent cgroup on the way out.
    const home = path.join('/sys/fs/cgroup/memory', ownMemoryPath());
    expect((await readdir(home)).filter((name) => name.startsWith('steward-exec-limits+'))).toEqual([]);
    await osUsers.cleanup();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 30_000);

  it('says at start which cgroup interface enforces the limits', () => {
    expect(steward.output).toMatch(/limits: +512 MiB memory, 1 cpu per executor, enforced by cgroup v[12]/);
  });

  it("runs steps inside the executor's cgroup, with DuckDB limits below the cgroup's and threads matching its cpus", async () => {
    const job = await api.run('settings', {}, 60_000);
    expect(job.state, JSON.stringify(job.error)).toBe('succeeded');
    expect(job.executor?.limits).toEqual({
      memoryBytes: 512 * MiB,
      cpus: 1,
      pids: 1024,
      cgroup: expect.stringMatching(/^v[12]$/) as unknown,
    });
    const { body } = await api.request('GET', `/api/jobs/${job.id}/results/duck/preview`);
    const row = (body as { rows: Record<string, string>[] }).rows[0]!;
    expect(Number(row.threads)).toBe(1);
    const [value, unit] = String(row.memory_limit).split(' ');
    const bytes =
      Number(value) * ({ KiB: 1024, MiB: MiB, GiB: 1024 * MiB } as Record<string, number>)[unit!]!;
    expect(bytes).toBeGreaterThan(100 * MiB);
    expect(bytes).toBeLessThan(512 * MiB);
    const { body: where } = await api.request('GET', `/api/jobs/${job.id}/results/cgroup.txt`);
    expect(String(where)).toMatch(
      new RegExp(`steward-exec-limits\\+[0-9a-f]+/exec-${job.executor!.pid}$`, 'm'),
    );
    // The agent's heartbeat reports the executor with its resident memory.
    const rss = await until(
      "the executor's resident memory in a heartbeat",
      async () => {
        const { body: agents } = await admin.request('GET', '/api/agents');
        const list = (agents as { agents: { executors: { pid: number; rssBytes: number | null }[] }[] })
          .agents;
        return list.flatMap((agent) => agent.executors).find((entry) => entry.pid === job.executor!.pid)
          ?.rssBytes;
      },
      5_000,
      100,
    );
    expect(rss).toBeGreaterThan(10 * MiB);
    // The kernel holds the limit, not just the record.
    const procCgroup = await readFile(`/proc/${job.executor!.pid}/cgroup`, 'utf8');
    const memoryPath = /^\d+:memory:(.*)$/m.exec(procCgroup)?.[1];
    if (memoryPath) {
      const limit = await readFile(
        path.join('/sys/fs/cgroup/memory', memoryPath, 'memory.limit_in_bytes'),
        'utf8',
      );
      expect(Number(limit)).toBe(512 * MiB);
    }
  }, 60_000);

  it('fails a job that allocates past the memory limit with "out of memory (limit 512 MiB)" and keeps serving', async () => {
    const job = await api.run('hog', {}, 60_000);
    expect(job.state).toBe('failed');
    expect(job.error?.code, job.error?.message).toBe('STEWARD_OUT_OF_MEMORY');
    expect(job.error?.message).toContain('out of memory (limit 512 MiB)');
    expect(job.executor?.limits?.memoryBytes).toBe(512 * MiB);
    const next = await api.run('settings', {}, 60_000);
    expect(next.state, JSON.stringify(next.error)).toBe('succeeded');
  }, 90_000);
});

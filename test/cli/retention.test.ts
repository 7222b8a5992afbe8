/** `steward pin|unpin` and `steward cleanup --server`, the built CLI against a server double. */
import { describe, expect, it } from 'vitest';
import { cliBin, runCli, sendJson, useServerDouble } from './harness.js';

const double = useServerDouble('admin-token');
const jobId = '01JTESTJOB0000000000000001';

describe('steward pin, unpin and cleanup --server', () => {
  it('pins and unpins a job through its pin route', async () => {
    const { server, dir, env } = double;
    server.on('POST', `/api/jobs/${jobId}/pin`, (_request, response) =>
      sendJson(response, 200, { id: jobId, pinned: true, filesPurgedAt: null }),
    );
    server.on('DELETE', `/api/jobs/${jobId}/pin`, (_request, response) =>
      sendJson(response, 200, { id: jobId, pinned: false, filesPurgedAt: '2026-12-01T00:00:00.000Z' }),
    );
    const pinned = await runCli(cliBin, ['pin', jobId], { configHome: dir, env });
    expect(pinned.stderr).toBe('');
    expect(pinned.stdout).toBe(`pinned ${jobId}\n`);
    const unpinned = await runCli(cliBin, ['unpin', jobId], { configHome: dir, env });
    expect(unpinned.code).toBe(0);
    expect(unpinned.stdout).toMatch(new RegExp(`^unpinned ${jobId} \\(its files were already removed`));
  });

  it('runs the server sweep with a bare --server, as a dry run when asked, and prints what goes', async () => {
    const { server, dir, env } = double;
    const bodies: unknown[] = [];
    server.on('POST', '/api/retention/sweep', (request, response) => {
      const body = JSON.parse(request.body) as { dryRun: boolean };
      bodies.push(body);
      sendJson(response, 200, {
        dryRun: body.dryRun,
        ran: true,
        files: [{ id: jobId, user: 'alice', space: 'alice', finishedAt: '2026-11-01T10:00:00.000Z' }],
        records: [],
        truncated: false,
      });
    });
    const dry = await runCli(cliBin, ['cleanup', '--server', '--dry-run'], { configHome: dir, env });
    expect(dry.stderr).toBe('');
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain('would remove files');
    expect(dry.stdout).toContain(jobId);
    expect(dry.stdout).toContain('(dry run: nothing removed)');
    const run = await runCli(cliBin, ['cleanup', '--server', server.url, '--json'], { configHome: dir, env });
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ dryRun: false, files: [{ id: jobId }] });
    expect(bodies).toEqual([{ dryRun: true }, { dryRun: false }]);
  });

  it('refuses a bare --server anywhere else, and local options with cleanup --server', async () => {
    const { dir, env } = double;
    const jobs = await runCli(cliBin, ['jobs', '--server'], { configHome: dir, env });
    expect(jobs.code).toBe(2);
    expect(jobs.stderr).toContain('--server needs a URL');
    const mixed = await runCli(cliBin, ['cleanup', '--server', '--data-dir', dir], { configHome: dir, env });
    expect(mixed.code).toBe(2);
    expect(mixed.stderr).toContain('--config and --data-dir are for the local cleanup');
  });
});

import { promises as fs } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { JobDetail } from '../../src/protocol/index.js';
import {
  ServerDouble,
  cliBin,
  makeDetail,
  makeJob,
  makeStep,
  runCli,
  sendJson,
  sseEvent,
  tempDirFor,
} from './harness.js';

let server: ServerDouble;
let dir: string;
let env: Record<string, string>;
const jobId = '01JTESTJOB0000000000000001';

beforeEach(async (context) => {
  dir = await tempDirFor(context.task.name);
  server = await ServerDouble.start();
  env = { STEWARD_SERVER: server.url, STEWARD_TOKEN: 'test-token' };
  server.on('POST', '/api/jobs', (_request, response) => sendJson(response, 201, makeJob()));
});
afterEach(async () => {
  await server.close();
  await fs.rm(dir, { recursive: true, force: true });
});

const executor = { pid: 4242, osUser: 'alice', uid: 1001, gid: 1001, groups: [1001, 2000] };
const started = {
  state: 'running' as const,
  startedAt: '2026-11-22T10:00:01.000Z',
  agentId: 'agent-1',
  executor,
};
const loadDone = makeStep('load', {
  kind: 'read',
  state: 'succeeded',
  startedAt: '2026-11-22T10:00:01.000Z',
  finishedAt: '2026-11-22T10:00:03.000Z',
  durationMs: 2000,
  rows: 1200,
});

/** A job that runs `load` then `report`, and ends in `final`. */
function eventsEndingIn(final: JobDetail): string {
  return [
    sseEvent('snapshot', makeDetail(started, [makeStep('load', { kind: 'read' }), makeStep('report')])),
    ': keep-alive comment\n\n',
    sseEvent(
      'step',
      makeStep('load', { kind: 'read', state: 'running', startedAt: '2026-11-22T10:00:01.000Z' }),
    ),
    sseEvent('step', loadDone),
    sseEvent('step', final.steps[1]!),
    sseEvent('job', {
      ...makeJob(started),
      state: final.state,
      finishedAt: final.finishedAt,
      error: final.error,
    }),
    sseEvent('end', final),
  ].join('');
}

const succeeded = makeDetail({ ...started, state: 'succeeded', finishedAt: '2026-11-22T10:00:05.000Z' }, [
  loadDone,
  makeStep('report', { state: 'succeeded', durationMs: 1500, rows: 12 }),
]);
const failed = makeDetail(
  {
    ...started,
    state: 'failed',
    finishedAt: '2026-11-22T10:00:05.000Z',
    error: {
      code: 'STEWARD_STEP_FAILED',
      message: 'step report failed: Catalog Error: Table "salez" does not exist',
    },
  },
  [
    loadDone,
    makeStep('report', {
      state: 'failed',
      durationMs: 40,
      message: 'Catalog Error: Table "salez" does not exist',
    }),
  ],
);

function serveEvents(...streams: string[]): void {
  let call = 0;
  server.on('GET', `/api/jobs/${jobId}/events`, (_request, response) => {
    const text = streams[Math.min(call, streams.length - 1)]!;
    call += 1;
    response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    response.end(text);
  });
}

describe('steward run', () => {
  it('submits params as strings with labels and timeout, and prints only the job id', async () => {
    const run = await runCli(
      cliBin,
      [
        'run',
        'sales-report@3',
        '-p',
        'since=2026-01-01',
        '-p',
        'limit=10',
        '--label',
        'gpu',
        '--timeout',
        '600',
      ],
      { configHome: dir, env },
    );
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(`${jobId}\n`);
    const { idempotencyKey, ...body } = JSON.parse(server.calls('POST', '/api/jobs')[0]!.body) as Record<
      string,
      unknown
    >;
    expect(body).toEqual({
      workflow: 'sales-report@3',
      params: { since: '2026-01-01', limit: '10' },
      labels: ['gpu'],
      timeoutSeconds: 600,
    });
    expect(idempotencyKey).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('sends its submission again with the same key after a dropped connection or a 502, never after a 503', async () => {
    const flaky = await ServerDouble.start();
    try {
      let calls = 0;
      flaky.on('POST', '/api/jobs', (_request, response) => {
        calls += 1;
        if (calls === 1) return void response.socket?.destroy(); // the server died mid-request
        if (calls === 2) return sendJson(response, 502, { message: 'bad gateway' });
        if (calls === 3) return sendJson(response, 201, makeJob());
        sendJson(response, 503, { error: { code: 'STEWARD_UNAVAILABLE', message: 'the bus is down' } });
      });
      const run = await runCli(cliBin, ['run', 'sales-report'], {
        configHome: dir,
        env: { ...env, STEWARD_SERVER: flaky.url },
      });
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toBe(`${jobId}\n`);
      const keys = flaky
        .calls('POST', '/api/jobs')
        .map((call) => (JSON.parse(call.body) as { idempotencyKey: string }).idempotencyKey);
      expect(keys).toHaveLength(3);
      expect(new Set(keys).size).toBe(1);
      // A 503 comes from a Steward server that got the request: answered, not retried.
      const refused = await runCli(cliBin, ['run', 'sales-report'], {
        configHome: dir,
        env: { ...env, STEWARD_SERVER: flaky.url },
      });
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toContain('STEWARD_UNAVAILABLE');
      expect(flaky.calls('POST', '/api/jobs')).toHaveLength(4);
    } finally {
      await flaky.close();
    }
  });

  it('submits --retries as the job retry budget, 0 included, and refuses values outside 0..10', async () => {
    for (const retries of ['0', '3']) {
      const run = await runCli(cliBin, ['run', 'sales-report', '--retries', retries], {
        configHome: dir,
        env,
      });
      expect(run.code, run.stderr).toBe(0);
      expect(JSON.parse(server.calls('POST', '/api/jobs').at(-1)!.body)).toMatchObject({
        retries: Number(retries),
      });
    }
    const calls = server.calls('POST', '/api/jobs').length;
    for (const bad of ['11', '-1', 'two', '1.5']) {
      const run = await runCli(cliBin, ['run', 'sales-report', `--retries=${bad}`], { configHome: dir, env });
      expect(run.code).not.toBe(0);
      expect(run.stderr).toContain(`--retries: expected a whole number from 0 to 10, got "${bad}"`);
    }
    expect(server.calls('POST', '/api/jobs')).toHaveLength(calls);
  });

  it('follows the event stream with --wait, prints one line per change, and exits 0 when the job succeeds', async () => {
    serveEvents(eventsEndingIn(succeeded));
    const run = await runCli(cliBin, ['run', 'sales-report', '--wait'], { configHome: dir, env });
    expect(run.code).toBe(0);
    expect(run.stdout.split('\n')).toEqual([
      `job ${jobId} running on agent-1 as alice (uid 1001)`,
      'step load running',
      'step load succeeded (1,200 rows, 2.0s)',
      'step report succeeded (12 rows, 1.5s)',
      `job ${jobId} succeeded on agent-1 as alice (uid 1001)`,
      `job ${jobId} succeeded after 4.0s`,
      '',
    ]);
    expect(run.stderr).toBe(`submitted job ${jobId}\n`);
  });

  it('exits 1 when the job fails and names the failing step in the summary', async () => {
    serveEvents(eventsEndingIn(failed));
    const run = await runCli(cliBin, ['run', 'sales-report', '--wait'], { configHome: dir, env });
    expect(run.code).toBe(1);
    expect(run.stdout).toContain(`job ${jobId} failed after 4.0s\n`);
    expect(run.stdout).toContain(
      'error: STEWARD_STEP_FAILED: step report failed: Catalog Error: Table "salez" does not exist\n',
    );
    // The step's message is the job's error: printed once, not again on the step's lines.
    expect(run.stdout).toContain('failed step: report\n');
    expect(run.stdout.split('Catalog Error').length - 1).toBe(1);
  });

  it.each(['canceled', 'expired', 'lost'] as const)('exits 1 when the job ends %s', async (state) => {
    serveEvents(
      sseEvent('snapshot', makeDetail()) +
        sseEvent('end', makeDetail({ state, finishedAt: '2026-11-22T10:02:00.000Z' })),
    );
    const run = await runCli(cliBin, ['run', 'sales-report', '--wait'], { configHome: dir, env });
    expect(run.code).toBe(1);
    expect(run.stdout).toContain(`job ${jobId} ${state} after 2m00s`);
  });

  it('prints only the final JobDetail as JSON with --wait --json', async () => {
    serveEvents(eventsEndingIn(succeeded));
    const run = await runCli(cliBin, ['run', 'sales-report', '--wait', '--json'], { configHome: dir, env });
    expect(run.code).toBe(0);
    expect(run.stderr).toBe('');
    const detail = JSON.parse(run.stdout) as JobDetail;
    expect(detail).toMatchObject({ id: jobId, state: 'succeeded' });
    expect(detail.steps.map((step) => step.state)).toEqual(['succeeded', 'succeeded']);
  });

  it('exits 1 with --wait --json for a failed job and still prints parseable JSON', async () => {
    serveEvents(eventsEndingIn(failed));
    const run = await runCli(cliBin, ['--json', 'run', 'sales-report', '--wait'], { configHome: dir, env });
    expect(run.code).toBe(1);
    expect(JSON.parse(run.stdout)).toMatchObject({
      id: jobId,
      state: 'failed',
      error: { code: 'STEWARD_STEP_FAILED' },
    });
  });

  it('catches up with GET /api/jobs/:id and reconnects when the stream drops before the end', async () => {
    const running = makeDetail(started, [loadDone, makeStep('report', { state: 'running' })]);
    // First connection: a snapshot, one step, then the connection closes without `end`.
    serveEvents(
      sseEvent('snapshot', makeDetail(started, [makeStep('load'), makeStep('report')])) +
        sseEvent('step', loadDone),
      sseEvent('snapshot', running) + sseEvent('end', succeeded),
    );
    server.on('GET', `/api/jobs/${jobId}`, (_request, response) => sendJson(response, 200, running));
    const run = await runCli(cliBin, ['run', 'sales-report', '--wait', '--json'], { configHome: dir, env });
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ id: jobId, state: 'succeeded' });
    expect(server.calls('GET', `/api/jobs/${jobId}/events`)).toHaveLength(2);
    expect(server.calls('GET', `/api/jobs/${jobId}`)).toHaveLength(1);
  });

  it('stops following when the catch-up shows the job already ended', async () => {
    serveEvents(sseEvent('snapshot', makeDetail(started)));
    server.on('GET', `/api/jobs/${jobId}`, (_request, response) => sendJson(response, 200, failed));
    const run = await runCli(cliBin, ['run', 'sales-report', '--wait'], { configHome: dir, env });
    expect(run.code).toBe(1);
    expect(server.calls('GET', `/api/jobs/${jobId}/events`)).toHaveLength(1);
    expect(run.stdout).toContain('failed step: report');
  });
});

describe('steward job and steward logs', () => {
  it('shows the executor identity and the steps of a job', async () => {
    server.on('GET', `/api/jobs/${jobId}`, (_request, response) => sendJson(response, 200, failed));
    const run = await runCli(cliBin, ['job', jobId], { configHome: dir, env });
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/executor:\s+alice uid=1001 gid=1001 groups=1001,2000 pid=4242/);
    expect(run.stdout).toMatch(/agent:\s+agent-1/);
    expect(run.stdout).toMatch(/report\s+failed/);
  });

  it('prints every stream of every step under a header, or one step with --step', async () => {
    const stored = [
      { stepId: 'load', stream: 'stdout', text: 'loaded 1200 rows\n' },
      { stepId: 'load', stream: 'stderr', text: 'warning: slow' },
      { stepId: 'report', stream: 'stdout', text: 'done\n' },
      { stepId: 'report', stream: 'stderr', text: '' },
    ];
    server.on('GET', `/api/jobs/${jobId}/logs`, (_request, response) =>
      sendJson(response, 200, {
        jobId,
        // The CLI asks for the listing alone (maxBytes=0) and streams each log.
        logs: stored.map(({ stepId, stream, text }) => ({
          stepId,
          stream,
          text: '',
          size: Buffer.byteLength(text),
          truncated: text !== '',
        })),
      }),
    );
    server.on('GET', new RegExp(`^/api/jobs/${jobId}/logs/(\\w+)/(stdout|stderr)$`), (request, response) => {
      const [, stepId, stream] = /\/logs\/(\w+)\/(\w+)$/.exec(request.path)!;
      const log = stored.find((entry) => entry.stepId === stepId && entry.stream === stream)!;
      response.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end(log.text);
    });
    const all = await runCli(cliBin, ['logs', jobId], { configHome: dir, env });
    expect(all.stdout).toBe(
      [
        '==> step load stdout <==',
        'loaded 1200 rows',
        '==> step load stderr <==',
        'warning: slow',
        '==> step report stdout <==',
        'done',
        '',
      ].join('\n'),
    );
    const one = await runCli(cliBin, ['logs', jobId, '--step', 'report'], { configHome: dir, env });
    expect(one.stdout).toBe('==> step report stdout <==\ndone\n');
  });
});

describe('steward run --repeat', () => {
  it('submits the copies in one batch and prints each job id or error in order, exiting 1 on a refusal', async () => {
    server.on('POST', '/api/jobs/batch', (_request, response) =>
      sendJson(response, 200, {
        jobs: [
          { job: makeJob() },
          { error: { code: 'STEWARD_PARAMS_INVALID', message: 'params.limit: expected an integer' } },
          { job: makeJob() },
        ],
      }),
    );
    const run = await runCli(cliBin, ['run', 'sales-report', '--repeat', '3', '-p', 'limit=5'], {
      configHome: dir,
      env,
    });
    expect(run.code, run.stderr).toBe(1);
    expect(run.stdout).toBe(
      `${jobId}\nerror STEWARD_PARAMS_INVALID: params.limit: expected an integer\n${jobId}\n`,
    );
    const [call] = server.calls('POST', '/api/jobs/batch');
    const body = JSON.parse(call!.body) as {
      jobs: { workflow: string; params: object; idempotencyKey: string }[];
    };
    expect(body.jobs).toHaveLength(3);
    expect(body.jobs[0]).toMatchObject({ workflow: 'sales-report', params: { limit: '5' } });
    expect(new Set(body.jobs.map((job) => job.idempotencyKey)).size).toBe(3);
  });
});

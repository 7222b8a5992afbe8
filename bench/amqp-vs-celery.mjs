// Steward no-op jobs end to end through RabbitMQ (`steward server` + `steward agent`) next to Celery no-op
// tasks (Debian's python3-celery, prefork pool) on the same broker, in one run on this machine. Celery runs
// twice: as shipped (classic queue, no publisher confirms, ack on receipt) and configured for what Steward
// guarantees (publisher confirms, a quorum queue, ack after the task ran).
// Throughput: a burst submitted at once, first submit → last done. Latency: sequential submit → done, seen
// by the client as Celery's delay().get() sees it (pushed, not polled), twice: through the job's own SSE
// stream opened after its submit (a request per job, as `steward run` follows one job), and through one jobs
// stream the client opened once (as Celery's client has one reply queue).
// CPU per job: user + system time of the server, the agent and its executors (Celery: worker and client),
// read from /proc over the burst; the broker's own CPU (shared with anything else using it) separately.
// Usage: node bench/amqp-vs-celery.mjs [stewardJobs=2000] [celeryTasks=2000] [sequential=50]
// (`npm run bench` runs it short: 300 300 20.) STEWARD_BENCH_ONLY=steward: the Steward half alone.
// Needs: the machine's RabbitMQ on 127.0.0.1:5672 (guest/guest, rabbitmqctl) and python3-celery
// (`apt-get install python3-celery`; the bench runs /usr/bin/python3, or $CELERY_PYTHON).
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Buffer } from 'node:buffer';
import { setImmediate } from 'node:timers';
import amqp from 'amqplib';
import {
  machine,
  openJobStream,
  ownCpuMs,
  percentile,
  pidsNamed,
  repoRoot,
  runAndTime,
  tempDir,
  treeCpuMs,
} from './harness.mjs';

const stewardJobs = Number(process.argv[2] ?? 2000);
const celeryTasks = Number(process.argv[3] ?? 2000);
const sequential = Number(process.argv[4] ?? 50);
const python = process.env.CELERY_PYTHON ?? '/usr/bin/python3';
// STEWARD_BENCH_BATCH=N submits the burst through POST /api/jobs/batch, N jobs per request (default: one
// POST /api/jobs per job).
const batchSize = Number(process.env.STEWARD_BENCH_BATCH ?? 0);
const cores = os.availableParallelism();
const bin = path.join(repoRoot, 'bin/steward.js');

const freePort = () =>
  new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });

// Extra Node flags for the server and agent, e.g. to profile them during the burst:
// STEWARD_BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" node bench/amqp-vs-celery.mjs
const nodeArgs = (process.env.STEWARD_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);

function daemon(args, env = {}) {
  const child = spawn(process.execPath, [...nodeArgs, bin, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (c) => (output += c));
  child.stderr.on('data', (c) => (output += c));
  return {
    child,
    async ready(text) {
      for (let i = 0; !output.includes(text); i++) {
        if (child.exitCode !== null || i > 600) throw new Error(`${args[0]} did not start:\n${output}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop() {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    },
  };
}

const vhost = `steward-bench-${randomBytes(3).toString('hex')}`;
execFileSync('rabbitmqctl', ['-q', 'add_vhost', vhost]);
execFileSync('rabbitmqctl', ['-q', 'set_permissions', '-p', vhost, 'guest', '.*', '.*', '.*']);
const dir = tempDir('amqp');
const brokerUrl = 'amqp://guest:guest@127.0.0.1:5672';
const bus = { kind: 'amqp', urls: [brokerUrl], vhost };
const cleanups = [];
let osUser;
try {
  // --- Steward ------------------------------------------------------------------------------------------
  const port = await freePort();
  const serverData = path.join(dir, 'server');
  writeFileSync(path.join(dir, 'server.json'), JSON.stringify({ server: { bus, logLevel: 'warn' } }));
  const server = daemon(
    ['server', '--config', path.join(dir, 'server.json'), '--port', String(port), '--data-dir', serverData],
    { STEWARD_ADMIN_PASSWORD: 'bench-admin-password' },
  );
  cleanups.push(() => server.stop());
  await server.ready('Steward server is up');
  const userMap = {};
  if (process.getuid() === 0) {
    osUser = `stbench${process.pid}`.slice(0, 30);
    execFileSync('useradd', ['-m', '-U', '-s', '/bin/bash', osUser]);
    userMap.admin = osUser;
  }
  writeFileSync(
    path.join(dir, 'agent.json'),
    JSON.stringify({
      agent: {
        // Of its own: another run of this bench on the machine must not find its agent id taken.
        id: `bench-agent-${process.pid}`,
        slots: cores * 4,
        // Every job is the same user's: let that user have every slot (the default per-user cap is 4, and an
        // offer over the cap goes back to the queue for another agent after a pause).
        maxJobsPerExecutor: cores * 4,
        warmExecutors: 1,
        userMap,
        bus,
        workspaceRoot: path.join(dir, 'workspaces'),
        serverPublicKeyFile: path.join(serverData, 'keys', 'offer-signing.pub'),
      },
    }),
  );
  const agent = daemon([
    'agent',
    '--config',
    path.join(dir, 'agent.json'),
    '--data-dir',
    path.join(dir, 'agent'),
  ]);
  cleanups.unshift(() => agent.stop());
  await agent.ready(`Steward agent bench-agent-${process.pid} is up`);

  const url = `http://127.0.0.1:${port}`;
  const api = async (method, route, token, body) => {
    const response = await fetch(url + route, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body ? { 'content-type': 'application/json' } : {}),
      },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${text}`);
    return text ? JSON.parse(text) : undefined;
  };
  const token = (
    await api('POST', '/api/auth/login', undefined, { user: 'admin', password: 'bench-admin-password' })
  ).token;
  const source = readFileSync(path.join(repoRoot, 'examples/noop.yaml'), 'utf8');
  await api('POST', '/api/workflows', token, { source, fileName: 'noop.yaml' });
  // Jobs are polled gently: a tight poll loop would spend the server's CPU on GETs.
  const waitDone = async (id) => {
    for (;;) {
      const job = await api('GET', `/api/jobs/${id}`, token);
      if (['succeeded', 'failed', 'expired', 'canceled', 'lost'].includes(job.state)) return job;
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const client = { url, token, api: (method, route, body) => api(method, route, token, body) };
  // Warm-up (the user's first job takes on a warm executor; the next few warm the code paths).
  for (let i = 0; i < 5; i++) await runAndTime(client, { workflow: 'noop' });

  const seqLatencies = [];
  const phases = { queueToStep: [], step: [], stepToDone: [], doneToClient: [] };
  for (let i = 0; i < sequential; i++) {
    const { job, done } = await runAndTime(client, { workflow: 'noop' });
    if (job.state !== 'succeeded') throw new Error(`job ${job.id} ${job.state}`);
    seqLatencies.push(done);
    // Where the time goes (ms, server and agent clocks are this machine's): submit → the step starts in the
    // executor → the step ends → the job's end is recorded → the client sees it.
    const detail = await api('GET', `/api/jobs/${job.id}`, token);
    const step = detail.steps?.[0];
    const at = (iso) => Date.parse(iso);
    if (step?.startedAt && step.finishedAt) {
      phases.queueToStep.push(at(step.startedAt) - at(detail.createdAt));
      phases.step.push(at(step.finishedAt) - at(step.startedAt));
      phases.stepToDone.push(at(detail.finishedAt) - at(step.finishedAt));
      phases.doneToClient.push(done - (at(detail.finishedAt) - at(detail.createdAt)));
    }
  }
  // The same, waited for on one jobs stream opened once (see openJobStream): no HTTP request per job but the
  // submit, as Celery's client waits on its one reply queue. Run second, on equally warm code.
  const streamLatencies = [];
  // Where the client's wait goes on that stream: the submit's answer, and the stream's `running`.
  const streamPhases = { answered: [], running: [] };
  const jobStream = await openJobStream(client);
  try {
    for (let i = 0; i < sequential; i++) {
      const { job, done, answered, running } = await jobStream.runAndTime({ workflow: 'noop' });
      if (job.state !== 'succeeded') throw new Error(`job ${job.id} ${job.state}`);
      streamLatencies.push(done);
      streamPhases.answered.push(answered);
      if (running !== undefined) streamPhases.running.push(running);
    }
  } finally {
    jobStream.close();
  }
  const cpuPids = { server: [server.child.pid], agent: [agent.child.pid], broker: pidsNamed('beam.smp') };
  const cpuBefore = Object.fromEntries(Object.entries(cpuPids).map(([k, pids]) => [k, treeCpuMs(pids)]));
  // The agent's own share of its tree (the rest is its executors').
  const agentOwnBefore = ownCpuMs(agent.child.pid);
  const benchCpuBefore = process.cpuUsage();
  const t0 = performance.now();
  const ids =
    batchSize > 0
      ? await submitInBatches()
      : await Promise.all(
          Array.from(
            { length: stewardJobs },
            async () => (await api('POST', '/api/jobs', token, { workflow: 'noop' })).id,
          ),
        );
  // Collected the way a client waits for a batch: the last job submitted is polled until it ends, then one
  // list request reads the states of all (any job still going is polled on its own). Polling each job in
  // turn would spend a good part of the server's time answering the bench.
  await waitDone(ids[ids.length - 1]);
  const listed = new Map(
    (await api('GET', `/api/jobs?limit=${Math.min(1000, stewardJobs + sequential + 10)}`, token)).jobs.map(
      (job) => [job.id, job],
    ),
  );
  const burstJobs = [];
  for (const id of ids) {
    const job = listed.get(id);
    burstJobs.push(
      job && ['succeeded', 'failed', 'expired', 'canceled', 'lost'].includes(job.state)
        ? job
        : await waitDone(id),
    );
  }
  const stewardSeconds = (performance.now() - t0) / 1000;

  async function submitInBatches() {
    const sizes = [];
    for (let i = 0; i < stewardJobs; i += batchSize) sizes.push(Math.min(batchSize, stewardJobs - i));
    const answers = await Promise.all(
      sizes.map((n) =>
        api('POST', '/api/jobs/batch', token, {
          jobs: Array.from({ length: n }, () => ({ workflow: 'noop' })),
        }),
      ),
    );
    return answers.flatMap((answer) =>
      answer.jobs.map((item) => {
        if (!item.job) throw new Error(`a batch item was refused: ${JSON.stringify(item)}`);
        return item.job.id;
      }),
    );
  }
  const cpuMs = Object.fromEntries(
    Object.entries(cpuPids).map(([k, pids]) => [k, (treeCpuMs(pids) - cpuBefore[k]) / stewardJobs]),
  );
  cpuMs.agentOwn = (ownCpuMs(agent.child.pid) - agentOwnBefore) / stewardJobs;
  const benchCpu = process.cpuUsage(benchCpuBefore);
  cpuMs.client = (benchCpu.user + benchCpu.system) / 1000 / stewardJobs;
  const notOk = burstJobs.filter((job) => job.state !== 'succeeded').length;
  const steward = {
    throughput: stewardJobs / stewardSeconds,
    p50: percentile(seqLatencies, 50),
    p99: percentile(seqLatencies, 99),
    streamP50: percentile(streamLatencies, 50),
    streamP99: percentile(streamLatencies, 99),
    failed: notOk,
  };
  const f = (v) => `${v.toFixed(1)}`;
  const p = (values) => `${f(percentile(values, 50))}/${f(percentile(values, 99))}`;
  // Printed now: the Celery half can still fail (e.g. python3-celery missing).
  console.log(`no-op work through RabbitMQ on one machine (${machine()})`);
  console.log(
    `Steward: ${stewardJobs} jobs${batchSize > 0 ? ` submitted in batches of ${batchSize}` : ''}, 1 agent with ${cores * 4} slots, throughput ${f(steward.throughput)} jobs/s; sequential submit→done (SSE) p50 ${f(steward.p50)} ms, p99 ${f(steward.p99)} ms${steward.failed ? `; ${steward.failed} not succeeded` : ''}`,
  );
  console.log(
    `Steward sequential submit→done on one jobs stream opened once (GET /api/jobs/stream, as Celery's client waits on one reply queue): p50 ${f(steward.streamP50)} ms, p99 ${f(steward.streamP99)} ms; of it, p50/p99 (ms since the submit): submit answered ${p(streamPhases.answered)}, running seen ${p(streamPhases.running)} (${streamPhases.running.length} of ${sequential} jobs), end seen ${p(streamLatencies)}`,
  );
  console.log(
    `Steward CPU per job in the burst: server ${f(cpuMs.server)} ms + agent and executors ${f(cpuMs.agent)} ms (agent ${f(cpuMs.agentOwn)}, executors ${f(cpuMs.agent - cpuMs.agentOwn)}) = ${f(cpuMs.server + cpuMs.agent)} ms; broker ${f(cpuMs.broker)} ms; bench client ${f(cpuMs.client)} ms`,
  );
  console.log(
    `Steward phases p50/p99 (ms): submit→step running ${p(phases.queueToStep)}, step ${p(phases.step)}, step end→done recorded ${p(phases.stepToDone)}, recorded→client ${p(phases.doneToClient)}`,
  );
  for (const cleanup of cleanups.splice(0)) await cleanup();
  // Comparing Steward builds back to back (e.g. a checkout against the one before a change) needs only this
  // half: STEWARD_BENCH_ONLY=steward.
  if (process.env.STEWARD_BENCH_ONLY !== 'steward') await celeryAndFloor();
  async function celeryAndFloor() {
    // --- Celery -------------------------------------------------------------------------------------------
    // Twice, on the same broker: as Celery ships (a classic queue; the client publishes without waiting for
    // the broker's confirm; the worker acks a task when it starts it), and configured for the guarantees
    // Steward gives its jobs (publisher confirms, a quorum queue, the ack after the task ran).
    const celeryRuns = [];
    for (const variant of ['default', 'durable']) {
      const result = await runCelery(variant);
      celeryRuns.push(result);
      console.log(
        `Celery ${variant === 'default' ? '(as shipped)' : '(durable: confirms, quorum queue, acks late)'}: ${celeryTasks} tasks, prefork ×${cores}, rpc backend, throughput ${f(result.throughput)} tasks/s; sequential delay().get() p50 ${f(result.p50)} ms, p99 ${f(result.p99)} ms; CPU per task: worker ${f(result.workerCpu)} ms (whole life, start-up included), broker ${f(result.brokerCpu)} ms`,
      );
    }
    for (const [variant, celery] of celeryRuns.map((run, i) => [i === 0 ? 'as shipped' : 'durable', run])) {
      console.log(
        `ratio Steward/Celery (${variant}): throughput ${(steward.throughput / celery.throughput).toFixed(3)}×, p50 latency ${(steward.p50 / celery.p50).toFixed(2)}× (a stream per job) / ${(steward.streamP50 / celery.p50).toFixed(2)}× (one jobs stream), CPU per unit of work (without broker) ${((cpuMs.server + cpuMs.agent) / celery.workerCpu).toFixed(2)}×`,
      );
    }

    // --- The protocol's floor ------------------------------------------------------------------------------
    // What the broker alone allows for the messages Steward's protocol cannot do without, with no Steward
    // code, database, HTTP or executor: a persistent, confirmed offer per job on a quorum queue; the "agent"
    // answers each with a persistent, confirmed event on a quorum queue (the events of one tick as one
    // message, as Steward's agent batches them) and acks the offer after that confirm; the "server" acks the
    // events. Prefetch is generous (1,000). The gap between this and Steward is Steward's own work per job
    // (HTTP submit, database, signing, the executor's fetch and claim, the step), not the broker's.
    const floor = await runFloor(stewardJobs, sequential);
    console.log(
      `protocol floor (amqplib alone: a confirmed persistent offer and event per job on quorum queues, no Steward code): throughput ${f(floor.throughput)} jobs/s; sequential offer→event p50 ${f(floor.p50)} ms, p99 ${f(floor.p99)} ms; broker CPU per job ${floor.brokerCpu.toFixed(2)} ms`,
    );
    const celery = celeryRuns[0];
    console.log(
      `issue 4's goal next to the floor: ≥ 3× Celery's throughput is ${f(3 * celery.throughput)} jobs/s (the floor: ${(floor.throughput / (3 * celery.throughput)).toFixed(2)}× that, Steward: ${(steward.throughput / (3 * celery.throughput)).toFixed(3)}×); p50 below Celery's ${f(celery.p50)} ms (the floor: ${(floor.p50 / celery.p50).toFixed(2)}× it, Steward: ${(steward.p50 / celery.p50).toFixed(2)}×)`,
    );
  }

  async function runFloor(jobs, sequentialJobs) {
    const url = `${brokerUrl}/${encodeURIComponent(vhost)}`;
    // Without TCP_NODELAY (Steward's bus sets it) a lone message waits for the peer's delayed ACK: 40 ms.
    const serverConnection = await amqp.connect(url, { noDelay: true });
    const agentConnection = await amqp.connect(url, { noDelay: true });
    try {
      const serverPublish = await serverConnection.createConfirmChannel();
      const serverConsume = await serverConnection.createChannel();
      const agentPublish = await agentConnection.createConfirmChannel();
      const agentConsume = await agentConnection.createChannel();
      const quorum = { durable: true, arguments: { 'x-queue-type': 'quorum' } };
      await serverPublish.assertQueue('floor-offers', quorum);
      await serverPublish.assertQueue('floor-events', quorum);
      const publish = (channel, queue, body) =>
        new Promise((resolve, reject) =>
          channel.sendToQueue(queue, Buffer.from(JSON.stringify(body)), { persistent: true }, (error) =>
            error ? reject(error) : resolve(),
          ),
        );
      // The agent: an event per offer, a tick's events in one message, each offer acked after its confirm.
      let tick = [];
      await agentConsume.prefetch(1000);
      await agentConsume.consume('floor-offers', (message) => {
        if (!message) return; // the consumer was cancelled
        tick.push(message);
        if (tick.length > 1) return;
        setImmediate(() => {
          const messages = tick;
          tick = [];
          const ids = messages.map((m) => JSON.parse(m.content.toString()).id);
          void publish(agentPublish, 'floor-events', { ids, state: 'succeeded' }).then(() => {
            for (const m of messages) agentConsume.ack(m);
          });
        });
      });
      // The server: waits for each job's event.
      const waiting = new Map();
      await serverConsume.prefetch(1000);
      await serverConsume.consume('floor-events', (message) => {
        if (!message) return;
        for (const id of JSON.parse(message.content.toString()).ids) {
          waiting.get(id)?.();
          waiting.delete(id);
        }
        serverConsume.ack(message);
      });
      let next = 0;
      const job = () => {
        const id = next++;
        const done = new Promise((resolve) => waiting.set(id, resolve));
        return Promise.all([publish(serverPublish, 'floor-offers', { id, payload: 'x'.repeat(600) }), done]);
      };
      for (let i = 0; i < 20; i++) await job();
      const latencies = [];
      for (let i = 0; i < sequentialJobs; i++) {
        const t = performance.now();
        await job();
        latencies.push(performance.now() - t);
      }
      const brokerBefore = treeCpuMs(cpuPids.broker);
      const t = performance.now();
      await Promise.all(Array.from({ length: jobs }, job));
      const seconds = (performance.now() - t) / 1000;
      return {
        throughput: jobs / seconds,
        p50: percentile(latencies, 50),
        p99: percentile(latencies, 99),
        brokerCpu: (treeCpuMs(cpuPids.broker) - brokerBefore) / jobs,
      };
    } finally {
      await serverConnection.close().catch(() => {});
      await agentConnection.close().catch(() => {});
    }
  }

  async function runCelery(variant) {
    const celeryDir = path.join(dir, `celery-${variant}`);
    execFileSync('mkdir', ['-p', celeryDir]);
    const broker = `${brokerUrl}/${vhost}`;
    const queue = `bench-${variant}`;
    const durableConf =
      variant === 'durable'
        ? [
            // Quorum queues refuse a global prefetch, which Celery 5.2 asks for on RabbitMQ; Celery 5.5 turns
            // it off by itself when its queues are quorum queues. The same, by hand:
            'import kombu.transport.pyamqp',
            'kombu.transport.pyamqp.Transport.qos_semantics_matches_spec = lambda self, connection: True',
            "app.conf.broker_transport_options = {'confirm_publish': True}",
            'app.conf.task_acks_late = True',
            `app.conf.task_queues = [Queue(${JSON.stringify(queue)}, durable=True, queue_arguments={'x-queue-type': 'quorum'})]`,
          ]
        : [`app.conf.task_queues = [Queue(${JSON.stringify(queue)})]`];
    writeFileSync(
      path.join(celeryDir, 'benchtasks.py'),
      [
        'from celery import Celery',
        'from kombu import Queue',
        `app = Celery('benchtasks', broker=${JSON.stringify(broker)}, backend='rpc://')`,
        'app.conf.worker_prefetch_multiplier = 64',
        `app.conf.task_default_queue = ${JSON.stringify(queue)}`,
        ...durableConf,
        '',
        '@app.task',
        'def noop():',
        '    return None',
        '',
      ].join('\n'),
    );
    writeFileSync(
      path.join(celeryDir, 'client.py'),
      // The burst's results are collected with join_native, as Celery's documentation advises for many
      // results: get() on each in turn waits in the rpc backend's poll loop and made Celery look 10–60×
      // slower than it is over bursts of a few hundred tasks (9 vs 575 tasks/s for 300 here).
      [
        'import json, sys, time',
        'from celery.result import ResultSet',
        'from benchtasks import noop',
        'n, seq = int(sys.argv[1]), int(sys.argv[2])',
        'noop.delay().get(timeout=60)',
        'lat = []',
        'for _ in range(seq):',
        '    t = time.perf_counter(); noop.delay().get(timeout=60); lat.append((time.perf_counter() - t) * 1000)',
        't = time.perf_counter()',
        'results = [noop.delay() for _ in range(n)]',
        'ResultSet(results).join_native(timeout=300)',
        'print(json.dumps({"seconds": time.perf_counter() - t, "lat": lat}))',
        '',
      ].join('\n'),
    );
    const worker = spawn(
      python,
      [
        '-m',
        'celery',
        '-A',
        'benchtasks',
        'worker',
        '--pool=prefork',
        `--concurrency=${cores}`,
        '--loglevel=WARNING',
        '-Q',
        queue,
      ],
      { cwd: celeryDir, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PYTHONPATH: celeryDir } },
    );
    let workerOutput = '';
    worker.stdout.on('data', (c) => (workerOutput += c));
    worker.stderr.on('data', (c) => (workerOutput += c));
    const stopWorker = async () => {
      worker.kill('SIGTERM');
      await new Promise((r) => (worker.exitCode !== null ? r() : worker.once('exit', r)));
    };
    try {
      // The client starts Python and imports Celery before timing; the worker's CPU is counted over its
      // whole life here (start-up included), so Celery's CPU per task is if anything overstated.
      const brokerCpuBefore = treeCpuMs(cpuPids.broker);
      let out;
      try {
        out = execFileSync(
          python,
          [path.join(celeryDir, 'client.py'), String(celeryTasks), String(sequential)],
          { cwd: celeryDir, env: { ...process.env, PYTHONPATH: celeryDir }, timeout: 600_000 },
        ).toString();
      } catch (error) {
        throw new Error(`Celery (${variant}) failed: ${error.message}\nworker:\n${workerOutput}`);
      }
      const celeryResult = JSON.parse(out.trim().split('\n').pop());
      return {
        throughput: celeryTasks / celeryResult.seconds,
        p50: percentile(celeryResult.lat, 50),
        p99: percentile(celeryResult.lat, 99),
        workerCpu: treeCpuMs([worker.pid]) / (celeryTasks + sequential + 1),
        brokerCpu: (treeCpuMs(cpuPids.broker) - brokerCpuBefore) / (celeryTasks + sequential + 1),
      };
    } finally {
      await stopWorker();
    }
  }
} finally {
  for (const cleanup of cleanups) await cleanup().catch(() => {});
  if (osUser) {
    try {
      execFileSync('pkill', ['-KILL', '-u', osUser]);
    } catch {
      /* none left */
    }
    try {
      execFileSync('userdel', ['-r', '-f', osUser], { stdio: 'ignore' });
    } catch {
      /* gone */
    }
  }
  execFileSync('rabbitmqctl', ['-q', 'delete_vhost', vhost]);
  rmSync(dir, { recursive: true, force: true });
}

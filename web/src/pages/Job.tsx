/**
 * One job: its state and step graph updated live from `GET /api/jobs/:id/events` (snapshot, job, step,
 * log, end), live logs of the chosen step, cancel and run again, the error with its failing step, inputs
 * and results.
 */
import { useMemo, useState } from 'react';
import { api, ApiError, encode } from '../api.js';
import { Dag, type DagStep } from '../components/Dag.js';
import {
  ErrorNote,
  formatDuration,
  Loading,
  PageTitle,
  StateBadge,
  Time,
  formatBytes,
} from '../components/common.js';
import { LogView } from '../components/LogView.js';
import { Results } from '../components/Results.js';
import { useLoad } from '../hooks.js';
import { JobLogs } from '../logs.js';
import { Link, navigate, useTitle } from '../router.js';
import { useEventStream } from '../sse.js';
import {
  terminalStates,
  type Job,
  type JobDetail,
  type LogChunk,
  type StepInfo,
  type Workflow,
} from '../types.js';

type Detail = JobDetail;

function mergeStep(detail: Detail, step: StepInfo): Detail {
  const steps = detail.steps.some((s) => s.id === step.id)
    ? detail.steps.map((s) => (s.id === step.id ? step : s))
    : [...detail.steps, step];
  return { ...detail, steps };
}

function Actions({ detail, onChanged }: { detail: Detail; onChanged: () => void }) {
  const [error, setError] = useState<unknown>(undefined);
  const [busy, setBusy] = useState(false);
  const ended = terminalStates.has(detail.state);
  const act = async (what: 'cancel' | 'rerun') => {
    setBusy(true);
    setError(undefined);
    try {
      const job = await api<Job>(`/api/jobs/${encode(detail.id)}/${what}`, { method: 'POST' });
      if (what === 'rerun') navigate(`/jobs/${encodeURIComponent(job.id)}`);
      else onChanged();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="actions">
      {!ended ? (
        <button type="button" className="danger" disabled={busy} onClick={() => void act('cancel')}>
          Cancel job
        </button>
      ) : null}
      <button type="button" disabled={busy} onClick={() => void act('rerun')}>
        Run again
      </button>
      <ErrorNote error={error} />
    </div>
  );
}

function Steps({
  detail,
  selected,
  onSelect,
}: {
  detail: Detail;
  selected: string;
  onSelect: (id: string) => void;
}) {
  return (
    <table className="steps">
      <caption className="sr-only">Steps</caption>
      <thead>
        <tr>
          <th scope="col">Step</th>
          <th scope="col">Kind</th>
          <th scope="col">State</th>
          <th scope="col">Duration</th>
          <th scope="col">Rows</th>
          <th scope="col">Message</th>
          <th scope="col">Logs</th>
        </tr>
      </thead>
      <tbody>
        {detail.steps.map((step) => (
          <tr key={step.id} data-step-row={step.id} className={step.id === selected ? 'selected' : ''}>
            <th scope="row">{step.id}</th>
            <td>{step.kind}</td>
            <td>
              <StateBadge state={step.state} />
            </td>
            <td>{formatDuration(step.durationMs)}</td>
            <td>{step.rows ?? '—'}</td>
            <td className="message">{step.message ?? ''}</td>
            <td>
              <button type="button" aria-pressed={step.id === selected} onClick={() => onSelect(step.id)}>
                Logs of {step.id}
              </button>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function JobPage({ id }: { id: string }) {
  useTitle(`Job ${id}`);
  const [detail, setDetail] = useState<Detail | undefined>(undefined);
  const [chosen, setChosen] = useState<string | undefined>(undefined);
  const [stream, setStream] = useState<'stdout' | 'stderr'>('stdout');
  const logs = useMemo(() => new JobLogs(id), [id]);
  // The first read gives the API's own error (404 for a job you may not see) in words.
  const first = useLoad(async () => {
    const job = await api<Detail>(`/api/jobs/${encode(id)}`);
    setDetail((current) => current ?? job);
    return job;
  }, [id]);
  const ready = first.data !== undefined;
  const [streamDone, setStreamDone] = useState(false);
  useEventStream(
    ready && !streamDone ? `/api/jobs/${encode(id)}/events` : null,
    {
      snapshot: (data) => setDetail(data as Detail),
      job: (data) => setDetail((d) => (d ? { ...d, ...(data as Job), workflow: d.workflow } : d)),
      step: (data) => setDetail((d) => (d ? mergeStep(d, data as StepInfo) : d)),
      log: (data) => logs.push(data as LogChunk),
      end: (data) => {
        setDetail(data as Detail);
        setStreamDone(true);
      },
    },
    ['end'],
  );
  const workflowRef = detail?.workflow;
  const graph = useLoad(async () => {
    if (!workflowRef) return undefined;
    const { space, name, version } = workflowRef;
    return api<Workflow>(`/api/spaces/${encode(space)}/workflows/${encode(name)}/versions/${version}`);
  }, [workflowRef?.space, workflowRef?.name, workflowRef?.version]);

  if (!detail) {
    return (
      <section>
        <PageTitle>Job {id}</PageTitle>
        {first.error ? (
          <ErrorNote error={first.error} title="Cannot show this job" />
        ) : (
          <Loading what="the job" />
        )}
      </section>
    );
  }
  const dagSteps: DagStep[] =
    graph.data?.steps ?? detail.steps.map((s) => ({ id: s.id, kind: s.kind, needs: [] }));
  const failing = detail.steps.find((s) => s.state === 'failed');
  const running = detail.steps.find((s) => s.state === 'running');
  const selected = chosen ?? failing?.id ?? running?.id ?? detail.steps[0]?.id ?? '';
  const ended = terminalStates.has(detail.state);
  const selectedState = detail.steps.find((s) => s.id === selected)?.state;
  const selectedEnded =
    ended || (selectedState !== undefined && !['pending', 'running'].includes(selectedState));
  const graphError = graph.error instanceof ApiError && graph.error.status === 404 ? undefined : graph.error;
  return (
    <section>
      <PageTitle>
        Job {detail.id} <StateBadge state={detail.state} />
      </PageTitle>
      <dl className="facts">
        <dt>Workflow</dt>
        <dd>
          <Link href={`/workflows/${encode(detail.workflow.space)}/${encode(detail.workflow.name)}`}>
            {detail.workflow.space}/{detail.workflow.name}
          </Link>{' '}
          version {detail.workflow.version}
          {detail.workflow.pushedBy ? ` (pushed by ${detail.workflow.pushedBy})` : ''}
        </dd>
        <dt>User</dt>
        <dd>{detail.user}</dd>
        <dt>Created</dt>
        <dd>
          <Time iso={detail.createdAt} />
        </dd>
        <dt>Started</dt>
        <dd>
          <Time iso={detail.startedAt} />
        </dd>
        <dt>Finished</dt>
        <dd>
          <Time iso={detail.finishedAt} />
        </dd>
        <dt>Attempts</dt>
        <dd>
          {detail.attempt}
          {detail.attempts.length > 1
            ? ` (${detail.attempts.map((a) => `#${a.attempt} ${a.state}${a.error ? `: ${a.error.code}` : ''}`).join('; ')})`
            : ''}
        </dd>
        {detail.executor ? (
          <>
            <dt>Ran as</dt>
            <dd>
              {detail.executor.osUser} (uid {detail.executor.uid}) on {detail.agentId}
            </dd>
          </>
        ) : null}
      </dl>
      <Actions detail={detail} onChanged={() => setStreamDone(false)} />
      {detail.error ? (
        <div className="error job-error" role="alert">
          <strong>
            The job {detail.state}
            {failing ? ` at step ${failing.id}` : ''}:
          </strong>{' '}
          <span className="error-message">{detail.error.message}</span>{' '}
          <code className="error-code">{detail.error.code}</code>
        </div>
      ) : null}
      <h2>Params</h2>
      {Object.keys(detail.params).length === 0 ? (
        <p className="muted">None.</p>
      ) : (
        <dl className="facts">
          {Object.entries(detail.params).map(([key, value]) => (
            <div key={key}>
              <dt>{key}</dt>
              <dd>{String(value)}</dd>
            </div>
          ))}
        </dl>
      )}
      {detail.inputs?.length ? (
        <>
          <h2>Input files</h2>
          <ul>
            {detail.inputs.map((input) => (
              <li key={input.param}>
                {input.param}:{' '}
                <a
                  href={`/api/jobs/${encode(detail.id)}/inputs/${encode(input.param)}`}
                  download={input.name}
                >
                  {input.name}
                </a>{' '}
                ({formatBytes(input.size)})
              </li>
            ))}
          </ul>
        </>
      ) : null}
      <h2>Steps</h2>
      <ErrorNote error={graphError} title="Could not read the step graph" />
      <Dag steps={dagSteps} states={detail.steps} label="Step graph" />
      <Steps detail={detail} selected={selected} onSelect={setChosen} />
      {selected ? (
        <section aria-labelledby="logs-heading">
          <h2 id="logs-heading">
            Logs of {selected}
            {ended ? '' : ' (live)'}
          </h2>
          <div role="group" aria-label="Stream" className="tabs">
            {(['stdout', 'stderr'] as const).map((s) => (
              <button key={s} type="button" aria-pressed={stream === s} onClick={() => setStream(s)}>
                {s}
              </button>
            ))}
            <a
              href={`/api/jobs/${encode(detail.id)}/logs/${encode(selected)}/${stream}`}
              download={`${selected}.${stream}.log`}
            >
              Download the whole {stream}
            </a>
          </div>
          <LogView
            buffer={logs.get(selected, stream, selectedEnded)}
            label={`${stream} of step ${selected}`}
          />
        </section>
      ) : null}
      {ended ? <Results jobId={detail.id} /> : null}
    </section>
  );
}

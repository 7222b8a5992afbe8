/**
 * Schedules: yours (admins may show everyone's), with their next run times, the last run and why a run did
 * not fire; pause, resume and delete; and a form to add one.
 */
import { useId, useState, type FormEvent } from 'react';
import { api, encode } from '../api.js';
import { ErrorNote, Loading, PageTitle, Time } from '../components/common.js';
import { useLoad } from '../hooks.js';
import { Link, useTitle } from '../router.js';
import { isAdmin, useSession } from '../session.js';
import type { Schedule } from '../types.js';

export function SchedulesPage() {
  useTitle('Schedules');
  const { session } = useSession();
  const [all, setAll] = useState(false);
  const [actionError, setActionError] = useState<unknown>(undefined);
  const data = useLoad(
    () => api<{ schedules: Schedule[] }>('/api/schedules', { query: { all: all ? 'true' : undefined } }),
    [all],
  );
  const act = async (schedule: Schedule, action: 'pause' | 'resume' | 'delete') => {
    setActionError(undefined);
    try {
      const path = `/api/schedules/${encode(schedule.id)}`;
      if (action === 'delete') await api(path, { method: 'DELETE' });
      else await api(`${path}/${action}`, { method: 'POST' });
      data.reload();
    } catch (error) {
      setActionError(error);
    }
  };
  const schedules = data.data?.schedules;
  return (
    <section>
      <PageTitle>Schedules</PageTitle>
      <p className="muted">
        A schedule runs a workflow as its owner, with the owner&apos;s rights at each run, on a cron
        expression in a time zone.
      </p>
      {isAdmin(session) ? (
        <label>
          <input type="checkbox" checked={all} onChange={(event) => setAll(event.target.checked)} /> Show
          every user&apos;s schedules
        </label>
      ) : null}
      <ErrorNote error={data.error} title="Could not list schedules" />
      <ErrorNote error={actionError} title="Refused" />
      {!schedules && data.loading ? <Loading what="schedules" /> : null}
      {schedules && schedules.length === 0 ? <p className="muted">No schedules yet.</p> : null}
      {schedules?.length ? (
        <table>
          <caption className="sr-only">Schedules</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Workflow</th>
              <th scope="col">When</th>
              <th scope="col">State</th>
              <th scope="col">Next runs</th>
              <th scope="col">Last run</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {schedules.map((schedule) => (
              <ScheduleRow
                key={schedule.id}
                schedule={schedule}
                onAction={(action) => void act(schedule, action)}
              />
            ))}
          </tbody>
        </table>
      ) : null}
      <details>
        <summary>Add a schedule</summary>
        <AddScheduleForm onAdded={() => data.reload()} />
      </details>
    </section>
  );
}

function ScheduleRow({
  schedule,
  onAction,
}: {
  schedule: Schedule;
  onAction: (action: 'pause' | 'resume' | 'delete') => void;
}) {
  return (
    <tr>
      <th scope="row">
        {schedule.name}
        <div className="muted">{schedule.owner}</div>
      </th>
      <td>{schedule.workflow}</td>
      <td>
        <code>{schedule.cron}</code> <span className="muted">{schedule.timeZone}</span>
        <div className="muted">
          misfire {schedule.misfire}, overlap {schedule.overlap}
        </div>
      </td>
      <td>
        {schedule.paused ? 'paused' : 'active'}
        {schedule.pausedReason ? <div className="muted">{schedule.pausedReason}</div> : null}
      </td>
      <td>
        {schedule.nextRuns.length ? (
          <ul className="plain">
            {schedule.nextRuns.map((run) => (
              <li key={run}>
                <Time iso={run} />
              </li>
            ))}
          </ul>
        ) : (
          '—'
        )}
      </td>
      <td>
        {schedule.lastJobId ? (
          <Link href={`/jobs/${encode(schedule.lastJobId)}`}>
            <Time iso={schedule.lastFiredAt} />
          </Link>
        ) : (
          '—'
        )}
        {schedule.lastError ? (
          <div className="error-message">
            {schedule.lastError.message} <code>{schedule.lastError.code}</code>
          </div>
        ) : null}
      </td>
      <td>
        <button
          type="button"
          onClick={() => onAction(schedule.paused ? 'resume' : 'pause')}
          aria-label={`${schedule.paused ? 'Resume' : 'Pause'} ${schedule.name}`}
        >
          {schedule.paused ? 'Resume' : 'Pause'}
        </button>{' '}
        <button type="button" onClick={() => onAction('delete')} aria-label={`Delete ${schedule.name}`}>
          Delete
        </button>
      </td>
    </tr>
  );
}

/** `key=value` per line: the schedule's fixed params (converted by the workflow's param types). */
function parseParams(text: string): Record<string, string> {
  const params: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (!trimmed) continue;
    const equals = trimmed.indexOf('=');
    if (equals <= 0) throw new Error(`expected key=value, got "${trimmed}"`);
    params[trimmed.slice(0, equals).trim()] = trimmed.slice(equals + 1).trim();
  }
  return params;
}

function AddScheduleForm({ onAdded }: { onAdded: () => void }) {
  const id = useId();
  const [form, setForm] = useState({
    name: '',
    workflow: '',
    cron: '0 2 * * *',
    timeZone: Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC',
    params: '',
    misfire: 'catch-up',
    overlap: 'skip',
  });
  const [error, setError] = useState<unknown>(undefined);
  const [added, setAdded] = useState<Schedule | undefined>(undefined);
  const field = (name: keyof typeof form) => ({
    id: `${id}-${name}`,
    value: form[name],
    onChange: (event: { target: { value: string } }) => setForm({ ...form, [name]: event.target.value }),
  });
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setError(undefined);
    setAdded(undefined);
    try {
      const { params, ...rest } = form;
      const schedule = await api<Schedule>('/api/schedules', {
        method: 'POST',
        json: { ...rest, params: parseParams(params) },
      });
      setAdded(schedule);
      onAdded();
    } catch (err) {
      setError(err);
    }
  };
  return (
    <form className="schedule-form" onSubmit={(event) => void submit(event)}>
      <label htmlFor={`${id}-name`}>Name</label>
      <input required {...field('name')} />
      <label htmlFor={`${id}-workflow`}>Workflow ([space/]name[@version])</label>
      <input required {...field('workflow')} />
      <label htmlFor={`${id}-cron`}>Cron expression</label>
      <input required {...field('cron')} />
      <label htmlFor={`${id}-timeZone`}>Time zone</label>
      <input required {...field('timeZone')} />
      <label htmlFor={`${id}-params`}>Params (key=value, one per line)</label>
      <textarea rows={3} {...field('params')} />
      <label htmlFor={`${id}-misfire`}>After downtime</label>
      <select {...field('misfire')}>
        <option value="catch-up">catch up once</option>
        <option value="skip">skip</option>
      </select>
      <label htmlFor={`${id}-overlap`}>While the previous run is still running</label>
      <select {...field('overlap')}>
        <option value="skip">skip</option>
        <option value="queue">queue one</option>
        <option value="allow">allow</option>
      </select>
      <button type="submit">Add schedule</button>
      {added ? <p role="status">Added schedule {added.name}.</p> : null}
      <ErrorNote error={error} title="Schedule refused" />
    </form>
  );
}

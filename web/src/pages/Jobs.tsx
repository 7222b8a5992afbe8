/**
 * Your jobs (admins: everyone's), newest first, with filters and keyset paging (`next` cursors), updated
 * live from `GET /api/jobs/stream` without a reload.
 */
import { useState, type FormEvent } from 'react';
import { api } from '../api.js';
import { ErrorNote, Loading, PageTitle, Pager, StateBadge, Time } from '../components/common.js';
import { useLoad } from '../hooks.js';
import { Link, useTitle } from '../router.js';
import { isAdmin, useSession } from '../session.js';
import { useEventStream } from '../sse.js';
import type { Job, JobPage } from '../types.js';
import { jobStates } from '../../../src/protocol/state-names.js';

const PAGE = 25;

interface Filters {
  state: string;
  workflow: string;
  user: string;
  since: string;
  until: string;
}
const noFilters: Filters = { state: '', workflow: '', user: '', since: '', until: '' };

function toIso(local: string): string | undefined {
  if (!local) return undefined;
  const date = new Date(local);
  return Number.isNaN(date.getTime()) ? undefined : date.toISOString();
}

function matches(job: Job, filters: Filters): boolean {
  if (filters.state && job.state !== filters.state) return false;
  if (filters.workflow && job.workflow.name !== filters.workflow) return false;
  if (filters.user && job.user !== filters.user) return false;
  const since = toIso(filters.since);
  const until = toIso(filters.until);
  if (since && job.createdAt < since) return false;
  if (until && job.createdAt > until) return false;
  return true;
}

export function JobsPage() {
  useTitle('Jobs');
  const { session } = useSession();
  const admin = isAdmin(session);
  const [filters, setFilters] = useState<Filters>(noFilters);
  const [draft, setDraft] = useState<Filters>(noFilters);
  // Cursors of the pages before this one: "Newer" pops, "Older" pushes `next`.
  const [cursors, setCursors] = useState<string[]>([]);
  const before = cursors[cursors.length - 1];
  const [live, setLive] = useState<Map<string, Job>>(new Map());
  const [fresh, setFresh] = useState<Job[]>([]);

  const page = useLoad(async () => {
    const answer = await api<JobPage>('/api/jobs', {
      query: {
        state: filters.state,
        workflow: filters.workflow,
        user: admin ? filters.user : undefined,
        since: toIso(filters.since),
        until: toIso(filters.until),
        limit: PAGE,
        before,
      },
    });
    setLive(new Map());
    setFresh([]);
    return answer;
  }, [JSON.stringify(filters), before]);

  useEventStream('/api/jobs/stream', {
    // Changes may have been missed (the server's own queue overflowed): read the page again.
    resync: () => page.reload(),
    job: (data) => {
      const job = data as Job;
      setLive((old) => new Map(old).set(job.id, job));
      const known = page.data?.jobs.some((j) => j.id === job.id);
      if (!known && before === undefined && matches(job, filters)) {
        setFresh((old) => [job, ...old.filter((j) => j.id !== job.id)].slice(0, PAGE));
      }
    },
  });

  const apply = (event: FormEvent) => {
    event.preventDefault();
    setCursors([]);
    setFilters(draft);
  };
  const field = (key: keyof Filters) => ({
    value: draft[key],
    onChange: (e: { target: { value: string } }) => setDraft({ ...draft, [key]: e.target.value }),
  });

  const rows = [...fresh, ...(page.data?.jobs ?? [])].map((job) => live.get(job.id) ?? job);
  return (
    <section>
      <PageTitle>{admin ? 'All jobs' : 'Your jobs'}</PageTitle>
      <form className="filters" onSubmit={apply} aria-label="Filter jobs">
        <div>
          <label htmlFor="f-state">State</label>
          <select id="f-state" {...field('state')}>
            <option value="">any</option>
            {jobStates.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </div>
        <div>
          <label htmlFor="f-workflow">Workflow</label>
          <input id="f-workflow" {...field('workflow')} placeholder="name" />
        </div>
        {admin ? (
          <div>
            <label htmlFor="f-user">User</label>
            <input id="f-user" {...field('user')} />
          </div>
        ) : null}
        <div>
          <label htmlFor="f-since">Created from</label>
          <input id="f-since" type="datetime-local" {...field('since')} />
        </div>
        <div>
          <label htmlFor="f-until">Created until</label>
          <input id="f-until" type="datetime-local" {...field('until')} />
        </div>
        <button type="submit">Apply filters</button>
        <button
          type="button"
          onClick={() => {
            setDraft(noFilters);
            setFilters(noFilters);
            setCursors([]);
          }}
        >
          Clear
        </button>
      </form>
      <ErrorNote error={page.error} title="Could not list jobs" />
      {page.loading && !page.data ? <Loading what="jobs" /> : null}
      <table className="jobs">
        <caption className="sr-only">Jobs, newest first</caption>
        <thead>
          <tr>
            <th scope="col">Job</th>
            <th scope="col">Workflow</th>
            {admin ? <th scope="col">User</th> : null}
            <th scope="col">State</th>
            <th scope="col">Created</th>
            <th scope="col">Finished</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((job) => (
            <tr key={job.id} data-job={job.id}>
              <td>
                <Link href={`/jobs/${encodeURIComponent(job.id)}`}>{job.id}</Link>
              </td>
              <td>
                {job.workflow.space}/{job.workflow.name}@{job.workflow.version}
              </td>
              {admin ? <td>{job.user}</td> : null}
              <td>
                <StateBadge state={job.state} />
              </td>
              <td>
                <Time iso={job.createdAt} />
              </td>
              <td>
                <Time iso={job.finishedAt} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {page.data && rows.length === 0 ? <p className="muted">No jobs match.</p> : null}
      <Pager cursors={cursors} next={page.data?.next} onChange={setCursors} />
    </section>
  );
}

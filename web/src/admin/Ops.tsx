/** Admin pages: tokens, agents (executors per user, drain and resume), the audit log with filters. */
import { useState } from 'react';
import { api, encode } from '../api.js';
import { ErrorNote, formatBytes, formatDuration, Loading, Pager, Time } from '../components/common.js';
import { useLoad } from '../hooks.js';
import type { Agent, AuditPage, NewToken, Token } from '../types.js';
import { ActionButton, ActionForm } from './forms.js';

export function TokensAdmin() {
  const [user, setUser] = useState('');
  const [shown, setShown] = useState('');
  const tokens = useLoad(() => api<{ tokens: Token[] }>('/api/tokens', { query: { user: shown } }), [shown]);
  const [name, setName] = useState('');
  const [created, setCreated] = useState<NewToken | undefined>(undefined);
  return (
    <>
      <ActionForm label="Show tokens" submit={async () => setShown(user)}>
        <label htmlFor="t-user">User (empty: yours)</label>
        <input id="t-user" value={user} onChange={(e) => setUser(e.target.value)} />
      </ActionForm>
      <ActionForm
        label="Create token"
        submit={async () => {
          setCreated(await api<NewToken>('/api/tokens', { method: 'POST', json: { name } }));
          tokens.reload();
        }}
      >
        <label htmlFor="t-name">New token name</label>
        <input id="t-name" value={name} onChange={(e) => setName(e.target.value)} />
      </ActionForm>
      {created ? (
        <p role="status" className="notice">
          Token {created.name}: <code className="secret">{created.token}</code> — copy it now; it is not shown
          again.
        </p>
      ) : null}
      <ErrorNote error={tokens.error} />
      {tokens.data ? (
        <table>
          <caption className="sr-only">Tokens</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">User</th>
              <th scope="col">Created</th>
              <th scope="col">Expires</th>
              <th scope="col">Last used</th>
              <th scope="col">Action</th>
            </tr>
          </thead>
          <tbody>
            {tokens.data.tokens.map((t) => (
              <tr key={t.id}>
                <td>{t.name}</td>
                <td>{t.user ?? ''}</td>
                <td>
                  <Time iso={t.createdAt} />
                </td>
                <td>
                  <Time iso={t.expiresAt} />
                </td>
                <td>
                  <Time iso={t.lastUsedAt} />
                </td>
                <td>
                  <ActionButton
                    label={`Revoke ${t.name}`}
                    run={() => api(`/api/tokens/${encode(t.id)}`, { method: 'DELETE' })}
                    done={tokens.reload}
                  />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : (
        <Loading what="tokens" />
      )}
    </>
  );
}

export function AgentsAdmin() {
  const agents = useLoad(() => api<{ agents: Agent[] }>('/api/agents'), []);
  return (
    <>
      <ErrorNote error={agents.error} />
      {!agents.data ? <Loading what="agents" /> : null}
      {agents.data && agents.data.agents.length === 0 ? <p className="muted">No agent is alive.</p> : null}
      {agents.data?.agents.map((a) => (
        <section key={a.id} className="agent" aria-labelledby={`agent-${a.id}`}>
          <h2 id={`agent-${a.id}`}>
            {a.id}{' '}
            <span className="muted">
              {a.state === 'offline' ? 'offline' : a.draining ? 'draining' : 'taking jobs'}
            </span>
          </h2>
          <p>
            Capacity {a.capacity.slots} slots, {a.capacity.free} free · {a.isolation} · labels{' '}
            {a.labels.join(', ') || 'none'} · last seen <Time iso={a.lastSeen} />
          </p>
          <ActionButton
            label={`${a.draining ? 'Resume' : 'Drain'} ${a.id}`}
            run={() =>
              api(`/api/agents/${encode(a.id)}/${a.draining ? 'resume' : 'drain'}`, { method: 'POST' })
            }
            done={agents.reload}
          />
          <table>
            <caption>Executors of {a.id}</caption>
            <thead>
              <tr>
                <th scope="col">User</th>
                <th scope="col">uid</th>
                <th scope="col">pid</th>
                <th scope="col">Running jobs</th>
                <th scope="col">Idle for</th>
                <th scope="col">Memory</th>
              </tr>
            </thead>
            <tbody>
              {a.executors.map((e) => (
                <tr key={e.pid}>
                  <td>{e.user}</td>
                  <td>{e.uid}</td>
                  <td>{e.pid}</td>
                  <td>{e.jobs}</td>
                  <td>{e.idleSinceMs === null ? 'busy' : formatDuration(Date.now() - e.idleSinceMs)}</td>
                  <td>{e.rssBytes === null ? '—' : formatBytes(e.rssBytes)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      ))}
    </>
  );
}

interface AuditFilters {
  actor: string;
  action: string;
  target: string;
  since: string;
  until: string;
}

export function AuditAdmin() {
  const empty: AuditFilters = { actor: '', action: '', target: '', since: '', until: '' };
  const [draft, setDraft] = useState<AuditFilters>(empty);
  const [filters, setFilters] = useState<AuditFilters>(empty);
  const [cursors, setCursors] = useState<number[]>([]);
  const before = cursors[cursors.length - 1];
  const iso = (local: string) => (local ? new Date(local).toISOString() : undefined);
  const page = useLoad(
    () =>
      api<AuditPage>('/api/audit', {
        query: { ...filters, since: iso(filters.since), until: iso(filters.until), limit: 50, before },
      }),
    [JSON.stringify(filters), before],
  );
  const input = (key: keyof AuditFilters, label: string, type = 'text') => (
    <>
      <label htmlFor={`a-${key}`}>{label}</label>
      <input
        id={`a-${key}`}
        type={type}
        value={draft[key]}
        onChange={(e) => setDraft({ ...draft, [key]: e.target.value })}
      />
    </>
  );
  return (
    <>
      <ActionForm
        label="Apply filters"
        submit={async () => {
          setCursors([]);
          setFilters(draft);
        }}
      >
        {input('actor', 'Actor')}
        {input('action', 'Action')}
        {input('target', 'Target')}
        {input('since', 'From', 'datetime-local')}
        {input('until', 'Until', 'datetime-local')}
      </ActionForm>
      <ErrorNote error={page.error} />
      {page.data ? (
        <table>
          <caption className="sr-only">Audit entries, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">Actor</th>
              <th scope="col">Action</th>
              <th scope="col">Target</th>
              <th scope="col">Source</th>
              <th scope="col">Detail</th>
            </tr>
          </thead>
          <tbody>
            {page.data.entries.map((e) => (
              <tr key={e.id}>
                <td>
                  <Time iso={e.time} />
                </td>
                <td>{e.actor}</td>
                <td>{e.action}</td>
                <td>{e.target ?? ''}</td>
                <td>{e.source ?? ''}</td>
                <td className="detail">{e.detail ? JSON.stringify(e.detail) : ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : (
        <Loading what="the audit log" />
      )}
      <Pager cursors={cursors} next={page.data?.next} onChange={setCursors} />
    </>
  );
}

/** Admin pages (a chunk of its own, loaded only for admins): users, groups, spaces with members. */
import { useState, type ReactNode } from 'react';
import { api, encode } from '../api.js';
import { ErrorNote, Loading, PageTitle, Time } from '../components/common.js';
import { useLoad } from '../hooks.js';
import { useTitle } from '../router.js';
import type { Group, Space, SpaceWithMembers, User } from '../types.js';
import { ActionButton, ActionForm } from './forms.js';
import { AgentsAdmin, AuditAdmin, TokensAdmin } from './Ops.js';

function UsersAdmin() {
  const users = useLoad(() => api<{ users: User[] }>('/api/users'), []);
  const [name, setName] = useState('');
  const [password, setPassword] = useState('');
  const [role, setRole] = useState('user');
  return (
    <>
      <ActionForm
        label="Add user"
        submit={async () => {
          await api('/api/users', { method: 'POST', json: { name, password, role } });
          users.reload();
        }}
      >
        <label htmlFor="u-name">Name</label>
        <input id="u-name" value={name} onChange={(e) => setName(e.target.value)} />
        <label htmlFor="u-password">Password</label>
        <input
          id="u-password"
          type="password"
          autoComplete="new-password"
          value={password}
          onChange={(e) => setPassword(e.target.value)}
        />
        <label htmlFor="u-role">Role</label>
        <select id="u-role" value={role} onChange={(e) => setRole(e.target.value)}>
          <option value="user">user</option>
          <option value="admin">admin</option>
        </select>
      </ActionForm>
      <ErrorNote error={users.error} />
      {users.data ? (
        <table>
          <caption className="sr-only">Users</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Role</th>
              <th scope="col">Source</th>
              <th scope="col">Created</th>
              <th scope="col">Status</th>
              <th scope="col">Action</th>
            </tr>
          </thead>
          <tbody>
            {users.data.users.map((u) => (
              <tr key={u.name}>
                <td>{u.name}</td>
                <td>{u.role}</td>
                <td>{u.source}</td>
                <td>
                  <Time iso={u.createdAt} />
                </td>
                <td>{u.disabled ? 'disabled' : 'active'}</td>
                <td>
                  <ActionButton
                    label={`${u.disabled ? 'Enable' : 'Disable'} ${u.name}`}
                    run={() =>
                      api(`/api/users/${encode(u.name)}/${u.disabled ? 'enable' : 'disable'}`, {
                        method: 'POST',
                      })
                    }
                    done={users.reload}
                  />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : (
        <Loading what="users" />
      )}
    </>
  );
}

function GroupsAdmin() {
  const groups = useLoad(() => api<{ groups: Group[] }>('/api/groups'), []);
  const [name, setName] = useState('');
  const [group, setGroup] = useState('');
  const [member, setMember] = useState('');
  return (
    <>
      <ActionForm
        label="Create group"
        submit={async () => {
          await api('/api/groups', { method: 'POST', json: { name } });
          groups.reload();
        }}
      >
        <label htmlFor="g-name">Group name</label>
        <input id="g-name" value={name} onChange={(e) => setName(e.target.value)} />
      </ActionForm>
      <ActionForm
        label="Add member"
        submit={async () => {
          await api(`/api/groups/${encode(group)}/members/${encode(member)}`, { method: 'PUT' });
          groups.reload();
        }}
      >
        <label htmlFor="g-group">Group</label>
        <input id="g-group" value={group} onChange={(e) => setGroup(e.target.value)} />
        <label htmlFor="g-member">User</label>
        <input id="g-member" value={member} onChange={(e) => setMember(e.target.value)} />
      </ActionForm>
      <ErrorNote error={groups.error} />
      {groups.data ? (
        <table>
          <caption className="sr-only">Groups</caption>
          <thead>
            <tr>
              <th scope="col">Group</th>
              <th scope="col">Description</th>
              <th scope="col">Members</th>
              <th scope="col">Created by</th>
            </tr>
          </thead>
          <tbody>
            {groups.data.groups.map((g) => (
              <tr key={g.name}>
                <td>{g.name}</td>
                <td>{g.description}</td>
                <td>{g.members.join(', ') || '—'}</td>
                <td>{g.createdBy}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : (
        <Loading what="groups" />
      )}
    </>
  );
}

function SpaceMembers({ space }: { space: string }) {
  const detail = useLoad(() => api<SpaceWithMembers>(`/api/spaces/${encode(space)}`), [space]);
  const [kind, setKind] = useState('user');
  const [name, setName] = useState('');
  const [role, setRole] = useState('viewer');
  if (detail.error) return <ErrorNote error={detail.error} />;
  if (!detail.data) return <Loading what="members" />;
  return (
    <div>
      <ul>
        {detail.data.members.map((m) => (
          <li key={`${m.kind}:${m.name}`}>
            {m.kind} {m.name}: {m.role}{' '}
            <ActionButton
              label={`Remove ${m.name}`}
              run={() =>
                api(`/api/spaces/${encode(space)}/members`, {
                  method: 'DELETE',
                  query: { kind: m.kind, name: m.name },
                })
              }
              done={detail.reload}
            />
          </li>
        ))}
      </ul>
      {detail.data.kind === 'shared' ? (
        <ActionForm
          label={`Add member to ${space}`}
          submit={async () => {
            await api(`/api/spaces/${encode(space)}/members`, { method: 'PUT', json: { kind, name, role } });
            detail.reload();
          }}
        >
          <label htmlFor={`m-kind-${space}`}>Kind</label>
          <select id={`m-kind-${space}`} value={kind} onChange={(e) => setKind(e.target.value)}>
            <option value="user">user</option>
            <option value="group">group</option>
          </select>
          <label htmlFor={`m-name-${space}`}>Name</label>
          <input id={`m-name-${space}`} value={name} onChange={(e) => setName(e.target.value)} />
          <label htmlFor={`m-role-${space}`}>Role</label>
          <select id={`m-role-${space}`} value={role} onChange={(e) => setRole(e.target.value)}>
            <option value="viewer">viewer</option>
            <option value="editor">editor</option>
            <option value="owner">owner</option>
          </select>
        </ActionForm>
      ) : null}
    </div>
  );
}

function SpacesAdmin() {
  const spaces = useLoad(() => api<{ spaces: Space[] }>('/api/spaces'), []);
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  return (
    <>
      <ActionForm
        label="Create space"
        submit={async () => {
          await api('/api/spaces', { method: 'POST', json: { name, description } });
          spaces.reload();
        }}
      >
        <label htmlFor="s-name">Space name</label>
        <input id="s-name" value={name} onChange={(e) => setName(e.target.value)} />
        <label htmlFor="s-desc">Description</label>
        <input id="s-desc" value={description} onChange={(e) => setDescription(e.target.value)} />
      </ActionForm>
      <ErrorNote error={spaces.error} />
      {spaces.data?.spaces.map((s) => (
        <section key={s.name} className="space" aria-labelledby={`sp-${s.name}`}>
          <h2 id={`sp-${s.name}`}>
            {s.name} <span className="muted">{s.kind}</span>
          </h2>
          <SpaceMembers space={s.name} />
        </section>
      ))}
    </>
  );
}

const sections: Record<string, [string, () => ReactNode]> = {
  users: ['Users', () => <UsersAdmin />],
  groups: ['Groups', () => <GroupsAdmin />],
  spaces: ['Spaces and members', () => <SpacesAdmin />],
  tokens: ['Tokens', () => <TokensAdmin />],
  agents: ['Agents', () => <AgentsAdmin />],
  audit: ['Audit log', () => <AuditAdmin />],
};

export default function AdminPage({ section }: { section: string }) {
  const [title, render] = sections[section] ?? ['Admin', () => null];
  useTitle(title);
  return (
    <section key={section}>
      <PageTitle>{title}</PageTitle>
      {render()}
    </section>
  );
}

/** The spaces you can see, each with its workflows and their latest version. */
import { api, encode } from '../api.js';
import { ErrorNote, Loading, PageTitle, Time } from '../components/common.js';
import { canPush, PushForm } from '../components/PushForm.js';
import { useLoad } from '../hooks.js';
import { Link, useTitle } from '../router.js';
import type { Space, WorkflowListItem } from '../types.js';

interface SpaceWithWorkflows {
  space: Space;
  workflows: WorkflowListItem[];
  error?: unknown;
}

export function WorkflowsPage() {
  useTitle('Workflows');
  const data = useLoad(async () => {
    const { spaces } = await api<{ spaces: Space[] }>('/api/spaces');
    return Promise.all(
      spaces.map(async (space): Promise<SpaceWithWorkflows> => {
        try {
          const { workflows } = await api<{ workflows: WorkflowListItem[] }>(
            `/api/spaces/${encode(space.name)}/workflows`,
          );
          return { space, workflows };
        } catch (error) {
          return { space, workflows: [], error };
        }
      }),
    );
  }, []);
  return (
    <section>
      <PageTitle>Workflows</PageTitle>
      <ErrorNote error={data.error} title="Could not list spaces" />
      {!data.data && data.loading ? <Loading what="spaces" /> : null}
      {data.data?.map(({ space, workflows, error }) => (
        <section key={space.name} className="space" aria-labelledby={`space-${space.name}`}>
          <h2 id={`space-${space.name}`}>
            {space.name}{' '}
            <span className="muted">
              {space.kind === 'personal' ? 'personal space' : 'shared space'}
              {space.role ? ` · your role: ${space.role}` : ''}
            </span>
          </h2>
          {space.description ? <p>{space.description}</p> : null}
          <ErrorNote error={error} />
          {workflows.length === 0 && !error ? <p className="muted">No workflows yet.</p> : null}
          {workflows.length ? (
            <table>
              <caption className="sr-only">Workflows of {space.name}</caption>
              <thead>
                <tr>
                  <th scope="col">Workflow</th>
                  <th scope="col">Latest version</th>
                  <th scope="col">Description</th>
                  <th scope="col">Pushed by</th>
                  <th scope="col">When</th>
                </tr>
              </thead>
              <tbody>
                {workflows.map((wf) => (
                  <tr key={wf.name}>
                    <td>
                      <Link href={`/workflows/${encode(space.name)}/${encode(wf.name)}`}>{wf.name}</Link>
                    </td>
                    <td>{wf.latestVersion}</td>
                    <td>{wf.description}</td>
                    <td>{wf.updatedBy}</td>
                    <td>
                      <Time iso={wf.updatedAt} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          ) : null}
          {canPush(space.role) ? (
            <details>
              <summary>Push a workflow into {space.name}</summary>
              <PushForm space={space.name} onPushed={() => data.reload()} />
            </details>
          ) : null}
        </section>
      ))}
    </section>
  );
}

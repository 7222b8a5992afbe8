/** One workflow: its versions (who pushed each, when), the chosen version's source, params and step graph. */
import { api, encode } from '../api.js';
import { Dag } from '../components/Dag.js';
import { Highlight } from '../components/Highlight.js';
import { canPush, PushForm } from '../components/PushForm.js';
import { ErrorNote, Loading, PageTitle, Time } from '../components/common.js';
import { useLoad } from '../hooks.js';
import { Link, navigate, useLocation, useTitle } from '../router.js';
import type { Space, Workflow, WorkflowVersion } from '../types.js';

export function WorkflowPage({ space, name }: { space: string; name: string }) {
  useTitle(`${space}/${name}`);
  const { query } = useLocation();
  const wanted = query.get('version');
  const base = `/api/spaces/${encode(space)}/workflows/${encode(name)}`;
  const versions = useLoad(() => api<{ versions: WorkflowVersion[] }>(`${base}/versions`), [base]);
  const detail = useLoad(
    () => api<Workflow>(wanted ? `${base}/versions/${encode(wanted)}` : base),
    [base, wanted],
  );
  const spaceInfo = useLoad(() => api<Space>(`/api/spaces/${encode(space)}`), [space]);
  const wf = detail.data;
  const href = `/workflows/${encode(space)}/${encode(name)}`;
  return (
    <section>
      <PageTitle>
        {space}/{name}
        {wf ? ` version ${wf.version}` : ''}
      </PageTitle>
      <ErrorNote error={detail.error} title="Cannot show this workflow" />
      {!wf && detail.loading ? <Loading what="the workflow" /> : null}
      {wf ? (
        <>
          {wf.description ? <p>{wf.description}</p> : null}
          <p>
            Pushed by {wf.createdBy} on <Time iso={wf.createdAt} />. Digest{' '}
            <code>{wf.digest.slice(0, 16)}</code>.
          </p>
          <p>
            <Link className="button" href={`${href}/run${wanted ? `?version=${encode(wanted)}` : ''}`}>
              Run version {wf.version}
            </Link>
          </p>
          <h2>Step graph</h2>
          <Dag steps={wf.steps} label={`Steps of ${name}`} />
          <h2>Params</h2>
          {wf.params.length === 0 ? (
            <p className="muted">None.</p>
          ) : (
            <ul>
              {wf.params.map((p) => (
                <li key={p.name}>
                  <code>{p.name}</code> ({p.type}
                  {p.required ? ', required' : ''}
                  {p.default !== undefined ? `, default ${String(p.default)}` : ''})
                  {p.description ? `: ${p.description}` : ''}
                </li>
              ))}
            </ul>
          )}
          <h2>Source</h2>
          <Highlight source={wf.source} label={`Source of ${name} version ${wf.version}`} />
        </>
      ) : null}
      <h2>Versions</h2>
      <ErrorNote error={versions.error} />
      {versions.data ? (
        <table>
          <caption className="sr-only">Versions of {name}</caption>
          <thead>
            <tr>
              <th scope="col">Version</th>
              <th scope="col">Pushed by</th>
              <th scope="col">When</th>
              <th scope="col">Steps</th>
            </tr>
          </thead>
          <tbody>
            {[...versions.data.versions].reverse().map((v) => (
              <tr key={v.version}>
                <td>
                  <Link
                    href={`${href}?version=${v.version}`}
                    aria-current={wf?.version === v.version ? 'true' : undefined}
                  >
                    {v.version}
                  </Link>
                </td>
                <td>{v.createdBy}</td>
                <td>
                  <Time iso={v.createdAt} />
                </td>
                <td>{v.steps.length}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      {canPush(spaceInfo.data?.role) ? (
        <>
          <h2>Push a new version</h2>
          <PushForm
            space={space}
            onPushed={(v) => {
              versions.reload();
              navigate(`/workflows/${encode(v.space)}/${encode(v.name)}?version=${v.version}`);
            }}
          />
        </>
      ) : null}
    </section>
  );
}

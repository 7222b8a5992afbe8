/**
 * The portal's frame: the session check, the connection banner, the navigation (admin pages only for
 * admins) and the route table.
 */
import { lazy, Suspense, useCallback, useEffect, useState, type ReactNode } from 'react';
import { api, ApiError, setCsrfToken, setSignedOutHandler } from './api.js';
import { ErrorNote, Loading } from './components/common.js';
import { useConnection } from './hooks.js';
import { Link, match, navigate, useLocation } from './router.js';
import { isAdmin, SessionCtx } from './session.js';
import type { Session } from './types.js';
import { SignIn } from './pages/SignIn.js';
import { JobsPage } from './pages/Jobs.js';
import { JobPage } from './pages/Job.js';
import { WorkflowsPage } from './pages/Workflows.js';
import { WorkflowPage } from './pages/Workflow.js';
import { RunPage } from './pages/Run.js';
import { SchedulesPage } from './pages/Schedules.js';

// Admin pages are a separate chunk: users who are not admins never download them.
const AdminPage = lazy(() => import('./admin/Admin.js'));

export const adminSections = [
  ['users', 'Users'],
  ['groups', 'Groups'],
  ['spaces', 'Spaces'],
  ['tokens', 'Tokens'],
  ['agents', 'Agents'],
  ['audit', 'Audit log'],
] as const;

function Banner() {
  const { online } = useConnection();
  if (online) return null;
  return (
    <div className="banner" role="alert">
      The server cannot be reached. Steward keeps trying and reconnects by itself.
    </div>
  );
}

function Redirect({ to }: { to: string }) {
  useEffect(() => navigate(to, { replace: true }), [to]);
  return null;
}

function NotFound({ path }: { path: string }) {
  return (
    <section>
      <h1>Page not found</h1>
      <p>
        Nothing is at <code>{path}</code>. <Link href="/jobs">Go to your jobs</Link>.
      </p>
    </section>
  );
}

function Routes({ session }: { session: Session }): ReactNode {
  const { path } = useLocation();
  if (path === '/' || path === '/signin') return <Redirect to="/jobs" />;
  if (path === '/jobs') return <JobsPage />;
  let params = match('/jobs/:id', path);
  if (params) return <JobPage key={params.id} id={params.id ?? ''} />;
  if (path === '/workflows') return <WorkflowsPage />;
  if (path === '/schedules') return <SchedulesPage />;
  params = match('/workflows/:space/:name', path);
  if (params) return <WorkflowPage space={params.space ?? ''} name={params.name ?? ''} />;
  params = match('/workflows/:space/:name/run', path);
  if (params) return <RunPage space={params.space ?? ''} name={params.name ?? ''} />;
  params = match('/admin/:section', path);
  if (params && isAdmin(session) && adminSections.some(([key]) => key === params?.section)) {
    return (
      <Suspense fallback={<Loading what="the admin page" />}>
        <AdminPage section={params.section ?? ''} />
      </Suspense>
    );
  }
  return <NotFound path={path} />;
}

function Nav({ session, onSignOut }: { session: Session; onSignOut: () => void }) {
  const { path } = useLocation();
  const current = (href: string) => (path === href || path.startsWith(`${href}/`) ? 'page' : undefined);
  return (
    <header className="top">
      <a className="skip" href="#main">
        Skip to content
      </a>
      <span className="brand">Steward</span>
      <nav aria-label="Main">
        <ul>
          <li>
            <Link href="/jobs" aria-current={current('/jobs')}>
              Jobs
            </Link>
          </li>
          <li>
            <Link href="/workflows" aria-current={current('/workflows')}>
              Workflows
            </Link>
          </li>
          <li>
            <Link href="/schedules" aria-current={current('/schedules')}>
              Schedules
            </Link>
          </li>
          {isAdmin(session)
            ? adminSections.map(([key, label]) => (
                <li key={key}>
                  <Link href={`/admin/${key}`} aria-current={current(`/admin/${key}`)}>
                    {label}
                  </Link>
                </li>
              ))
            : null}
        </ul>
      </nav>
      <span className="who">
        {session.user.name}
        {isAdmin(session) ? ' (admin)' : ''}
      </span>
      <button type="button" onClick={onSignOut}>
        Sign out
      </button>
    </header>
  );
}

export function App() {
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const { reconnects } = useConnection();

  const adopt = useCallback((value: Session | null) => {
    setCsrfToken(value?.csrfToken ?? '');
    setSession(value);
  }, []);

  useEffect(() => setSignedOutHandler(() => adopt(null)), [adopt]);

  useEffect(() => {
    api<Session>('/api/auth/session').then(
      (value) => {
        setError(undefined);
        adopt(value);
      },
      (err: unknown) => {
        if (err instanceof ApiError && err.status === 401) adopt(null);
        else setError(err);
      },
    );
  }, [adopt, reconnects]);

  const signOut = useCallback(async () => {
    try {
      await api('/api/auth/session', { method: 'DELETE' });
    } finally {
      adopt(null);
      navigate('/signin', { replace: true });
    }
  }, [adopt]);

  let body: ReactNode;
  if (session === undefined) body = error ? <ErrorNote error={error} /> : <Loading what="your session" />;
  else if (session === null) body = <SignIn onSignedIn={adopt} />;
  else
    body = (
      <SessionCtx.Provider value={{ session, signOut }}>
        <Nav session={session} onSignOut={() => void signOut()} />
        <main id="main">
          <Routes session={session} />
        </main>
      </SessionCtx.Provider>
    );
  return (
    <>
      <Banner />
      {body}
    </>
  );
}

import { useState, type FormEvent } from 'react';
import { api } from '../api.js';
import { ErrorNote, PageTitle } from '../components/common.js';
import { useTitle } from '../router.js';
import type { Session } from '../types.js';

export function SignIn({ onSignedIn }: { onSignedIn: (session: Session) => void }) {
  useTitle('Sign in');
  const [name, setName] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<unknown>(undefined);
  const [busy, setBusy] = useState(false);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const session = await api<Session>('/api/auth/session', { method: 'POST', json: { name, password } });
      onSignedIn(session);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main id="main" className="signin">
      <PageTitle>Sign in to Steward</PageTitle>
      <form onSubmit={(event) => void submit(event)} aria-describedby="signin-help">
        <p id="signin-help" className="muted">
          Use your Steward or directory (LDAP) account.
        </p>
        <label htmlFor="signin-name">User name</label>
        <input
          id="signin-name"
          name="username"
          autoComplete="username"
          required
          value={name}
          onChange={(e) => setName(e.target.value)}
        />
        <label htmlFor="signin-password">Password</label>
        <input
          id="signin-password"
          name="password"
          type="password"
          autoComplete="current-password"
          required
          value={password}
          onChange={(e) => setPassword(e.target.value)}
        />
        <ErrorNote error={error} title="Sign-in failed" />
        <button type="submit" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}

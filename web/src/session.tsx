/** Who is signed in: read once from the session cookie (`GET /api/auth/session`), then kept here. */
import { createContext, useContext } from 'react';
import type { Session } from './types.js';

export interface SessionContext {
  session: Session;
  signOut: () => Promise<void>;
}

export const SessionCtx = createContext<SessionContext | null>(null);

export function useSession(): SessionContext {
  const value = useContext(SessionCtx);
  if (!value) throw new Error('useSession outside a signed-in page');
  return value;
}

export function isAdmin(session: Session): boolean {
  return session.user.role === 'admin';
}

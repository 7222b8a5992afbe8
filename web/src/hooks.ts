import { useCallback, useEffect, useRef, useState, useSyncExternalStore } from 'react';
import { connectionState, onConnectionChange } from './api.js';

let cached = connectionState();
function readConnection(): { online: boolean; reconnects: number } {
  const now = connectionState();
  if (now.online !== cached.online || now.reconnects !== cached.reconnects) cached = now;
  return cached;
}

export function useConnection(): { online: boolean; reconnects: number } {
  return useSyncExternalStore(onConnectionChange, readConnection);
}

export interface Loaded<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
}

/**
 * Loads data for a page; loads again when `deps` change, when `reload()` is called and when the server
 * comes back after being unreachable. A late answer for old deps is dropped.
 */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): Loaded<T> {
  const [state, setState] = useState<{ data: T | undefined; error: unknown; loading: boolean }>({
    data: undefined,
    error: undefined,
    loading: true,
  });
  const [tick, setTick] = useState(0);
  const { reconnects } = useConnection();
  const loadRef = useRef(load);
  loadRef.current = load;
  useEffect(() => {
    let current = true;
    setState((s) => ({ ...s, loading: true }));
    loadRef.current().then(
      (data) => current && setState({ data, error: undefined, loading: false }),
      (error: unknown) => current && setState((s) => ({ data: s.data, error, loading: false })),
    );
    return () => {
      current = false;
    };
  }, [...deps, tick, reconnects]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { ...state, reload };
}

/** Sets CSS custom properties on an element through the CSSOM (the CSP forbids style attributes). */
export function useCssVars<E extends HTMLElement | SVGElement>(vars: Record<string, string>) {
  const ref = useRef<E>(null);
  const key = JSON.stringify(vars);
  useEffect(() => {
    const element = ref.current;
    if (!element) return;
    for (const [name, value] of Object.entries(vars)) element.style.setProperty(name, value);
  }, [key]);
  return ref;
}

/**
 * Live streams (Server-Sent Events) with the session cookie. EventSource reconnects by itself after a
 * dropped connection; when it gives up (CLOSED) or errors, the connection state is checked so the banner
 * shows, and the stream is opened again once the server is back (the `reconnects` dependency).
 */
import { useEffect, useRef } from 'react';
import { reportStreamTrouble } from './api.js';
import { useConnection } from './hooks.js';

export type StreamHandlers = Record<string, (data: unknown) => void>;

export function useEventStream(url: string | null, handlers: StreamHandlers, closeOn: string[] = []): void {
  const handlersRef = useRef(handlers);
  handlersRef.current = handlers;
  const { reconnects } = useConnection();
  const names = Object.keys(handlers).sort().join(',');
  useEffect(() => {
    if (!url) return;
    const source = new EventSource(url, { withCredentials: true });
    let done = false;
    for (const name of names.split(',').filter(Boolean)) {
      source.addEventListener(name, (event: MessageEvent<string>) => {
        let data: unknown;
        try {
          data = JSON.parse(event.data);
        } catch {
          return;
        }
        handlersRef.current[name]?.(data);
        // A stream that ends on purpose (a finished job) must not be reopened by EventSource.
        if (closeOn.includes(name)) {
          done = true;
          source.close();
        }
      });
    }
    source.onerror = () => {
      if (!done) reportStreamTrouble();
    };
    return () => {
      done = true;
      source.close();
    };
  }, [url, names, reconnects]);
}

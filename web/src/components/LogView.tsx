/**
 * A virtualized log: only the lines in view (plus a margin) are in the DOM, so a log of 100k lines and
 * more scrolls and updates as fast as a short one. Updates are coalesced to one render per animation frame.
 * It follows the end while scrolled to the bottom. Lines are text nodes; nothing is parsed as HTML.
 */
import { useCallback, useEffect, useLayoutEffect, useRef, useState } from 'react';
import type { LogBuffer } from '../logs.js';

const ROW = 18;
const OVERSCAN = 20;

export function LogView({ buffer, label }: { buffer: LogBuffer; label: string }) {
  const scroller = useRef<HTMLDivElement>(null);
  const spacer = useRef<HTMLDivElement>(null);
  const window_ = useRef<HTMLDivElement>(null);
  // Bumped on every change of the buffer (a counter of its own: a new buffer may have the same version).
  const [, setVersion] = useState(0);
  const [top, setTop] = useState(0);
  const [height, setHeight] = useState(400);
  const follow = useRef(true);
  const frame = useRef(0);

  useEffect(() => {
    void buffer.load();
    const unsubscribe = buffer.subscribe(() => {
      if (frame.current) return;
      frame.current = requestAnimationFrame(() => {
        frame.current = 0;
        setVersion((v) => v + 1);
      });
    });
    return () => {
      unsubscribe();
      cancelAnimationFrame(frame.current);
      frame.current = 0;
    };
  }, [buffer]);

  const count = buffer.count;
  useLayoutEffect(() => {
    const element = scroller.current;
    if (!element) return;
    spacer.current?.style.setProperty('height', `${count * ROW}px`);
    if (follow.current) element.scrollTop = element.scrollHeight;
  });

  useEffect(() => {
    const element = scroller.current;
    if (!element) return;
    const observer = new ResizeObserver(() => setHeight(element.clientHeight || 400));
    observer.observe(element);
    return () => observer.disconnect();
  }, []);

  const onScroll = useCallback(() => {
    const element = scroller.current;
    if (!element) return;
    follow.current = element.scrollTop + element.clientHeight >= element.scrollHeight - ROW * 2;
    setTop(element.scrollTop);
  }, []);

  const first = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
  const last = Math.min(count, Math.ceil((top + height) / ROW) + OVERSCAN);
  useLayoutEffect(() => {
    window_.current?.style.setProperty('transform', `translateY(${first * ROW}px)`);
  }, [first]);
  const visible: string[] = [];
  for (let i = first; i < last; i++) visible.push(buffer.line(i));

  return (
    <div>
      <p className="muted log-meta" aria-live="polite">
        {count.toLocaleString()} lines
        {buffer.dropped
          ? ` (the ${buffer.dropped.toLocaleString()} oldest left out; download the whole log)`
          : ''}
        {buffer.loaded ? '' : ' — loading'}
      </p>
      <div
        ref={scroller}
        className="log"
        tabIndex={0}
        role="region"
        aria-label={label}
        onScroll={onScroll}
        data-lines={count}
      >
        <div ref={spacer} className="log-spacer">
          <div ref={window_} className="log-window">
            {visible.map((text, i) => (
              <div key={first + i} className="log-line">
                <span className="log-no" aria-hidden="true">
                  {first + i + 1 + buffer.dropped}
                </span>
                {text}
              </div>
            ))}
          </div>
        </div>
      </div>
    </div>
  );
}

/** Forms of the admin pages: one request per submit or click, its error shown in words with its code. */
import { useState, type FormEvent, type ReactNode } from 'react';
import { ErrorNote } from '../components/common.js';

/** A button that runs one admin action and shows its error in words. */
export function ActionButton({
  label,
  run,
  done,
}: {
  label: string;
  run: () => Promise<unknown>;
  done: () => void;
}) {
  const [error, setError] = useState<unknown>(undefined);
  return (
    <>
      <button
        type="button"
        onClick={() => {
          setError(undefined);
          run().then(done, setError);
        }}
      >
        {label}
      </button>
      <ErrorNote error={error} />
    </>
  );
}

/** A small form whose submit runs one request; its fields are given as children. */
export function ActionForm({
  label,
  submit,
  children,
}: {
  label: string;
  submit: () => Promise<unknown>;
  children: ReactNode;
}) {
  const [error, setError] = useState<unknown>(undefined);
  const [ok, setOk] = useState(false);
  const onSubmit = (event: FormEvent) => {
    event.preventDefault();
    setError(undefined);
    setOk(false);
    submit().then(() => setOk(true), setError);
  };
  return (
    <form className="inline-form" onSubmit={onSubmit} aria-label={label}>
      {children}
      <button type="submit">{label}</button>
      {ok ? <span role="status">Done.</span> : null}
      <ErrorNote error={error} />
    </form>
  );
}

/** Push a workflow file (YAML or JSON) into a space by upload: for editors and owners of the space. */
import { useId, useState, type FormEvent } from 'react';
import { api, encode } from '../api.js';
import type { WorkflowVersion } from '../types.js';
import { ErrorNote } from './common.js';

export function canPush(role: string | null | undefined): boolean {
  return role === 'editor' || role === 'owner';
}

export function PushForm({
  space,
  onPushed,
}: {
  space: string;
  onPushed: (version: WorkflowVersion) => void;
}) {
  const id = useId();
  const [file, setFile] = useState<File | null>(null);
  const [error, setError] = useState<unknown>(undefined);
  const [done, setDone] = useState<WorkflowVersion | undefined>(undefined);
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    if (!file) return;
    setError(undefined);
    setDone(undefined);
    try {
      const source = await file.text();
      const version = await api<WorkflowVersion>(`/api/spaces/${encode(space)}/workflows`, {
        method: 'POST',
        json: { source, fileName: file.name },
      });
      setDone(version);
      onPushed(version);
    } catch (err) {
      setError(err);
    }
  };
  return (
    <form className="push" onSubmit={(event) => void submit(event)}>
      <label htmlFor={id}>Workflow file (YAML or JSON) to push into {space}</label>
      <input
        id={id}
        type="file"
        accept=".yaml,.yml,.json"
        onChange={(e) => setFile(e.target.files?.[0] ?? null)}
      />
      <button type="submit" disabled={!file}>
        Push
      </button>
      {done ? (
        <p role="status">
          Pushed {done.name} version {done.version}.
        </p>
      ) : null}
      <ErrorNote error={error} title="Push refused" />
    </form>
  );
}

/**
 * The run form, generated from the workflow's typed params: one widget per type, defaults filled in,
 * required marks and descriptions; `file` params upload first (`POST /api/uploads`) and pass the upload id.
 * The server's validation errors are shown at the field they concern (`error.details.param`).
 */
import { useState, type FormEvent } from 'react';
import { api, ApiError, describeError, encode } from '../api.js';
import { ErrorNote, Loading, PageTitle } from '../components/common.js';
import { useLoad } from '../hooks.js';
import { Link, navigate, useLocation, useTitle } from '../router.js';
import type { Job, Param, Upload, Workflow } from '../types.js';

type Value = string | boolean | File | null;

function initial(param: Param): Value {
  const type: string = param.type;
  if (type === 'boolean') return param.default === true || param.default === 'true';
  if (type === 'file') return null;
  return param.default === undefined ? '' : String(param.default);
}

/** The param an error concerns: `details.param`, else a message starting `params.NAME:`. */
export function errorParam(error: unknown): string | undefined {
  if (!(error instanceof ApiError)) return undefined;
  const named = error.details.param;
  if (typeof named === 'string') return named;
  return /params\.([a-z_][a-z0-9_]*)\b/.exec(error.message)?.[1];
}

function Field({
  param,
  value,
  error,
  onChange,
}: {
  param: Param;
  value: Value;
  error: string | undefined;
  onChange: (value: Value) => void;
}) {
  const id = `param-${param.name}`;
  const type: string = param.type;
  const describedBy = [param.description ? `${id}-desc` : '', error ? `${id}-err` : '']
    .filter(Boolean)
    .join(' ');
  const common = {
    id,
    name: param.name,
    required: param.required && type !== 'boolean',
    'aria-invalid': error ? true : undefined,
    'aria-describedby': describedBy || undefined,
  };
  let widget;
  if (type === 'boolean') {
    widget = (
      <input
        {...common}
        type="checkbox"
        checked={value === true}
        onChange={(e) => onChange(e.target.checked)}
      />
    );
  } else if (type === 'enum') {
    widget = (
      <select
        {...common}
        value={typeof value === 'string' ? value : ''}
        onChange={(e) => onChange(e.target.value)}
      >
        {param.required && param.default === undefined ? <option value="">choose…</option> : null}
        {!param.required ? <option value="">(none)</option> : null}
        {(param.values ?? []).map((v) => (
          <option key={v} value={v}>
            {v}
          </option>
        ))}
      </select>
    );
  } else if (type === 'file') {
    widget = <input {...common} type="file" onChange={(e) => onChange(e.target.files?.[0] ?? null)} />;
  } else {
    const inputType = type === 'date' ? 'date' : type === 'number' || type === 'integer' ? 'number' : 'text';
    widget = (
      <input
        {...common}
        type={inputType}
        step={type === 'integer' ? 1 : type === 'number' ? 'any' : undefined}
        value={typeof value === 'string' ? value : ''}
        onChange={(e) => onChange(e.target.value)}
      />
    );
  }
  return (
    <div className={`field${error ? ' invalid' : ''}`} data-param={param.name}>
      <label htmlFor={id}>
        {param.name}
        {param.required ? (
          <span className="required" aria-label="required">
            {' '}
            *
          </span>
        ) : null}{' '}
        <span className="muted">({type})</span>
      </label>
      {widget}
      {param.description ? (
        <p id={`${id}-desc`} className="muted help">
          {param.description}
        </p>
      ) : null}
      {error ? (
        <p id={`${id}-err`} className="field-error" role="alert">
          {error}
        </p>
      ) : null}
    </div>
  );
}

export function RunPage({ space, name }: { space: string; name: string }) {
  useTitle(`Run ${space}/${name}`);
  const { query } = useLocation();
  const version = query.get('version');
  const base = `/api/spaces/${encode(space)}/workflows/${encode(name)}`;
  const wf = useLoad(
    () => api<Workflow>(version ? `${base}/versions/${encode(version)}` : base),
    [base, version],
  );
  const [values, setValues] = useState<Record<string, Value>>({});
  const [error, setError] = useState<unknown>(undefined);
  const [busy, setBusy] = useState(false);
  const params = wf.data?.params ?? [];
  const valueOf = (p: Param): Value => (p.name in values ? (values[p.name] ?? null) : initial(p));

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    if (!wf.data) return;
    setBusy(true);
    setError(undefined);
    try {
      const body: Record<string, string | number | boolean> = {};
      for (const p of params) {
        const value = valueOf(p);
        const type: string = p.type;
        if (value instanceof File) {
          const upload = await api<Upload>('/api/uploads', {
            method: 'POST',
            query: { name: value.name },
            body: value,
          }).catch((err: unknown) => {
            if (err instanceof ApiError && !err.details.param) err.details.param = p.name;
            throw err;
          });
          body[p.name] = upload.id;
        } else if (typeof value === 'boolean') body[p.name] = value;
        else if (value === null || value === '') continue;
        else if (type === 'number' || type === 'integer') body[p.name] = Number(value);
        else body[p.name] = value;
      }
      const job = await api<Job>('/api/jobs', {
        method: 'POST',
        json: { workflow: `${wf.data.space}/${wf.data.name}@${wf.data.version}`, params: body },
      });
      navigate(`/jobs/${encodeURIComponent(job.id)}`);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  const field = errorParam(error);
  const fieldMessage = field ? `${describeError(error).message} (${describeError(error).code})` : undefined;
  return (
    <section>
      <PageTitle>
        Run {space}/{name}
        {wf.data ? ` version ${wf.data.version}` : ''}
      </PageTitle>
      <p>
        <Link href={`/workflows/${encode(space)}/${encode(name)}`}>Back to the workflow</Link>
      </p>
      <ErrorNote error={wf.error} title="Cannot load the workflow" />
      {!wf.data && wf.loading ? <Loading what="the workflow" /> : null}
      {wf.data ? (
        <form className="run-form" onSubmit={(event) => void submit(event)} noValidate>
          {params.length === 0 ? <p className="muted">This workflow has no params.</p> : null}
          {params.length && params.some((p) => p.required) ? (
            <p className="muted">Fields marked * are required.</p>
          ) : null}
          {params.map((p) => (
            <Field
              key={p.name}
              param={p}
              value={valueOf(p)}
              error={field === p.name ? fieldMessage : undefined}
              onChange={(v) => setValues({ ...values, [p.name]: v })}
            />
          ))}
          {error && !params.some((p) => p.name === field) ? (
            <ErrorNote error={error} title="The job was not started" />
          ) : null}
          <button type="submit" disabled={busy}>
            {busy ? 'Starting…' : 'Run'}
          </button>
        </form>
      ) : null}
    </section>
  );
}

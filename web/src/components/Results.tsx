/**
 * A job's results: tables with a paged, typed preview and CSV/Parquet downloads; files with a download
 * and, for text and images, an inline view. Every value and name is rendered as text.
 */
import { useEffect, useState } from 'react';
import { api, apiRaw, encode } from '../api.js';
import { useLoad } from '../hooks.js';
import type { Preview, ResultInfo } from '../types.js';
import { ErrorNote, formatBytes, Loading } from './common.js';

const PAGE = 20;
const numeric =
  /^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|FLOAT|REAL|DOUBLE|DECIMAL|INT)/i;
const textFile = /\.(txt|csv|tsv|log|md|json|ndjson|yaml|yml|sql|py|sh|xml|html?)$/i;
const imageFile = /\.(png|jpe?g|gif|webp|bmp)$/i;

function cell(value: unknown): string {
  if (value === null || value === undefined) return 'NULL';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint')
    return String(value);
  return JSON.stringify(value) ?? '';
}

function PreviewTable({ jobId, result }: { jobId: string; result: ResultInfo }) {
  const [offset, setOffset] = useState(0);
  const page = useLoad(
    () =>
      api<Preview>(`/api/jobs/${encode(jobId)}/results/${encode(result.name)}/preview`, {
        query: { limit: PAGE, offset },
      }),
    [jobId, result.name, offset],
  );
  const data = page.data;
  const total = data?.totalRows ?? result.rows;
  return (
    <div className="preview">
      <ErrorNote error={page.error} title="Could not preview" />
      {!data && page.loading ? <Loading what="the preview" /> : null}
      {data ? (
        <div className="table-scroll" tabIndex={0} role="group" aria-label={`Preview of ${result.name}`}>
          <table className="preview-table" data-result={result.name}>
            <caption className="sr-only">
              Rows {offset + 1} to {offset + data.rows.length} of {result.name}
            </caption>
            <thead>
              <tr>
                {data.columns.map((column) => (
                  <th scope="col" key={column.name} data-type={column.type}>
                    {column.name} <span className="col-type">{column.type}</span>
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {data.rows.map((row, r) => (
                <tr key={offset + r}>
                  {data.columns.map((column) => (
                    <td
                      key={column.name}
                      className={`${numeric.test(column.type) ? 'num' : ''} ${row[column.name] === null ? 'null' : ''}`}
                    >
                      {cell(row[column.name])}
                    </td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
      <div className="pager">
        <button type="button" disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - PAGE))}>
          Previous rows
        </button>
        <span className="muted">
          {data ? `rows ${data.rows.length ? offset + 1 : 0}–${offset + data.rows.length}` : ''}
          {total !== null && total !== undefined ? ` of ${total}` : ''}
        </span>
        <button
          type="button"
          disabled={
            !data ||
            (total !== null && total !== undefined ? offset + PAGE >= total : data.rows.length < PAGE)
          }
          onClick={() => setOffset(offset + PAGE)}
        >
          Next rows
        </button>
      </div>
    </div>
  );
}

function FileView({ jobId, result }: { jobId: string; result: ResultInfo }) {
  const [view, setView] = useState<{ text?: string; image?: string } | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  useEffect(() => () => (view?.image ? URL.revokeObjectURL(view.image) : undefined), [view]);
  const isImage = imageFile.test(result.name);
  // Known text extensions, and any other small file that is not an image: shown as text (never as HTML).
  const isText = textFile.test(result.name) || (!isImage && result.size <= 256 * 1024);
  if (!isText && !isImage) return null;
  const open = async () => {
    setError(undefined);
    try {
      const response = await apiRaw(`/api/jobs/${encode(jobId)}/results/${encode(result.name)}`);
      if (isImage) setView({ image: URL.createObjectURL(await response.blob()) });
      else {
        const text = await response.text();
        setView({
          text: text.length > 1_000_000 ? `${text.slice(0, 1_000_000)}\n… (cut; download it all)` : text,
        });
      }
    } catch (err) {
      setError(err);
    }
  };
  return (
    <div className="file-view">
      {view ? null : (
        <button type="button" onClick={() => void open()}>
          View {result.name}
        </button>
      )}
      <ErrorNote error={error} title="Could not open" />
      {view?.text !== undefined ? (
        <pre className="file-text" tabIndex={0} aria-label={`Contents of ${result.name}`}>
          {view.text}
        </pre>
      ) : null}
      {view?.image ? <img className="file-image" src={view.image} alt={`Result ${result.name}`} /> : null}
    </div>
  );
}

export function Results({ jobId }: { jobId: string }) {
  const list = useLoad(() => api<{ results: ResultInfo[] }>(`/api/jobs/${encode(jobId)}/results`), [jobId]);
  return (
    <section aria-labelledby="results-heading">
      <h2 id="results-heading">Results</h2>
      <ErrorNote error={list.error} title="Could not list results" />
      {list.data && list.data.results.length === 0 ? <p className="muted">No results.</p> : null}
      {list.data?.results.map((result) => {
        const base = `/api/jobs/${encode(jobId)}/results/${encode(result.name)}`;
        return (
          <article key={result.name} className="result" data-result-name={result.name}>
            <h3 className="result-name">{result.name}</h3>
            <p className="muted">
              {result.kind}
              {result.rows !== null ? ` · ${result.rows} rows` : ''} · {formatBytes(result.size)}
            </p>
            {result.kind === 'table' ? (
              <>
                <p className="downloads">
                  {result.formats.map((format) => (
                    <a key={format} href={`${base}.${encode(format)}`} download={`${result.name}.${format}`}>
                      Download {format.toUpperCase()}
                    </a>
                  ))}
                </p>
                <PreviewTable jobId={jobId} result={result} />
              </>
            ) : (
              <>
                <p className="downloads">
                  <a href={base} download={result.name}>
                    Download {result.name}
                  </a>
                </p>
                <FileView jobId={jobId} result={result} />
              </>
            )}
          </article>
        );
      })}
    </section>
  );
}

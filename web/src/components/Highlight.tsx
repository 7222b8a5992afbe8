/**
 * Source highlighting for workflow files (YAML or JSON, with SQL inside): a small line tokenizer that
 * yields React text spans by class. Nothing is ever parsed or inserted as HTML.
 */
import { memo } from 'react';

export type TokenKind = 'comment' | 'key' | 'string' | 'number' | 'keyword' | 'sql' | 'punct' | 'text';
export interface Token {
  kind: TokenKind;
  text: string;
}

const SQL_KEYWORDS = new Set(
  `select from where group by order having limit offset join left right inner outer full cross on as and or
  not in is null like ilike between case when then else end with union all distinct insert into values
  update set delete create table view cast sum count avg min max over partition asc desc using exists
  qualify window filter true false`
    .split(/\s+/)
    .filter(Boolean),
);
const YAML_WORDS = new Set(['true', 'false', 'null', 'yes', 'no', '~']);

const patterns: [TokenKind, RegExp][] = [
  ['comment', /^(#|--).*/],
  ['string', /^("(?:[^"\\]|\\.)*"?|'(?:[^']|'')*'?)/],
  ['key', /^[A-Za-z_][\w.-]*(?=\s*:(\s|$))/],
  ['number', /^-?\d+(\.\d+)?\b/],
  ['keyword', /^[A-Za-z_][\w]*/],
  ['punct', /^[-:{}[\],|>]/],
  ['text', /^\s+/],
];

export function tokenizeLine(line: string): Token[] {
  const tokens: Token[] = [];
  let rest = line;
  while (rest.length > 0) {
    let matched = false;
    for (const [kind, pattern] of patterns) {
      const found = pattern.exec(rest);
      if (!found || found[0].length === 0) continue;
      const text = found[0];
      let resolved: TokenKind = kind;
      if (kind === 'keyword') {
        const lower = text.toLowerCase();
        resolved = SQL_KEYWORDS.has(lower) ? 'sql' : YAML_WORDS.has(lower) ? 'keyword' : 'text';
      }
      // `#` starts a YAML comment only at the start or after a space.
      if (
        kind === 'comment' &&
        text.startsWith('#') &&
        tokens.length > 0 &&
        !/\s$/.test(tokens[tokens.length - 1]?.text ?? '')
      ) {
        continue;
      }
      tokens.push({ kind: resolved, text });
      rest = rest.slice(text.length);
      matched = true;
      break;
    }
    if (!matched) {
      tokens.push({ kind: 'text', text: rest[0] ?? '' });
      rest = rest.slice(1);
    }
  }
  return tokens;
}

export const Highlight = memo(function Highlight({ source, label }: { source: string; label: string }) {
  const lines = source.split('\n');
  return (
    <pre className="source" tabIndex={0} aria-label={label}>
      <code>
        {lines.map((line, i) => (
          <span key={i} className="source-line">
            {tokenizeLine(line).map((token, j) =>
              token.kind === 'text' ? (
                token.text
              ) : (
                <span key={j} className={`tok-${token.kind}`}>
                  {token.text}
                </span>
              ),
            )}
            {'\n'}
          </span>
        ))}
      </code>
    </pre>
  );
});

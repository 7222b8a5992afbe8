/**
 * Turns workflow text into plain data plus a way to find the source line of any field path, so every
 * validation issue can point at the line a person has to edit.
 */
import {
  isNode,
  isPair,
  isScalar,
  isMap,
  isSeq,
  LineCounter,
  parseDocument,
  type Document,
  type Node,
} from 'yaml';
import type { ValidationIssue } from './types.js';

export type PathSegment = string | number;

export interface ParsedSource {
  data: unknown;
  /** 1-based line of the value at `path`, or of its nearest existing ancestor. */
  lineOf(path: readonly PathSegment[]): number | undefined;
  /** 1-based line of the key at `path` (for unknown keys), falling back to the value's line. */
  keyLineOf(path: readonly PathSegment[]): number | undefined;
  /** Line where a block scalar's content starts, for mapping offsets inside multi-line SQL. */
  blockContentLine(path: readonly PathSegment[]): number | undefined;
}

export type SourceFormat = 'yaml' | 'json';

export function detectFormat(format: SourceFormat | undefined, fileName: string | undefined): SourceFormat {
  if (format) return format;
  if (fileName && /\.json$/i.test(fileName)) return 'json';
  return 'yaml';
}

/** Parses YAML or JSON. Syntax problems come back as issues, never as exceptions. */
export function parseSource(
  source: string,
  format: SourceFormat,
): { parsed?: ParsedSource; issues: ValidationIssue[] } {
  const lineCounter = new LineCounter();
  if (format === 'json') {
    try {
      JSON.parse(source);
    } catch (error) {
      const message = (error as Error).message;
      const position = /position (\d+)/.exec(message);
      const line = position ? lineAt(source, Number(position[1])) : undefined;
      return { issues: [{ path: '', message: `JSON syntax error: ${message}`, ...(line ? { line } : {}) }] };
    }
  }
  // JSON is YAML 1.2, so one parser serves both and gives line numbers for both.
  const doc = parseDocument(source, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    return {
      issues: doc.errors.map((error) => ({
        path: '',
        message: `${format === 'json' ? 'JSON' : 'YAML'} syntax error: ${error.message.split('\n')[0] ?? ''}`,
        line: lineCounter.linePos(error.pos[0]).line,
      })),
    };
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (error) {
    return {
      issues: [
        { path: '', message: `${format === 'json' ? 'JSON' : 'YAML'} error: ${(error as Error).message}` },
      ],
    };
  }
  const line = (offset: number | undefined): number | undefined =>
    offset === undefined ? undefined : lineCounter.linePos(offset).line;
  return {
    issues: [],
    parsed: {
      data,
      lineOf: (path) => line(nearestNode(doc, path)?.range?.[0]),
      keyLineOf: (path) => {
        const pair = findPair(doc, path);
        if (pair && isNode(pair.key)) return line(pair.key.range?.[0]);
        return line(nearestNode(doc, path)?.range?.[0]);
      },
      blockContentLine: (path) => {
        const node = doc.getIn(path, true);
        if (!isScalar(node) || !node.range) return undefined;
        const start = line(node.range[0]);
        if (start === undefined) return undefined;
        return node.type === 'BLOCK_LITERAL'
          ? start + 1
          : node.type === 'PLAIN' || node.type === 'QUOTE_DOUBLE' || node.type === 'QUOTE_SINGLE'
            ? start
            : undefined;
      },
    },
  };
}

function nearestNode(doc: Document, path: readonly PathSegment[]): Node | undefined {
  for (let length = path.length; length >= 0; length--) {
    const node: unknown = length === 0 ? doc.contents : doc.getIn(path.slice(0, length), true);
    if (isNode(node)) return node;
  }
  return undefined;
}

function findPair(doc: Document, path: readonly PathSegment[]) {
  if (path.length === 0) return undefined;
  const parent: unknown = path.length === 1 ? doc.contents : doc.getIn(path.slice(0, -1), true);
  const key = path[path.length - 1];
  if (isMap(parent)) {
    return parent.items.find(
      (pair) => isPair(pair) && isScalar(pair.key) && String(pair.key.value) === String(key),
    );
  }
  if (isSeq(parent)) return undefined;
  return undefined;
}

function lineAt(source: string, offset: number): number {
  let line = 1;
  for (let i = 0; i < offset && i < source.length; i++) if (source.charCodeAt(i) === 10) line++;
  return line;
}

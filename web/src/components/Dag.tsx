/**
 * The step graph as an SVG picture: steps laid out left to right by depth (longest path from a root), each
 * box showing the step's id, kind and, on a job, its state (by color and in words), duration and rows.
 * Text goes in as text nodes only.
 */
import { useMemo } from 'react';
import type { StepInfo } from '../types.js';
import { formatDuration } from './common.js';

export interface DagStep {
  id: string;
  kind: string;
  needs: string[];
}

const W = 200;
const H = 54;
const GAP_X = 48;
const GAP_Y = 16;
const PAD = 8;

interface Placed {
  step: DagStep;
  x: number;
  y: number;
}

export function layout(steps: DagStep[]): { nodes: Placed[]; width: number; height: number } {
  const byId = new Map(steps.map((s) => [s.id, s]));
  const depth = new Map<string, number>();
  const visiting = new Set<string>();
  const depthOf = (id: string): number => {
    const known = depth.get(id);
    if (known !== undefined) return known;
    if (visiting.has(id)) return 0; // a cycle cannot be pushed; stay safe anyway
    visiting.add(id);
    const needs = byId.get(id)?.needs.filter((n) => byId.has(n)) ?? [];
    const d = needs.length ? Math.max(...needs.map(depthOf)) + 1 : 0;
    visiting.delete(id);
    depth.set(id, d);
    return d;
  };
  const columns: DagStep[][] = [];
  for (const step of steps) {
    const d = depthOf(step.id);
    (columns[d] ??= []).push(step);
  }
  const nodes: Placed[] = [];
  columns.forEach((column, c) =>
    column.forEach((step, r) => nodes.push({ step, x: PAD + c * (W + GAP_X), y: PAD + r * (H + GAP_Y) })),
  );
  const rows = Math.max(1, ...columns.map((c) => c?.length ?? 0));
  return {
    nodes,
    width: PAD * 2 + Math.max(1, columns.length) * (W + GAP_X) - GAP_X,
    height: PAD * 2 + rows * (H + GAP_Y) - GAP_Y,
  };
}

function clip(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

export function Dag({ steps, states, label }: { steps: DagStep[]; states?: StepInfo[]; label: string }) {
  const { nodes, width, height } = useMemo(() => layout(steps), [steps]);
  const at = new Map(nodes.map((n) => [n.step.id, n]));
  const info = new Map((states ?? []).map((s) => [s.id, s]));
  const summary = nodes
    .map(
      (n) => `${n.step.id} (${n.step.kind}${info.get(n.step.id) ? `, ${info.get(n.step.id)?.state}` : ''})`,
    )
    .join(', ');
  return (
    <div className="dag-scroll" tabIndex={0} role="group" aria-label={`${label}: scrollable picture`}>
      <svg
        className="dag"
        width={width}
        height={height}
        viewBox={`0 0 ${width} ${height}`}
        role="img"
        aria-label={`${label}: ${summary}`}
      >
        <defs>
          <marker
            id="arrow"
            viewBox="0 0 10 10"
            refX="9"
            refY="5"
            markerWidth="7"
            markerHeight="7"
            orient="auto"
          >
            <path d="M0,0 L10,5 L0,10 z" className="dag-arrow" />
          </marker>
        </defs>
        {nodes.flatMap((node) =>
          node.step.needs.map((need) => {
            const from = at.get(need);
            if (!from) return null;
            const x1 = from.x + W;
            const y1 = from.y + H / 2;
            const x2 = node.x;
            const y2 = node.y + H / 2;
            const mid = (x1 + x2) / 2;
            return (
              <path
                key={`${need}->${node.step.id}`}
                className="dag-edge"
                d={`M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2 - 2},${y2}`}
                markerEnd="url(#arrow)"
              />
            );
          }),
        )}
        {nodes.map(({ step, x, y }) => {
          const state = info.get(step.id);
          const detail = state
            ? [
                state.state,
                state.durationMs !== null ? formatDuration(state.durationMs) : '',
                state.rows !== null ? `${state.rows} rows` : '',
              ]
                .filter(Boolean)
                .join(' · ')
            : step.kind;
          return (
            <g key={step.id} className={`dag-node state-${state?.state ?? 'none'}`} data-step={step.id}>
              <rect x={x} y={y} width={W} height={H} rx={6} />
              <text x={x + 8} y={y + 18} className="dag-id">
                {clip(step.id, 22)}
              </text>
              <text x={x + W - 8} y={y + 18} className="dag-kind" textAnchor="end">
                {step.kind}
              </text>
              <text x={x + 8} y={y + 40} className="dag-detail">
                {clip(detail, 32)}
              </text>
            </g>
          );
        })}
      </svg>
    </div>
  );
}

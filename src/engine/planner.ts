/**
 * The step graph: dependencies are known before the run (explicit `needs` plus every table a step reads),
 * so cycles are found at validation time and the runner only has to start steps whose dependencies ended.
 */
import type { StepSpec } from './types.js';

/** Returns one cycle as step ids (`[a, b, a]`), or undefined when the graph is acyclic. */
export function findCycle(steps: readonly Pick<StepSpec, 'id' | 'needs'>[]): string[] | undefined {
  const needs = new Map(steps.map((step) => [step.id, step.needs]));
  const state = new Map<string, 'visiting' | 'done'>();
  const stack: string[] = [];
  const visit = (id: string): string[] | undefined => {
    state.set(id, 'visiting');
    stack.push(id);
    for (const dependency of needs.get(id) ?? []) {
      if (!needs.has(dependency)) continue;
      const seen = state.get(dependency);
      if (seen === 'visiting') return [...stack.slice(stack.indexOf(dependency)), dependency];
      if (seen === undefined) {
        const cycle = visit(dependency);
        if (cycle) return cycle;
      }
    }
    stack.pop();
    state.set(id, 'done');
    return undefined;
  };
  for (const step of steps) {
    if (state.has(step.id)) continue;
    const cycle = visit(step.id);
    if (cycle) return cycle.reverse();
  }
  return undefined;
}

/** Steps no other step depends on: the default outputs. */
export function leafSteps(steps: readonly Pick<StepSpec, 'id' | 'needs'>[]): string[] {
  const depended = new Set(steps.flatMap((step) => step.needs));
  return steps.filter((step) => !depended.has(step.id)).map((step) => step.id);
}

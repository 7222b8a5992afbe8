/** What a succeeded run publishes, with every result name checked before anything is exported or uploaded. */
import { copyFile, link, readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { plainNameProblem, StewardError } from '../protocol/index.js';
import type { RunOutput, Workflow } from './types.js';

/**
 * The workflow's outputs: the ids of its output tables (published as `<id>.parquet` and `<id>.csv`, exported
 * by the run), and its files — write steps' files and script steps' files in `.steward/out/<step>/`.
 * Every name is checked here, before any upload starts: one bad or doubly published name fails the job
 * with its reason, not with an HTTP error halfway through the uploads.
 */
export async function checkedOutputs(
  workflow: Workflow,
  stewardDir: string,
  writtenFile: (stepId: string) => string | undefined,
): Promise<{ tableIds: string[]; files: RunOutput[] }> {
  const files: RunOutput[] = [];
  const tableIds: string[] = [];
  const owners = new Map<string, string>();
  const claim = (name: string, step: string) => {
    const problem = plainNameProblem(name);
    if (problem !== undefined) {
      throw new StewardError(
        'STEWARD_RESULT_NAME_INVALID',
        `step "${step}" publishes ${JSON.stringify(name)}, which ${problem}: a result is one file name of at most 255 bytes, not starting with "."`,
      );
    }
    const owner = owners.get(name);
    if (owner !== undefined) {
      throw new Error(`outputs: steps "${owner}" and "${step}" both publish "${name}"`);
    }
    owners.set(name, step);
  };
  for (const id of workflow.outputs) {
    const step = workflow.steps.find((candidate) => candidate.id === id);
    if (!step) continue;
    if (step.kind === 'read' || step.kind === 'sql') {
      for (const name of [id, `${id}.csv`, `${id}.parquet`]) claim(name, id);
      tableIds.push(id);
    } else if (step.kind === 'write') {
      const file = writtenFile(id);
      if (!file) continue;
      const name = path.basename(file);
      claim(name, id);
      files.push({ name, kind: 'file', path: file, size: (await stat(file)).size });
    } else {
      const outputDir = path.join(stewardDir, 'out', id);
      const entries = await readdir(outputDir, { withFileTypes: true }).catch(() => []);
      for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
        if (!entry.isFile()) continue;
        claim(entry.name, id);
        const file = path.join(outputDir, entry.name);
        files.push({ name: entry.name, kind: 'file', path: file, size: (await stat(file)).size });
      }
    }
  }
  return { tableIds, files };
}

/** A hard link of `source` at `target` (replacing it), or a copy where linking is not possible. */
export async function linkOrCopy(source: string, target: string): Promise<void> {
  await rm(target, { force: true });
  try {
    await link(source, target);
  } catch {
    await copyFile(source, target);
  }
}

import { afterAll, describe, expect, it } from 'vitest';
import { closeSqlAnalyzer, describeWorkflow, parseWorkflow } from '../../src/engine/index.js';
import { invalidIssues } from './helpers.js';

afterAll(async () => {
  await closeSqlAnalyzer();
});

const valid = `version: 1
name: sales-report
description: Monthly sales by region
params:
  region: {type: enum, values: [EU, US, APAC], default: EU, description: Sales region}
  since: {type: date, required: true}
  min_amount: {type: number, default: 0}
assets: [data/sales.csv]
steps:
  - id: sales
    read: data/sales.csv
  - id: by_region
    sql: |
      SELECT region, sum(amount) AS total FROM sales
      WHERE region = $region AND day >= $since AND amount >= $min_amount GROUP BY region
  - id: export
    write: {table: by_region, path: "out/by_region_\${region}.csv"}
  - id: chart
    python: print(1)
    inputs: [by_region]
    timeout: 5m
  - id: hello
    shell: echo "hello $region"
    needs: [chart]
  - id: tool
    command: [python3, -c, "print(1)", "\${region}"]
    env: {REGION: "\${region}"}
outputs: [by_region, chart]
`;

describe('parseWorkflow', () => {
  it('accepts the reference workflow and derives dependencies from table references', async () => {
    const workflow = await parseWorkflow(valid);
    expect(workflow.name).toBe('sales-report');
    expect(workflow.params.map((param) => [param.name, param.type, param.required, param.default])).toEqual([
      ['region', 'enum', false, 'EU'],
      ['since', 'date', true, undefined],
      ['min_amount', 'number', false, 0],
    ]);
    const byId = new Map(workflow.steps.map((step) => [step.id, step]));
    expect(byId.get('by_region')?.needs).toEqual(['sales']);
    const byRegion = byId.get('by_region');
    expect(byRegion?.kind === 'sql' && byRegion.spec.params).toEqual(['region', 'since', 'min_amount']);
    expect(byId.get('export')?.needs).toEqual(['by_region']);
    expect(byId.get('chart')?.needs).toEqual(['by_region']);
    expect(byId.get('chart')?.timeoutMs).toBe(300_000);
    expect(byId.get('hello')?.needs).toEqual(['chart']);
    expect(workflow.outputs).toEqual(['by_region', 'chart']);
    expect(workflow.assets).toEqual(['data/sales.csv']);
    expect(describeWorkflow(workflow).steps).toContainEqual({ id: 'hello', kind: 'shell', needs: ['chart'] });
  });

  it('accepts the same workflow written as JSON and reports JSON syntax errors with a line', async () => {
    const json = JSON.stringify({ name: 'j', steps: [{ id: 'a', sql: 'SELECT 1 AS x' }] }, null, 2);
    expect((await parseWorkflow(json, { fileName: 'j.json' })).format).toBe('json');
    const broken = '{\n  "name": "j",\n  "steps": [\n    {"id": "a",}\n  ]\n}';
    const { message, issues } = await invalidIssues(broken, { format: 'json' });
    expect(message).toMatch(/JSON syntax error/);
    expect(issues[0]?.line).toBe(4);
  });

  it('defaults outputs to every leaf step', async () => {
    const workflow = await parseWorkflow(
      'name: w\nsteps:\n  - id: a\n    sql: SELECT 1 AS x\n  - id: b\n    sql: SELECT * FROM a\n  - id: c\n    shell: "true"\n',
    );
    expect(workflow.outputs).toEqual(['b', 'c']);
  });

  it('reports a YAML syntax error with its line', async () => {
    const { message, issues } = await invalidIssues('name: w\nsteps:\n  - id: a\n    sql: [unclosed\n');
    expect(message).toMatch(/YAML syntax error/);
    expect(issues[0]?.line).toBeGreaterThanOrEqual(4);
  });

  it('reports an unknown key with its path and line', async () => {
    const { message, issues } = await invalidIssues(
      'name: w\nsteps:\n  - id: a\n    sql: SELECT 1\n    colour: red\n',
    );
    expect(message).toContain('steps.0.colour: unknown key "colour"');
    expect(issues[0]).toMatchObject({ path: 'steps.0.colour', line: 5 });
  });

  it('reports a step without an id, and duplicate step ids', async () => {
    const missing = await invalidIssues('name: w\nsteps:\n  - sql: SELECT 1\n');
    expect(missing.issues[0]).toMatchObject({ path: 'steps.0.id', message: 'is required', line: 3 });
    const duplicate = await invalidIssues(
      'name: w\nsteps:\n  - id: a\n    sql: SELECT 1\n  - id: a\n    sql: SELECT 2\n',
    );
    expect(duplicate.issues[0]).toMatchObject({ path: 'steps.1.id', line: 5 });
    expect(duplicate.message).toContain('duplicate step id "a"');
  });

  it('reports a step with no kind and a step with several kinds', async () => {
    const none = await invalidIssues('name: w\nsteps:\n  - id: a\n    needs: []\n');
    expect(none.issues[0]).toMatchObject({ path: 'steps.0', line: 3 });
    expect(none.message).toContain('step "a" has no kind');
    const several = await invalidIssues(
      'name: w\nsteps:\n  - id: a\n    sql: SELECT 1\n    shell: echo hi\n',
    );
    expect(several.issues[0]).toMatchObject({ path: 'steps.0.shell', line: 5 });
    expect(several.message).toContain('several kinds (sql, shell)');
  });

  it('names an unknown step key and the kind it is closest to', async () => {
    const typo = await invalidIssues('name: w\nsteps:\n  - id: a\n    Python: print(1)\n    timeout: 5m\n');
    expect(typo.issues[0]).toMatchObject({ path: 'steps.0', line: 3 });
    expect(typo.message).toContain(
      'step "a" has no kind (unknown key "Python" (did you mean "python"?)): expected one of read, sql, write, shell, python, command',
    );
    const far = await invalidIssues('name: w\nsteps:\n  - id: a\n    frobnicate: 1\n');
    expect(far.message).toContain('step "a" has no kind (unknown key "frobnicate"): expected one of');
  });

  it('at push, refuses a relative read path that no asset, write step or earlier script provides', async () => {
    const push = { requireReadSources: true };
    const unlisted = await invalidIssues('name: w\nsteps:\n  - id: a\n    read: data/sales.csv\n', push);
    expect(unlisted.issues[0]).toMatchObject({ path: 'steps.0.read', line: 4 });
    expect(unlisted.message).toContain(
      'step "a" reads "data/sales.csv", which is not in the workflow\'s assets',
    );
    // Provided: an asset (or a file in an asset directory), a write step's target, a file made by a script
    // step it needs; not checked: absolute paths, params, globs, URLs.
    for (const source of [
      'name: w\nassets: [data/sales.csv]\nsteps:\n  - id: a\n    read: data/sales.csv\n',
      'name: w\nassets: [data]\nsteps:\n  - id: a\n    read: ./data/sales.csv\n',
      'name: w\nsteps:\n  - id: a\n    sql: SELECT 1 AS x\n  - id: w\n    write: {table: a, path: out/a.csv}\n  - id: b\n    read: out/a.csv\n    needs: [w]\n',
      'name: w\nsteps:\n  - id: make\n    shell: echo x > made.csv\n  - id: b\n    read: made.csv\n    needs: [make]\n',
      'name: w\nsteps:\n  - id: a\n    read: /srv/data/sales.csv\n',
      'name: w\nparams:\n  file: {type: string, default: x.csv}\nsteps:\n  - id: a\n    read: {path: "${file}", format: csv}\n',
      'name: w\nsteps:\n  - id: a\n    read: {path: "data/*.csv", format: csv}\n',
    ]) {
      await expect(parseWorkflow(source, push), source).resolves.toBeDefined();
    }
    // The engine alone (a library caller that places files itself) does not check.
    await expect(
      parseWorkflow('name: w\nsteps:\n  - id: a\n    read: data/sales.csv\n'),
    ).resolves.toBeDefined();
  });

  it('reports needs naming an unknown step', async () => {
    const { issues } = await invalidIssues(
      'name: w\nsteps:\n  - id: a\n    shell: "true"\n    needs: [ghost]\n',
    );
    expect(issues[0]).toMatchObject({
      path: 'steps.0.needs.0',
      message: 'step "a" needs unknown step "ghost"',
      line: 5,
    });
  });

  it('reports SQL that reads an unknown table or a non-table step, naming the step and line', async () => {
    const unknown = await invalidIssues(
      'name: w\nsteps:\n  - id: a\n    sql: SELECT 1 AS x\n  - id: b\n    sql: |\n      WITH t AS (SELECT * FROM a)\n      SELECT * FROM t JOIN salez USING (x)\n',
    );
    expect(unknown.issues).toHaveLength(1);
    expect(unknown.issues[0]).toMatchObject({ path: 'steps.1.sql', line: 6 });
    expect(unknown.message).toContain('step "b" reads unknown table "salez" (tables: a, b)');
    const script = await invalidIssues(
      'name: w\nsteps:\n  - id: s\n    shell: "true"\n  - id: b\n    sql: SELECT * FROM s\n',
    );
    expect(script.message).toContain('"s", which is a shell step and produces no table');
  });

  it('allows SQL to read a table step declared later, as a dependency', async () => {
    const workflow = await parseWorkflow(
      'name: w\nsteps:\n  - id: b\n    sql: SELECT * FROM a\n  - id: a\n    sql: SELECT 1 AS x\n',
    );
    expect(workflow.steps[0]?.needs).toEqual(['a']);
  });

  it('reports SQL using an undeclared param, positional params and statements other than one SELECT', async () => {
    const param = await invalidIssues(
      'name: w\nparams:\n  n: {type: integer, default: 1}\nsteps:\n  - id: a\n    sql: SELECT $m AS x\n',
    );
    expect(param.issues[0]).toMatchObject({ path: 'steps.0.sql', line: 6 });
    expect(param.message).toContain('$m is not a declared param (params: n)');
    const positional = await invalidIssues('name: w\nsteps:\n  - id: a\n    sql: SELECT $1 AS x\n');
    expect(positional.message).toContain('positional parameters');
    const del = await invalidIssues('name: w\nsteps:\n  - id: a\n    sql: DELETE FROM t\n');
    expect(del.message).toContain('steps.0.sql: step "a": expected one SELECT');
    const two = await invalidIssues('name: w\nsteps:\n  - id: a\n    sql: SELECT 1; DROP TABLE a\n');
    expect(two.message).toContain('steps.0.sql');
    const syntax = await invalidIssues(
      'name: w\nsteps:\n  - id: a\n    sql: |\n      SELECT 1\n      FROMM x\n',
    );
    expect(syntax.issues[0]).toMatchObject({ path: 'steps.0.sql' });
    expect(syntax.message).toMatch(/syntax error/i);
  });

  it('names the cycle a → b → a', async () => {
    const { message, issues } = await invalidIssues(
      'name: w\nsteps:\n  - id: a\n    shell: "true"\n    needs: [b]\n  - id: b\n    shell: "true"\n    needs: [a]\n',
    );
    expect(message).toMatch(/steps form a cycle: (a → b → a|b → a → b)/);
    expect(issues[0]?.line).toBeDefined();
  });

  it('names a cycle made by table references', async () => {
    const { message } = await invalidIssues(
      'name: w\nsteps:\n  - id: a\n    sql: SELECT * FROM b\n  - id: b\n    sql: SELECT * FROM a\n',
    );
    expect(message).toContain('cycle');
  });

  it('reports bad param definitions: a default of the wrong type, an enum without values, a clashing name', async () => {
    const badDefault = await invalidIssues(
      'name: w\nparams:\n  since:\n    type: date\n    default: yesterday\nsteps:\n  - id: a\n    sql: SELECT 1\n',
    );
    expect(badDefault.issues[0]).toMatchObject({ path: 'params.since.default', line: 5 });
    expect(badDefault.message).toContain(
      'params.since.default: expected a date like 2026-01-31, got "yesterday"',
    );
    const enumWithout = await invalidIssues(
      'name: w\nparams:\n  region: {type: enum}\nsteps:\n  - id: a\n    sql: SELECT 1\n',
    );
    expect(enumWithout.issues[0]).toMatchObject({ path: 'params.region.values', line: 3 });
    const clash = await invalidIssues(
      'name: w\nparams:\n  path: {type: string}\n  steward_job: {type: string}\nsteps:\n  - id: a\n    sql: SELECT 1\n',
    );
    expect(clash.issues.map((issue) => issue.path)).toEqual(['params.path', 'params.steward_job']);
    expect(clash.issues[0]?.line).toBe(3);
    const badType = await invalidIssues(
      'name: w\nparams:\n  n: {type: float}\nsteps:\n  - id: a\n    sql: SELECT 1\n',
    );
    expect(badType.issues[0]).toMatchObject({ path: 'params.n.type', line: 3 });
  });

  it('reports ${name} placeholders naming unknown params in paths, args and env', async () => {
    const { issues } = await invalidIssues(
      'name: w\nparams:\n  region: {type: string, default: EU}\nsteps:\n  - id: a\n    read: "in_${regoin}.csv"\n  - id: c\n    command: [echo, "${nope}", "$${literal}"]\n    env: {X: "${missing}"}\n  - id: w\n    write: {table: a, path: "out/${zone}.csv"}\n',
    );
    expect(issues.map((issue) => [issue.path, issue.line])).toEqual([
      ['steps.0.read', 6],
      ['steps.1.command.1', 8],
      ['steps.1.env.X', 9],
      ['steps.2.write.path', 11],
    ]);
    expect(issues[0]?.message).toBe('${regoin} refers to an unknown param');
  });

  it('reports outputs naming unknown steps and writes or inputs naming non-table steps', async () => {
    const outputs = await invalidIssues('name: w\nsteps:\n  - id: a\n    sql: SELECT 1\noutputs: [a, b]\n');
    expect(outputs.issues[0]).toMatchObject({
      path: 'outputs.1',
      message: 'output "b" is not a step',
      line: 5,
    });
    const write = await invalidIssues(
      'name: w\nsteps:\n  - id: s\n    shell: "true"\n  - id: w\n    write: {table: s, path: x.csv}\n',
    );
    expect(write.issues[0]).toMatchObject({ path: 'steps.1.write.table', line: 6 });
    const inputs = await invalidIssues(
      'name: w\nsteps:\n  - id: s\n    shell: "true"\n  - id: p\n    python: print(1)\n    inputs: [s]\n',
    );
    expect(inputs.issues[0]).toMatchObject({ path: 'steps.1.inputs.0', line: 7 });
    expect(inputs.message).toContain('which is a shell step and produces no table');
  });

  it('reports asset paths that are absolute or climb out with ..', async () => {
    const { issues } = await invalidIssues(
      'name: w\nassets: [/etc/passwd, ../secret.csv, ok/x.csv]\nsteps:\n  - id: a\n    sql: SELECT 1\n',
    );
    expect(issues.map((issue) => issue.path)).toEqual(['assets.0', 'assets.1']);
  });

  it('reports a bad step timeout and a bad workflow name', async () => {
    const timeout = await invalidIssues('name: w\nsteps:\n  - id: a\n    shell: "true"\n    timeout: soon\n');
    expect(timeout.issues[0]).toMatchObject({ path: 'steps.0.timeout', line: 5 });
    const name = await invalidIssues('name: Bad Name\nsteps:\n  - id: a\n    shell: "true"\n');
    expect(name.issues[0]).toMatchObject({ path: 'name', line: 1 });
  });
});

describe('workflow-level cluster', () => {
  const base = `name: where
steps:
  - id: one
    sql: SELECT 1 AS x
`;

  it('reads the cluster its jobs run on unless the submit names one', async () => {
    expect((await parseWorkflow(`${base}cluster: dev\n`)).cluster).toBe('dev');
    expect((await parseWorkflow(base)).cluster).toBeUndefined();
  });

  it('refuses a cluster that is not a cluster name, at its line', async () => {
    const { issues } = await invalidIssues(`${base}cluster: Dev Cluster\n`);
    expect(issues).toEqual([expect.objectContaining({ path: 'cluster', line: 5 })]);
  });
});

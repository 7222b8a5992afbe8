// Lists the functions in src/ (or the files given) longer than a limit, longest first, with the TypeScript
// compiler's parser. The code rules ask for functions under about 80 lines; this shows where they are not.
// Usage: node scripts/long-functions.mjs [--max N] [files…]
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

const args = process.argv.slice(2);
let max = 80;
const maxAt = args.indexOf('--max');
if (maxAt >= 0) {
  max = Number(args[maxAt + 1]);
  args.splice(maxAt, 2);
}
const files = args.length > 0 ? args : sources('src');

/** The .ts files under `dir`. */
function sources(dir) {
  return readdirSync(dir, { recursive: true })
    .filter((name) => name.endsWith('.ts'))
    .map((name) => path.join(dir, name));
}

/** A function's name as a reader would look for it. */
function nameOf(node) {
  if (node.name) return node.name.getText();
  const parent = node.parent;
  if (ts.isVariableDeclaration(parent) || ts.isPropertyAssignment(parent)) return parent.name.getText();
  if (ts.isCallExpression(parent)) return `(argument of ${parent.expression.getText().slice(0, 40)})`;
  return '(anonymous)';
}

const long = [];
for (const file of files) {
  const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
  const visit = (node) => {
    if (ts.isFunctionLike(node) && node.body) {
      const first = source.getLineAndCharacterOfPosition(node.getStart()).line + 1;
      const last = source.getLineAndCharacterOfPosition(node.end).line + 1;
      if (last - first + 1 > max)
        long.push({ lines: last - first + 1, where: `${file}:${first}`, name: nameOf(node) });
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
}
for (const { lines, where, name } of long.sort((a, b) => b.lines - a.lines)) {
  console.log(`${String(lines).padStart(4)}  ${where}  ${name}`);
}

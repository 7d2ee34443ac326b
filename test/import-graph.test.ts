import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import test from 'ava';
import ts from 'typescript';
import { ROOT } from './helpers/gateway.js';

/**
 * The shape of src/'s imports, read from the code with the TypeScript parser: static imports (those
 * that load a module at run time; `import type` loads nothing) and dynamic `import()` calls, kept apart.
 */
const SRC = join(ROOT, 'src');

function graph(): Map<string, { static: string[]; dynamic: string[] }> {
  const files = readdirSync(SRC, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
  const edges = new Map<string, { static: string[]; dynamic: string[] }>();
  for (const f of files) {
    const file = join(SRC, f);
    const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest);
    const out = { static: [] as string[], dynamic: [] as string[] };
    const target = (spec: ts.Expression) =>
      ts.isStringLiteral(spec) && spec.text.startsWith('.') ? relative(SRC, resolve(dirname(file), spec.text.replace(/\.js$/, '.ts'))) : undefined;
    const visit = (node: ts.Node): void => {
      if (ts.isImportDeclaration(node) && !node.importClause?.isTypeOnly) {
        // `import { type A, type B } from` loads nothing either
        const named = node.importClause?.namedBindings;
        const onlyTypes = !node.importClause?.name && named && ts.isNamedImports(named) && named.elements.length > 0 && named.elements.every((e) => e.isTypeOnly);
        const to = target(node.moduleSpecifier);
        if (to && !onlyTypes) out.static.push(to);
      } else if (ts.isExportDeclaration(node) && node.moduleSpecifier && !node.isTypeOnly) {
        const to = target(node.moduleSpecifier);
        if (to) out.static.push(to);
      } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword && node.arguments[0]) {
        const to = target(node.arguments[0]);
        if (to) out.dynamic.push(to);
      }
      ts.forEachChild(node, visit);
    };
    visit(source);
    edges.set(f, out);
  }
  return edges;
}

const edges = graph();

test('the import graph is read: main.ts imports the server and loads the simulator with import()', (t) => {
  t.true(edges.get('main.ts')!.static.includes('server/app.ts'));
  t.true(edges.get('main.ts')!.dynamic.includes('dev/simulator.ts'));
  t.true(edges.get('cli.ts')!.dynamic.includes('dev/simulator.ts'));
});

test('no import cycle in src/ (static imports)', (t) => {
  const cycles: string[] = [];
  const state = new Map<string, 'open' | 'done'>();
  const walk = (f: string, path: string[]): void => {
    if (state.get(f) === 'done') return;
    if (state.get(f) === 'open') {
      cycles.push([...path.slice(path.indexOf(f)), f].join(' → '));
      return;
    }
    state.set(f, 'open');
    for (const to of edges.get(f)?.static ?? []) walk(to, [...path, f]);
    state.set(f, 'done');
  };
  for (const f of edges.keys()) walk(f, []);
  t.deepEqual(cycles, []);
});

test('nothing outside src/dev/ imports src/dev/ statically: the dev tools are loaded with import() only when the config asks', (t) => {
  const dev = 'dev/';
  const offenders = [...edges].flatMap(([f, e]) => (f.startsWith(dev) ? [] : e.static.filter((to) => to.startsWith(dev)).map((to) => `${f} → ${to}`)));
  t.deepEqual(offenders, []);
});

/**
 * The layers, bottom first (README, Architecture): a file may import its own layer and those below,
 * never one above. A new folder or top-level file must be given its place here.
 */
const LAYERS: string[][] = [
  ['base', 'v8-flags.ts'],
  ['config', 'metrics', 'cluster-messages.ts'],
  ['redis', 'request'],
  ['wechat', 'session'],
  ['events', 'endpoints'],
  ['login', 'web', 'proxy', 'admin'],
  ['server', 'dev'],
  ['inspect.ts', 'main.ts'],
  ['cluster.ts', 'cluster-worker.ts'],
  ['cli.ts'],
];
const layerOf = (f: string): number => LAYERS.findIndex((names) => names.includes(f.split('/')[0]!));

test('every file of src/ has its layer', (t) => {
  t.deepEqual([...edges.keys()].filter((f) => layerOf(f) < 0), []);
});

test('imports point downward: no file imports a layer above its own', (t) => {
  const upward = [...edges].flatMap(([f, e]) => e.static.filter((to) => layerOf(to) > layerOf(f)).map((to) => `${f} → ${to}`));
  t.deepEqual(upward, []);
  // the check sees real edges: the assembly imports the layers below it
  t.true(edges.get('server/app.ts')!.static.some((to) => layerOf(to) < layerOf('server/app.ts')));
});

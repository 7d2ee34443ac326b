import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { configSchema } from '../src/config/schema.js';
import { ROOT } from './helpers/gateway.js';

/**
 * README's configuration reference is checked against the schema: every key the schema accepts is in
 * the table (by its full dotted name, or named in the row of its parent), and every name the table's
 * first column gives is a key the schema accepts.
 */
type Def = { type: string; shape?: Record<string, unknown>; innerType?: unknown; element?: unknown; in?: unknown; options?: unknown[] };

function schemaKeys(schema: unknown, prefix: string, out: string[]): void {
  const def = (schema as { _zod: { def: Def } })._zod.def;
  switch (def.type) {
    case 'object':
      for (const [k, v] of Object.entries(def.shape!)) {
        const p = prefix ? `${prefix}.${k}` : k;
        const before = out.length;
        schemaKeys(v, p, out);
        if (out.length === before) out.push(p);
      }
      return;
    case 'optional':
    case 'default':
    case 'prefault':
    case 'nullable':
    case 'readonly':
    case 'catch':
      return schemaKeys(def.innerType, prefix, out);
    case 'array':
      return schemaKeys(def.element, `${prefix}[]`, out);
    case 'pipe':
      return schemaKeys(def.in, prefix, out);
    case 'union':
      for (const o of def.options!) {
        const before = out.length;
        schemaKeys(o, prefix, out);
        if (out.length > before) return;
      }
      return;
    default:
      return;
  }
}

interface Row {
  names: string[];
  meaning: string;
}

/** The configuration table: first cell's names made absolute ("server.requestTimeout", "headersTimeout" → server.headersTimeout). */
function tableRows(readme: string): Row[] {
  const section = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('### Routes'));
  const rows: Row[] = [];
  for (const line of section.split('\n')) {
    if (!line.startsWith('| `')) continue;
    const cells = line.split(' | ');
    const first = cells[0]!.slice(2);
    let parent = '';
    const names: string[] = [];
    for (const m of first.matchAll(/`([^`]+)`/g)) {
      const n = m[1]!;
      if (n.includes('.') || n.includes('[')) {
        names.push(n);
        parent = n.slice(0, Math.max(n.lastIndexOf('.'), 0));
      } else if (parent) names.push(`${parent}.${n}`);
      else names.push(n);
    }
    rows.push({ names, meaning: cells.slice(2).join(' | ') });
  }
  return rows;
}

const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
const keys: string[] = [];
schemaKeys(configSchema, '', keys);
const rows = tableRows(readme);

test('the schema walk finds the keys (it is not vacuous)', (t) => {
  t.true(keys.length > 80, `${keys.length} keys`);
  for (const k of ['server.port', 'session.cache.negativeTtl', 'routes[].path', 'wechat.apps[].externalToken.url', 'web.scan.ticketTtl', 'log.openid']) t.true(keys.includes(k), k);
  t.true(rows.length > 40, `${rows.length} rows`);
});

test('every configuration key is in README\'s configuration table', (t) => {
  const undocumented = keys.filter((k) => {
    if (rows.some((r) => r.names.includes(k))) return false;
    // named in the row of an ancestor ("wechat.apps[]": "{ appid, secret, … }")
    const last = k.slice(k.lastIndexOf('.') + 1);
    return !rows.some((r) => r.names.some((n) => k.startsWith(`${n}.`) || k.startsWith(`${n}[]`)) && new RegExp(`\\b${last}\\b`).test(r.meaning));
  });
  t.deepEqual(undocumented, []);
});

test('every key README\'s table names exists in the schema', (t) => {
  const known = new Set<string>();
  for (const k of keys) {
    const parts = k.split('.');
    for (let i = 1; i <= parts.length; i++) known.add(parts.slice(0, i).join('.'));
  }
  const unknown = rows.flatMap((r) => r.names).filter((n) => !known.has(n));
  t.deepEqual(unknown, []);
});

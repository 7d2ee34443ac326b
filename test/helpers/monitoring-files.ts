import { checkExpr, fmt, newUsage, type Usage } from './promql-check.js';
import type { Exposition } from './exposition.js';

/**
 * The checks of config/grafana-dashboard.json and config/prometheus-alerts.yml: well-formed (panels
 * with targets on the Prometheus datasource, alerts with `for`, severity and annotations), and every
 * expression, legend and annotation true to the gateway's series (test/helpers/promql-check.ts).
 */

const DS_UID = '${DS_PROMETHEUS}';
const DURATION = /^(\d+(ms|[smhdwy]))+$/;
const RULE_KEYS = new Set(['alert', 'expr', 'for', 'keep_firing_for', 'labels', 'annotations']);

export interface Panel {
  id?: number;
  type?: string;
  title?: string;
  gridPos?: { x: number; y: number; w: number; h: number };
  datasource?: { type?: string; uid?: string };
  targets?: Array<{ refId?: string; expr?: string; legendFormat?: string; datasource?: { uid?: string } }>;
  panels?: Panel[];
}

export function checkDashboard(exp: Exposition, dash: any, usage: Usage = newUsage()): string[] {
  const problems: string[] = [];
  if (typeof dash?.title !== 'string' || !dash.title) problems.push('the dashboard has no title');
  if (typeof dash?.uid !== 'string' || !dash.uid) problems.push('the dashboard has no uid');
  if (typeof dash?.schemaVersion !== 'number' || dash.schemaVersion < 36) problems.push(`schemaVersion ${dash?.schemaVersion} (want 36 or later)`);
  const input = (dash?.__inputs ?? []).find((i: any) => i?.name === 'DS_PROMETHEUS');
  if (input?.type !== 'datasource' || input?.pluginId !== 'prometheus') problems.push('no __inputs entry DS_PROMETHEUS (a prometheus datasource)');

  const all: Panel[] = [];
  const walk = (ps: unknown) => {
    if (!Array.isArray(ps)) return;
    for (const p of ps as Panel[]) {
      all.push(p);
      walk(p.panels);
    }
  };
  walk(dash?.panels);
  const ids = new Set<number>();
  const cells = new Map<string, string>();
  const panels = all.filter((p) => p.type !== 'row');
  if (panels.length === 0) problems.push('the dashboard has no panels');
  for (const p of all) {
    const name = `panel ${p.id} "${p.title}"`;
    if (typeof p.id !== 'number' || ids.has(p.id)) problems.push(`${name}: id missing or repeated`);
    else ids.add(p.id);
    const g = p.gridPos;
    if (!g || ![g.x, g.y, g.w, g.h].every((n) => Number.isInteger(n) && n >= 0) || g.x + g.w > 24) problems.push(`${name}: gridPos missing or outside the 24 columns`);
    else {
      const over = new Set<string>();
      for (let x = g.x; x < g.x + g.w; x++) for (let y = g.y; y < g.y + g.h; y++) {
        const other = cells.get(`${x},${y}`);
        if (other) over.add(other);
        cells.set(`${x},${y}`, name);
      }
      for (const other of over) problems.push(`${name}: overlaps ${other}`);
    }
    if (p.type === 'row') continue;
    if (!p.type || !p.title) problems.push(`${name}: no type or title`);
    if (p.datasource?.uid !== DS_UID) problems.push(`${name}: datasource is not ${DS_UID}`);
    if (!Array.isArray(p.targets) || p.targets.length === 0) {
      problems.push(`${name}: no targets`);
      continue;
    }
    const refIds = new Set<string>();
    for (const t of p.targets) {
      const tname = `${name} target ${t.refId}`;
      if (!t.refId || refIds.has(t.refId)) problems.push(`${tname}: refId missing or repeated`);
      else refIds.add(t.refId);
      if (t.datasource && t.datasource.uid !== DS_UID) problems.push(`${tname}: datasource is not ${DS_UID}`);
      if (typeof t.expr !== 'string' || !t.expr.trim()) {
        problems.push(`${tname}: no expr`);
        continue;
      }
      const local: string[] = [];
      const ty = checkExpr(exp, t.expr, local, usage);
      if (ty.k === 'vector' && !ty.unknown) {
        for (const [, l] of (t.legendFormat ?? '').matchAll(/\{\{\s*([a-zA-Z_]\w*)\s*\}\}/g)) {
          if (!ty.labels.has(l!)) local.push(`legend {{${l}}}: the result has no label "${l}" (it has ${fmt(ty.labels)})`);
        }
      }
      problems.push(...local.map((m) => `${tname}: ${m}\n    ${t.expr}`));
    }
  }

  for (const v of dash?.templating?.list ?? []) {
    if (v?.type !== 'query') continue;
    const q: string = typeof v.query === 'string' ? v.query : (v.query?.query ?? v.definition ?? '');
    const name = `variable $${v.name}`;
    if (v.datasource?.uid !== DS_UID) problems.push(`${name}: datasource is not ${DS_UID}`);
    const m = /^label_values\((?:(.*),)?\s*([a-zA-Z_]\w*)\s*\)$/s.exec(q.trim());
    if (!m) {
      problems.push(`${name}: not a label_values(...) query: ${q}`);
      continue;
    }
    const local: string[] = [];
    if (m[1]) {
      const ty = checkExpr(exp, m[1], local, usage);
      if (ty.k === 'vector' && !ty.unknown && !ty.labels.has(m[2]!)) local.push(`the series have no label "${m[2]}" (they have ${fmt(ty.labels)})`);
      usage.labels.add(m[2]!);
    }
    problems.push(...local.map((x) => `${name}: ${x}`));
  }
  return [...new Set(problems)];
}

export function checkAlerts(exp: Exposition, doc: any, usage: Usage = newUsage()): string[] {
  const problems: string[] = [];
  const groups = doc?.groups;
  if (!Array.isArray(groups) || groups.length === 0) return ['no groups'];
  const names = new Set<string>();
  const groupNames = new Set<string>();
  for (const g of groups) {
    if (typeof g?.name !== 'string' || groupNames.has(g.name)) problems.push(`group "${g?.name}": name missing or repeated`);
    groupNames.add(g?.name);
    if (!Array.isArray(g?.rules) || g.rules.length === 0) {
      problems.push(`group "${g?.name}": no rules`);
      continue;
    }
    for (const r of g.rules) {
      const name = `alert ${r?.alert ?? '(unnamed)'}`;
      for (const key of Object.keys(r ?? {})) {
        if (!RULE_KEYS.has(key)) problems.push(`${name}: unknown key "${key}"`);
      }
      if (typeof r?.alert !== 'string' || !/^[A-Za-z][A-Za-z0-9_]*$/.test(r.alert)) problems.push(`${name}: every rule must be an alert with a name`);
      else if (names.has(r.alert)) problems.push(`${name}: repeated`);
      names.add(r?.alert);
      if (typeof r?.for !== 'string' || !DURATION.test(r.for)) problems.push(`${name}: no "for" duration`);
      if (!['critical', 'warning', 'info'].includes(r?.labels?.severity)) problems.push(`${name}: labels.severity must be critical, warning or info`);
      for (const key of ['summary', 'description']) {
        if (typeof r?.annotations?.[key] !== 'string' || !r.annotations[key].trim()) problems.push(`${name}: no annotations.${key}`);
      }
      if (typeof r?.expr !== 'string' || !r.expr.trim()) {
        problems.push(`${name}: no expr`);
        continue;
      }
      const local: string[] = [];
      const ty = checkExpr(exp, r.expr, local, usage);
      if (ty.k !== 'vector') local.push('the expression is not a vector');
      else if (!ty.unknown) {
        const texts = [...Object.values(r.annotations ?? {}), ...Object.values(r.labels ?? {})].filter((x): x is string => typeof x === 'string');
        for (const text of texts) {
          for (const [, l] of text.matchAll(/\$labels\.([a-zA-Z_]\w*)/g)) {
            if (!ty.labels.has(l!)) local.push(`$labels.${l}: the alert has no label "${l}" (it has ${fmt(ty.labels)})`);
          }
        }
      }
      problems.push(...local.map((m) => `${name}: ${m}\n    ${r.expr.trim().replace(/\s+/g, ' ')}`));
    }
  }
  return [...new Set(problems)];
}

/**
 * config/grafana-dashboard.json and config/prometheus-alerts.yml against the metrics a real gateway
 * exposes: every metric, label and (enumerable) label value their PromQL names must be on a running
 * gateway's /metrics, and the files must be well-formed (panels with targets, alerts with `for`,
 * severity and annotations). A small PromQL reader below works out which labels each expression has,
 * so a `by (...)`, a selector, a legend `{{label}}` or an annotation `$labels.x` that names a label the
 * series do not have is caught too. The last tests check the deployment files (Dockerfile, compose).
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { buildConfig } from '../src/config/load.js';
import { createMetrics } from '../src/metrics/metrics.js';
import { ERRORS } from '../src/base/errors.js';
import { startSimulator } from '../src/dev/simulator.js';
import { APPID, ROOT, SECRET, login, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { request } from './helpers/http.js';
import { scrape } from './helpers/metrics.js';
import { freePort } from './helpers/ports.js';
import { startUpstream, type Upstream } from './helpers/upstream.js';

const DASHBOARD_FILE = join(ROOT, 'config/grafana-dashboard.json');
const ALERTS_FILE = join(ROOT, 'config/prometheus-alerts.yml');

// ---------------------------------------------------------------------------------------------------
// What the gateway exposes
// ---------------------------------------------------------------------------------------------------

/** Labels Prometheus adds to every scraped series (target labels), not in /metrics itself. */
const TARGET_LABELS = ['job', 'instance'];
/** Series Prometheus makes up itself for each target. */
const SYNTHETIC: Record<string, string[]> = { up: [] };
/** Labels whose values are open sets (config, traffic, versions): their values are not checked. */
const FREE_LABELS = new Set(['job', 'instance', 'route', 'target', 'status', 'method', 'appid', 'le', 'quantile', 'version', 'major', 'minor', 'patch']);

interface Family {
  type: string;
  help: string;
  /** sample name (family name, or with _bucket/_sum/_count) → label → values seen */
  samples: Map<string, Map<string, Set<string>>>;
  /** label names declared on the metric (from the registry), for families with no sample yet */
  declared: string[];
}

interface Exposition {
  families: Map<string, Family>;
  /** family → label → values the gateway may give it besides those seen (from its HELP text and sources) */
  knownValues: Map<string, Map<string, RegExp[]>>;
}

function parseExposition(text: string, declared: (family: string) => string[]): Exposition {
  const families = new Map<string, Family>();
  const family = (name: string) => {
    let f = families.get(name);
    if (!f) families.set(name, (f = { type: 'untyped', help: '', samples: new Map(), declared: declared(name) }));
    return f;
  };
  for (const line of text.split('\n')) {
    let m: RegExpExecArray | null;
    if ((m = /^# TYPE (\S+) (\S+)$/.exec(line))) family(m[1]!).type = m[2]!;
    else if ((m = /^# HELP (\S+) (.*)$/.exec(line))) family(m[1]!).help = m[2]!;
    else if ((m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? \S+$/.exec(line))) {
      const name = m[1]!;
      const base = familyOf(families, name);
      if (!base) throw new Error(`sample ${name} has no # TYPE line`);
      const labels = base.samples.get(name) ?? new Map<string, Set<string>>();
      base.samples.set(name, labels);
      for (const [, k, v] of (m[2] ?? '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)) {
        if (!labels.has(k!)) labels.set(k!, new Set());
        labels.get(k!)!.add(v!);
      }
    }
  }
  return { families, knownValues: new Map() };
}

const SUFFIXES: Record<string, string[]> = { histogram: ['_bucket', '_sum', '_count'], summary: ['_sum', '_count'] };

/** The family a sample name belongs to: itself (counter, gauge), or a histogram's/summary's with its suffix. */
function familyOf(families: Map<string, Family>, sample: string): Family | undefined {
  const f = families.get(sample);
  if (f && !SUFFIXES[f.type]) return f;
  for (const [type, suffixes] of Object.entries(SUFFIXES)) {
    for (const s of suffixes) {
      if (!sample.endsWith(s)) continue;
      const base = families.get(sample.slice(0, -s.length));
      if (base?.type === type) return base;
    }
  }
  return undefined;
}

function familyName(exp: Exposition, sample: string): string | undefined {
  for (const [name, f] of exp.families) if (familyOf(new Map([[name, f]]), sample)) return name;
  return SYNTHETIC[sample] ? sample : undefined;
}

/** The label names a series of this sample name has (target labels included), or undefined if there is no such series. */
function labelsOf(exp: Exposition, sample: string): Set<string> | undefined {
  if (SYNTHETIC[sample]) return new Set([...SYNTHETIC[sample]!, ...TARGET_LABELS]);
  const f = familyOf(exp.families, sample);
  if (!f) return undefined;
  const out = new Set([...TARGET_LABELS, ...f.declared]);
  for (const k of f.samples.get(sample)?.keys() ?? []) out.add(k);
  if (sample.endsWith('_bucket') && f.type === 'histogram') out.add('le');
  else out.delete('le');
  if (f.type === 'summary' && sample !== familyName(exp, sample)) out.delete('quantile');
  return out;
}

/** Whether `value` is one the label may have: seen on /metrics, or named in the HELP text or the extra known values. */
function valueKnown(exp: Exposition, sample: string, label: string, value: string): boolean {
  const name = familyName(exp, sample);
  const f = name ? exp.families.get(name) : undefined;
  if (!f) return true; // unknown metric: reported already
  for (const labels of f.samples.values()) if (labels.get(label)?.has(value)) return true;
  // HELP texts list the values: "by source: lru, store, negative, miss, error" or "errcode_<n>"
  for (const word of f.help.match(/[A-Za-z0-9_<>-]+/g) ?? []) {
    const re = new RegExp(`^${word.replace(/[-]/g, '\\-').replace(/<n>/g, '-?\\d+')}$`);
    if (re.test(value)) return true;
  }
  return (exp.knownValues.get(name!)?.get(label) ?? []).some((re) => re.test(value));
}

// ---------------------------------------------------------------------------------------------------
// A PromQL reader: enough of the grammar for dashboards and alert rules, with the labels of each result
// ---------------------------------------------------------------------------------------------------

type Tok = { t: 'ident' | 'num' | 'str' | 'dur' | 'range' | 'var' | 'p'; v: string };

function tokenize(src: string): Tok[] {
  const out: Tok[] = [];
  let i = 0;
  while (i < src.length) {
    const rest = src.slice(i);
    let m: RegExpExecArray | null;
    if ((m = /^\s+/.exec(rest))) {
      i += m[0].length;
    } else if (rest[0] === '#') {
      const nl = rest.indexOf('\n');
      i += nl < 0 ? rest.length : nl;
    } else if (rest[0] === '"' || rest[0] === "'" || rest[0] === '`') {
      const q = rest[0];
      let j = 1;
      let v = '';
      while (j < rest.length && rest[j] !== q) {
        if (rest[j] === '\\' && q !== '`') {
          v += rest[j + 1];
          j += 2;
        } else v += rest[j++];
      }
      if (j >= rest.length) throw new Error('unterminated string');
      out.push({ t: 'str', v });
      i += j + 1;
    } else if (rest[0] === '[') {
      const j = rest.indexOf(']');
      if (j < 0) throw new Error('unterminated [');
      out.push({ t: 'range', v: rest.slice(1, j) });
      i += j + 1;
    } else if ((m = /^\$(\{[^}]+\}|\w+)/.exec(rest))) {
      out.push({ t: 'var', v: m[0] });
      i += m[0].length;
    } else if ((m = /^(\d+(ms|[smhdwy]))+(?![\w.])/.exec(rest))) {
      out.push({ t: 'dur', v: m[0] });
      i += m[0].length;
    } else if ((m = /^(0x[0-9a-f]+|(\d+\.?\d*|\.\d+)(e[+-]?\d+)?)/i.exec(rest))) {
      out.push({ t: 'num', v: m[0] });
      i += m[0].length;
    } else if ((m = /^[a-zA-Z_:][\w:]*/.exec(rest))) {
      out.push({ t: 'ident', v: m[0] });
      i += m[0].length;
    } else if ((m = /^(==|!=|>=|<=|=~|!~|[-+*/%^<>=(){},@])/.exec(rest))) {
      out.push({ t: 'p', v: m[0] });
      i += m[0].length;
    } else throw new Error(`unexpected "${rest.slice(0, 12)}"`);
  }
  return out;
}

interface Matcher {
  label: string;
  op: string;
  value: string;
}
type Node =
  | { k: 'num' }
  | { k: 'str'; v: string }
  | { k: 'sel'; name?: string; matchers: Matcher[] }
  | { k: 'range'; e: Node }
  | { k: 'neg'; e: Node }
  | { k: 'call'; fn: string; args: Node[] }
  | { k: 'agg'; op: string; mode?: 'by' | 'without'; labels: string[]; args: Node[] }
  | { k: 'bin'; op: string; lhs: Node; rhs: Node; on?: { mode: 'on' | 'ignoring'; labels: string[] }; group?: { side: string; labels: string[] } };

const AGGREGATIONS = new Set(['sum', 'min', 'max', 'avg', 'group', 'stddev', 'stdvar', 'count', 'count_values', 'bottomk', 'topk', 'quantile', 'limitk', 'limit_ratio']);
const PRECEDENCE: Record<string, number> = {
  or: 1, and: 2, unless: 2,
  '==': 3, '!=': 3, '<=': 3, '<': 3, '>=': 3, '>': 3,
  '+': 4, '-': 4,
  '*': 5, '/': 5, '%': 5, atan2: 5,
  '^': 6,
};
const SET_OPS = new Set(['and', 'or', 'unless']);
const FUNCTIONS = new Set(
  (
    'abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp clamp_max clamp_min cos cosh ' +
    'count_over_time day_of_month day_of_week day_of_year days_in_month deg delta deriv double_exponential_smoothing exp floor ' +
    'histogram_avg histogram_count histogram_fraction histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters ' +
    'hour idelta increase irate label_join label_replace last_over_time ln log10 log2 mad_over_time max_over_time min_over_time minute ' +
    'month pi predict_linear present_over_time quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_by_label ' +
    'sort_by_label_desc sort_desc sqrt stddev_over_time stdvar_over_time sum_over_time tan tanh time timestamp vector year'
  ).split(' '),
);
const COUNTER_FUNCTIONS = new Set(['rate', 'irate', 'increase', 'resets']);

function parsePromQL(src: string): Node {
  const toks = tokenize(src);
  let pos = 0;
  const peek = (o = 0) => toks[pos + o];
  const isP = (v: string, o = 0) => peek(o)?.t === 'p' && peek(o)!.v === v;
  const isIdent = (v: string) => peek()?.t === 'ident' && peek()!.v.toLowerCase() === v;
  const expect = (v: string) => {
    if (!isP(v)) throw new Error(`expected "${v}" at ${peek() ? `"${peek()!.v}"` : 'the end'}`);
    pos++;
  };
  const labelList = (): string[] => {
    expect('(');
    const out: string[] = [];
    while (!isP(')')) {
      const t = toks[pos++];
      if (t?.t !== 'ident') throw new Error(`expected a label name at ${t ? `"${t.v}"` : 'the end'}`);
      out.push(t.v);
      if (!isP(')')) expect(',');
    }
    expect(')');
    return out;
  };
  const args = (): Node[] => {
    expect('(');
    const out: Node[] = [];
    while (!isP(')')) {
      out.push(expr(1));
      if (!isP(')')) expect(',');
    }
    expect(')');
    return out;
  };
  const matchers = (): Matcher[] => {
    expect('{');
    const out: Matcher[] = [];
    while (!isP('}')) {
      const l = toks[pos++];
      const op = toks[pos++];
      const v = toks[pos++];
      if (l?.t !== 'ident' || op?.t !== 'p' || !['=', '!=', '=~', '!~'].includes(op.v) || v?.t !== 'str') throw new Error('malformed label matcher');
      out.push({ label: l.v, op: op.v, value: v.v });
      if (!isP('}')) expect(',');
    }
    expect('}');
    return out;
  };
  const binop = (): string | undefined => {
    const t = peek();
    if (!t) return undefined;
    if (t.t === 'p' && PRECEDENCE[t.v]) return t.v;
    if (t.t === 'ident' && ['and', 'or', 'unless', 'atan2'].includes(t.v.toLowerCase())) return t.v.toLowerCase();
    return undefined;
  };
  function primary(): Node {
    const t = toks[pos];
    if (!t) throw new Error('unexpected end');
    if (t.t === 'num' || t.t === 'var') return pos++, { k: 'num' };
    if (t.t === 'str') return pos++, { k: 'str', v: t.v };
    if (t.t === 'p' && t.v === '(') {
      pos++;
      const e = expr(1);
      expect(')');
      return e;
    }
    if (t.t === 'p' && t.v === '{') return { k: 'sel', matchers: matchers() };
    if (t.t !== 'ident') throw new Error(`unexpected "${t.v}"`);
    pos++;
    const lower = t.v.toLowerCase();
    if (AGGREGATIONS.has(lower) && (isP('(') || isIdent('by') || isIdent('without'))) {
      let mode: 'by' | 'without' | undefined;
      let labels: string[] = [];
      if (isIdent('by') || isIdent('without')) {
        mode = toks[pos++]!.v.toLowerCase() as 'by' | 'without';
        labels = labelList();
      }
      const a = args();
      if (!mode && (isIdent('by') || isIdent('without'))) {
        mode = toks[pos++]!.v.toLowerCase() as 'by' | 'without';
        labels = labelList();
      }
      return { k: 'agg', op: lower, mode, labels, args: a };
    }
    if (isP('(')) return { k: 'call', fn: t.v, args: args() };
    if (lower === 'inf' || lower === 'nan') return { k: 'num' };
    return { k: 'sel', name: t.v, matchers: isP('{') ? matchers() : [] };
  }
  function postfix(): Node {
    let e = primary();
    for (;;) {
      if (peek()?.t === 'range') {
        pos++;
        e = { k: 'range', e };
      } else if (isIdent('offset')) {
        pos++;
        if (isP('-')) pos++;
        const d = toks[pos++];
        if (d?.t !== 'dur' && d?.t !== 'var') throw new Error('offset needs a duration');
      } else if (isP('@')) {
        pos++;
        if (peek()?.t === 'num') pos++;
        else if (isIdent('start') || isIdent('end')) pos += 3;
        else throw new Error('@ needs a time');
      } else return e;
    }
  }
  function unary(): Node {
    if (isP('-') || isP('+')) {
      pos++;
      return { k: 'neg', e: unary() };
    }
    return postfix();
  }
  function expr(min: number): Node {
    let lhs = unary();
    for (;;) {
      const op = binop();
      if (!op || PRECEDENCE[op]! < min) return lhs;
      pos++;
      if (isIdent('bool')) pos++;
      let on: { mode: 'on' | 'ignoring'; labels: string[] } | undefined;
      let group: { side: string; labels: string[] } | undefined;
      if (isIdent('on') || isIdent('ignoring')) {
        const mode = toks[pos++]!.v.toLowerCase() as 'on' | 'ignoring';
        on = { mode, labels: labelList() };
        if (isIdent('group_left') || isIdent('group_right')) {
          const side = toks[pos++]!.v.toLowerCase();
          group = { side, labels: isP('(') ? labelList() : [] };
        }
      }
      const rhs = expr(op === '^' ? PRECEDENCE[op]! : PRECEDENCE[op]! + 1);
      lhs = { k: 'bin', op, lhs, rhs, on, group };
    }
  }
  const root = expr(1);
  if (pos < toks.length) throw new Error(`unexpected "${toks[pos]!.v}"`);
  return root;
}

type Ty = { k: 'scalar' } | { k: 'string' } | { k: 'vector'; labels: Set<string>; unknown?: boolean };

interface Usage {
  metrics: Set<string>;
  /** label names named anywhere (selectors, by/without/on, label_replace sources) */
  labels: Set<string>;
  /** literal values of enumerable labels, checked against the metric */
  values: Set<string>;
}
const newUsage = (): Usage => ({ metrics: new Set(), labels: new Set(), values: new Set() });

const fmt = (s: Set<string>) => `{${[...s].sort().join(', ')}}`;

/** Checks one expression against the exposition; returns its result type, pushing problems to `problems`. */
function checkExpr(exp: Exposition, src: string, problems: string[], usage: Usage): Ty {
  let root: Node;
  try {
    root = parsePromQL(src);
  } catch (err) {
    problems.push(`does not parse (${(err as Error).message})`);
    return { k: 'vector', labels: new Set(), unknown: true };
  }
  const need = (have: Ty, labels: string[], what: string) => {
    if (have.k !== 'vector' || have.unknown) return;
    for (const l of labels) {
      usage.labels.add(l);
      if (!have.labels.has(l)) problems.push(`${what} names label "${l}", which the series there do not have (they have ${fmt(have.labels)})`);
    }
  };
  const typeOf = (n: Node): Ty => {
    switch (n.k) {
      case 'num':
        return { k: 'scalar' };
      case 'str':
        return { k: 'string' };
      case 'neg':
      case 'range':
        return typeOf(n.e);
      case 'sel': {
        if (!n.name) {
          problems.push('a selector without a metric name');
          return { k: 'vector', labels: new Set(), unknown: true };
        }
        usage.metrics.add(n.name);
        const labels = labelsOf(exp, n.name);
        if (!labels) {
          problems.push(`metric "${n.name}" is not on the gateway's /metrics`);
          return { k: 'vector', labels: new Set(), unknown: true };
        }
        for (const m of n.matchers) {
          usage.labels.add(m.label);
          if (m.label === '__name__') continue;
          if (!labels.has(m.label)) {
            problems.push(`${n.name}{${m.label}${m.op}"${m.value}"}: ${n.name} has no label "${m.label}" (it has ${fmt(labels)})`);
            continue;
          }
          if (FREE_LABELS.has(m.label) || m.value.includes('$')) continue;
          const literal = m.op === '=' || m.op === '!=' ? [m.value] : /^[\w-]+(\|[\w-]+)*$/.test(m.value) ? m.value.split('|') : [];
          for (const v of literal) {
            usage.values.add(v);
            if (!valueKnown(exp, n.name, m.label, v)) problems.push(`${n.name}{${m.label}${m.op}"${m.value}"}: "${v}" is not a value ${m.label} takes`);
          }
        }
        return { k: 'vector', labels };
      }
      case 'call': {
        if (!FUNCTIONS.has(n.fn)) problems.push(`unknown function ${n.fn}()`);
        const a = n.args.map(typeOf);
        if (COUNTER_FUNCTIONS.has(n.fn)) {
          const inner = n.args[0]?.k === 'range' ? n.args[0].e : undefined;
          if (inner?.k === 'sel' && inner.name) {
            const f = familyOf(exp.families, inner.name);
            if (f && f.type !== 'counter' && !SUFFIXES[f.type]) problems.push(`${n.fn}() of ${inner.name}, a ${f.type}, not a counter`);
          }
        }
        const firstVector = a.find((t): t is Extract<Ty, { k: 'vector' }> => t.k === 'vector');
        switch (n.fn) {
          case 'time':
          case 'pi':
          case 'scalar':
            return { k: 'scalar' };
          case 'vector':
            return { k: 'vector', labels: new Set() };
          case 'absent':
          case 'absent_over_time': {
            const sel = n.args[0]?.k === 'range' ? n.args[0].e : n.args[0];
            const eq = sel?.k === 'sel' ? sel.matchers.filter((m) => m.op === '=').map((m) => m.label) : [];
            return { k: 'vector', labels: new Set(eq) };
          }
          case 'histogram_quantile': {
            const v = a[1];
            if (v?.k === 'vector' && !v.unknown) {
              need(v, ['le'], 'histogram_quantile()');
              return { k: 'vector', labels: new Set([...v.labels].filter((l) => l !== 'le')) };
            }
            return v ?? { k: 'vector', labels: new Set(), unknown: true };
          }
          case 'label_replace':
          case 'label_join': {
            const v = a[0];
            const dst = n.args[1]?.k === 'str' ? n.args[1].v : undefined;
            const srcs = (n.fn === 'label_replace' ? n.args.slice(3, 4) : n.args.slice(3)).flatMap((s) => (s.k === 'str' && s.v ? [s.v] : []));
            if (v) need(v, srcs, `${n.fn}()`);
            if (v?.k === 'vector') return { ...v, labels: new Set([...v.labels, ...(dst ? [dst] : [])]) };
            return { k: 'vector', labels: new Set(), unknown: true };
          }
          default:
            return firstVector ?? { k: 'scalar' };
        }
      }
      case 'agg': {
        const a = n.args.map(typeOf);
        const v = a[a.length - 1];
        if (v?.k !== 'vector') {
          problems.push(`${n.op}() of something that is not a vector`);
          return { k: 'vector', labels: new Set(), unknown: true };
        }
        need(v, n.labels, `${n.op} ${n.mode ?? ''} (${n.labels.join(', ')})`);
        const extra = n.op === 'count_values' && n.args[0]?.k === 'str' ? [n.args[0].v] : [];
        if (n.mode === 'by') return { k: 'vector', labels: new Set([...n.labels, ...extra]), unknown: v.unknown };
        if (n.mode === 'without') return { k: 'vector', labels: new Set([...[...v.labels].filter((l) => !n.labels.includes(l)), ...extra]), unknown: v.unknown };
        if (['topk', 'bottomk', 'limitk', 'limit_ratio'].includes(n.op)) return v;
        return { k: 'vector', labels: new Set(extra), unknown: v.unknown };
      }
      case 'bin': {
        const l = typeOf(n.lhs);
        const r = typeOf(n.rhs);
        if (l.k !== 'vector' && r.k !== 'vector') return { k: 'scalar' };
        if (l.k !== 'vector') return r;
        if (r.k !== 'vector') return l;
        const unknown = l.unknown || r.unknown;
        const where = `"${n.op}${n.on ? ` ${n.on.mode}(${n.on.labels.join(', ')})` : ''}"`;
        if (n.on?.mode === 'on') {
          need(l, n.on.labels, `the left side of ${where}`);
          need(r, n.on.labels, `the right side of ${where}`);
        } else if (n.on) {
          for (const x of n.on.labels) {
            usage.labels.add(x);
            if (!unknown && !l.labels.has(x) && !r.labels.has(x)) problems.push(`${where} ignores label "${x}", which neither side has`);
          }
        }
        if (SET_OPS.has(n.op)) {
          return n.op === 'or' ? { k: 'vector', labels: new Set([...l.labels, ...r.labels]), unknown } : { ...l, unknown };
        }
        if (n.group) {
          const [one, many] = n.group.side === 'group_left' ? [r, l] : [l, r];
          need(one, n.group.labels, `${n.group.side}(${n.group.labels.join(', ')})`);
          return { k: 'vector', labels: new Set([...many.labels, ...n.group.labels]), unknown };
        }
        if (n.on?.mode === 'on') return { k: 'vector', labels: new Set(n.on.labels), unknown };
        const drop = new Set(n.on?.labels ?? []);
        const ls = new Set([...l.labels].filter((x) => !drop.has(x)));
        const rs = new Set([...r.labels].filter((x) => !drop.has(x)));
        if (!unknown && fmt(ls) !== fmt(rs)) {
          problems.push(`the two sides of ${where} have different labels (${fmt(ls)} and ${fmt(rs)}), so no series match: aggregate both alike or use on(...)`);
        }
        return { k: 'vector', labels: ls, unknown };
      }
    }
  };
  return typeOf(root);
}

// ---------------------------------------------------------------------------------------------------
// The two files' checks
// ---------------------------------------------------------------------------------------------------

const DS_UID = '${DS_PROMETHEUS}';
const DURATION = /^(\d+(ms|[smhdwy]))+$/;
const RULE_KEYS = new Set(['alert', 'expr', 'for', 'keep_firing_for', 'labels', 'annotations']);

interface Panel {
  id?: number;
  type?: string;
  title?: string;
  gridPos?: { x: number; y: number; w: number; h: number };
  datasource?: { type?: string; uid?: string };
  targets?: Array<{ refId?: string; expr?: string; legendFormat?: string; datasource?: { uid?: string } }>;
  panels?: Panel[];
}

function checkDashboard(exp: Exposition, dash: any, usage: Usage = newUsage()): string[] {
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

function checkAlerts(exp: Exposition, doc: any, usage: Usage = newUsage()): string[] {
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

// ---------------------------------------------------------------------------------------------------
// A gateway with every kind of series in it
// ---------------------------------------------------------------------------------------------------

let sim: Awaited<ReturnType<typeof startSimulator>>;
let upstream: Upstream;
let gw: TestGateway;
let exp: Exposition;

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
  upstream = await startUpstream();
  const closedPort = await freePort();
  gw = await startTestGateway(
    testConfig({
      apiBase: sim.url,
      routes: [
        { name: 'api', path: '/api', upstream: upstream.url },
        { name: 'gone', path: '/gone', upstream: `http://127.0.0.1:${closedPort}`, auth: 'none' },
      ],
      // a small login budget, so that the 4th login below is rate limited
      limits: { login: { perIp: 3, window: '1m' } },
      metrics: { port: 0 },
    }),
    { logLevel: 'warn' },
  );
  const post = (path: string, body: object, headers: Record<string, string> = {}) =>
    request(gw.url, { method: 'POST', path, headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });

  // a login, and the same code again (answered from the store: wxgate_login_code_replays_total)
  const token = await login(gw.url, 'obs-alice.1');
  if ((await post('/login', { code: 'obs-alice.1' })).status !== 200) throw new Error('repeated code not answered');
  // a proxied request to a real upstream, and one to an upstream that refuses (wxgate_upstream_errors_total)
  const proxied = await request(gw.url, { path: '/api/hello', headers: { authorization: `Bearer ${token}` } });
  if (proxied.status !== 200 || upstream.seen.length !== 1) throw new Error(`proxied request: ${proxied.status}`);
  if ((await request(gw.url, { path: '/gone/x' })).status !== 502) throw new Error('refused upstream not 502');
  // a phone number: an access_token fetch (wxgate_wechat_token_refreshes_total, _token_age_seconds)
  if ((await post('/wx/phone', { code: 'phone-13800138000' }, { authorization: `Bearer ${token}` })).status !== 200) throw new Error('phone failed');
  // a failed login, then one over the budget (wxgate_rate_limited_total)
  if ((await post('/login', { code: 'fail-40029' })).status !== 401) throw new Error('failed login not 401');
  if ((await post('/login', { code: 'obs-bob.1' })).status !== 429) throw new Error('4th login not rate limited');

  if (!gw.metricsUrl) throw new Error('no metrics listener');
  const registry = gw.metrics.registry;
  exp = parseExposition(await scrape(gw.metricsUrl), (name) => [...((registry.getSingleMetric(name) as unknown as { labelNames?: string[] })?.labelNames ?? [])]);
  // values not (all) seen above nor listed in the HELP text: the login results are the error codes, the
  // WeChat apis those the client calls
  const apis = ['client.ts', 'web-apis.ts'].flatMap((f) => [...readFileSync(join(ROOT, 'src/wechat', f), 'utf8').matchAll(/this\.(?:call|transport\.exchange)\(\s*'(\w+)'/g)].map((m) => m[1]!));
  const exact = (vs: string[]) => vs.map((v) => new RegExp(`^${v}$`));
  exp.knownValues.set('wxgate_logins_total', new Map([['result', exact(['ok', ...Object.keys(ERRORS)])]]));
  exp.knownValues.set('wxgate_wechat_requests_total', new Map([['api', exact(apis)]]));
  exp.knownValues.set('wxgate_wechat_request_duration_seconds', new Map([['api', exact(apis)]]));
});

test.after.always(async () => {
  await gw?.close();
  await upstream?.close();
  await sim?.close();
});

const dashboardText = () => readFileSync(DASHBOARD_FILE, 'utf8');
const alertsText = () => readFileSync(ALERTS_FILE, 'utf8');

/** The metrics, labels and values the two files name, and the problems found in them. */
function checkFiles(dashboard = dashboardText(), alerts = alertsText()) {
  const dashUsage = newUsage();
  const alertUsage = newUsage();
  let dashProblems: string[];
  let alertProblems: string[];
  try {
    dashProblems = checkDashboard(exp, JSON.parse(dashboard), dashUsage);
  } catch (err) {
    dashProblems = [`not JSON: ${(err as Error).message}`];
  }
  try {
    alertProblems = checkAlerts(exp, parseYaml(alerts), alertUsage);
  } catch (err) {
    alertProblems = [`not YAML: ${(err as Error).message}`];
  }
  return { dashProblems, alertProblems, dashUsage, alertUsage };
}

test('the series the checks rely on are on /metrics', (t) => {
  // the exercise above must have made these series; if one goes missing the label checks get weaker
  for (const [family, label] of [
    ['wxgate_http_requests_total', 'status'],
    ['wxgate_logins_total', 'result'],
    ['wxgate_login_code_replays_total', 'source'],
    ['wxgate_wechat_requests_total', 'outcome'],
    ['wxgate_session_lookups_total', 'source'],
    ['wxgate_wechat_token_refreshes_total', 'outcome'],
    ['wxgate_wechat_token_age_seconds', 'appid'],
    ['wxgate_rate_limited_total', 'endpoint'],
    ['wxgate_upstream_errors_total', 'kind'],
    ['wxgate_session_cache_entries', 'cache'],
  ] as const) {
    const f = exp.families.get(family);
    t.truthy(f, family);
    t.true([...(f?.samples.values() ?? [])].some((l) => l.has(label)), `${family} has a series with ${label}`);
  }
});

test('the Grafana dashboard names only metrics, labels and values the gateway has', (t) => {
  const { dashProblems, dashUsage } = checkFiles();
  t.deepEqual(dashProblems, []);
  const dash = JSON.parse(dashboardText());
  t.is(dash.schemaVersion, 39);
  t.true(dashUsage.metrics.size > 0);
  // every metric the gateway itself defines is on the dashboard, and the process's RSS, CPU and event loop
  const own = createMetrics({ defaultMetrics: false }).registry.getMetricsAsArray().map((m) => m.name);
  const shown = new Set([...dashUsage.metrics].map((m) => familyName(exp, m)));
  for (const name of [...own, 'wxgate_process_resident_memory_bytes', 'wxgate_process_cpu_seconds_total', 'wxgate_nodejs_eventloop_lag_p99_seconds']) {
    t.true(shown.has(name), `${name} is on the dashboard`);
  }
  const noSamples = [...shown].filter((n) => n && exp.families.get(n)?.samples.size === 0);
  if (noSamples.length) t.log(`no series yet (labels checked against the registry's declaration): ${noSamples.join(', ')}`);
});

test('the alert rules name only metrics, labels and values the gateway has, each with for, severity and annotations', (t) => {
  const { alertProblems, alertUsage } = checkFiles();
  t.deepEqual(alertProblems, []);
  const families = new Set([...alertUsage.metrics].map((m) => familyName(exp, m)));
  // what issue 8 asks the rules to watch
  for (const [what, family] of [
    ['login error rate', 'wxgate_logins_total'],
    ['WeChat latency', 'wxgate_wechat_request_duration_seconds'],
    ['WeChat unavailable', 'wxgate_wechat_requests_total'],
    ['Redis down', 'wxgate_session_store_up'],
    ['upstream errors', 'wxgate_upstream_errors_total'],
    ['upstream 5xx', 'wxgate_http_requests_total'],
    ['rate limiting', 'wxgate_rate_limited_total'],
    ['access_token refresh', 'wxgate_wechat_token_refreshes_total'],
    ['access_token age', 'wxgate_wechat_token_age_seconds'],
    ['gateway down', 'up'],
  ]) {
    t.true(families.has(family), `an alert on ${what} (${family})`);
  }
  const rules = (parseYaml(alertsText()) as { groups: Array<{ rules: Array<{ expr: string }> }> }).groups.flatMap((g) => g.rules);
  t.true(rules.some((r) => /^\s*absent\(\s*up\{/.test(r.expr)), 'an absent(up{...}) rule');
  t.true(rules.some((r) => /^\s*up\{[^}]*\}\s*==\s*0\s*$/.test(r.expr)), 'an up == 0 rule');
});

/** Replaces whole-word occurrences (not inside longer names). */
const replaceWord = (text: string, word: string, by: string) =>
  text.replace(new RegExp(`(?<![\\w:$])${word.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?![\\w:])`, 'g'), by);

test('a typo in any metric name, label name or label value of either file fails the check', (t) => {
  const { dashUsage, alertUsage } = checkFiles();
  const files = [
    { file: 'dashboard', text: dashboardText(), usage: dashUsage, problems: (x: string) => checkFiles(x, alertsText()).dashProblems },
    { file: 'alerts', text: alertsText(), usage: alertUsage, problems: (x: string) => checkFiles(dashboardText(), x).alertProblems },
  ];
  let tried = 0;
  for (const { file, text, usage, problems } of files) {
    const typos: Array<[string, string]> = [
      // wxgate_http_requests_total → wxgate_hhttp_requests_total, up → uup
      ...[...usage.metrics].map((m): [string, string] => [m, m.replace(/^(wxgate_)?(\w)/, '$1$2$2')]),
      ...[...usage.labels].filter((l) => !TARGET_LABELS.includes(l)).map((l): [string, string] => [l, `${l}x`]),
      ...[...usage.values].map((v): [string, string] => [v, `${v}x`]),
    ];
    for (const [word, typo] of typos) {
      const mutated = replaceWord(text, word, typo);
      if (mutated === text) continue;
      tried++;
      t.not(problems(mutated).length, 0, `${file}: "${word}" misspelt as "${typo}" is caught`);
    }
  }
  t.true(tried > 40, `${tried} typos tried`);
  t.log(`${tried} typos tried, each caught`);

  // and the structural checks
  const dash = JSON.parse(dashboardText());
  const panel = dash.panels.find((p: Panel) => p.type !== 'row');
  panel.targets = [];
  t.true(checkDashboard(exp, dash).some((p) => p.includes('no targets')));
  const doc = parseYaml(alertsText());
  const rule = doc.groups[0].rules[0];
  delete rule.for;
  delete rule.labels.severity;
  delete rule.annotations.summary;
  const found = checkAlerts(exp, doc);
  for (const want of ['no "for"', 'severity', 'annotations.summary']) t.true(found.some((p) => p.includes(want)), want);
  // two sides with different labels match nothing
  const mismatch: string[] = [];
  checkExpr(exp, 'sum by (route) (rate(wxgate_http_requests_total[5m])) / sum by (api) (rate(wxgate_wechat_requests_total[5m]))', mismatch, newUsage());
  t.true(mismatch.some((p) => p.includes('different labels')));
  const gauge: string[] = [];
  checkExpr(exp, 'rate(wxgate_session_store_up[5m])', gauge, newUsage());
  t.true(gauge.some((p) => p.includes('not a counter')));
});

// ---------------------------------------------------------------------------------------------------
// Deployment files: read, since images cannot be built here
// ---------------------------------------------------------------------------------------------------

test('the Dockerfile builds in stages and runs as non-root with a node healthcheck', (t) => {
  const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
  const lines = text.split('\n').filter((l) => !/^\s*#/.test(l));
  const stages = text.split(/^FROM /m).slice(1);
  t.true(stages.length >= 2, 'multi-stage');
  const final = `FROM ${stages[stages.length - 1]}`;
  t.regex(text, /RUN npm ci\b/);
  t.regex(text, /RUN npm run build/);
  t.regex(final, /npm ci --omit=dev|COPY --from=\w+ \/app\/node_modules/, 'production dependencies only in the final stage');
  t.notRegex(final, /RUN npm ci(?![^\n]*--omit=dev)/);
  const user = /^USER\s+(\S+)/m.exec(final)?.[1];
  t.truthy(user, 'USER in the final stage');
  t.false(['root', '0', '0:0'].includes(user!), 'not root');
  t.regex(final, /^EXPOSE\s+8080/m);
  t.regex(final, /^HEALTHCHECK[\s\S]*?CMD \["node",[\s\S]*\/healthz/m);
  t.regex(final, /^CMD \["node", ?"dist\/cli\.js", ?"--config", ?"\/etc\/wxgate\/gateway\.yaml"\]$/m);
  t.false(lines.some((l) => /^ENTRYPOINT/.test(l)), 'no ENTRYPOINT in front of CMD');
});

test('docker-compose.yml: two read-only replicas on one Redis behind nginx, with a valid gateway config', (t) => {
  const compose = parseYaml(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true });
  const services = compose.services as Record<string, any>;
  t.truthy(services.redis, 'a redis service');
  const replicas = Object.entries(services).filter(([, s]) => (s.volumes ?? []).some((v: string) => String(v).includes('/etc/wxgate/gateway.yaml')));
  t.is(replicas.length, 2, 'two wxgate replicas');
  for (const [name, s] of replicas) {
    t.true(s.read_only, `${name} read_only`);
    t.true((s.tmpfs ?? []).some((x: string) => String(x).split(':')[0] === '/tmp'), `${name} tmpfs /tmp`);
    t.true(s.volumes.includes('./config/compose.gateway.yaml:/etc/wxgate/gateway.yaml:ro'), `${name} mounts the config read-only`);
    t.truthy(s.environment?.WX_SECRET, `${name} gets its secret from the environment`);
  }
  const lb = Object.entries(services).find(([, s]) => String(s.image ?? '').startsWith('nginx'));
  t.truthy(lb, 'an nginx load balancer');
  const nginxConf = JSON.stringify(compose.configs ?? {}) + JSON.stringify(lb?.[1] ?? {});
  for (const [name] of replicas) t.regex(nginxConf, new RegExp(`server ${name}:8080`), `nginx sends to ${name}`);

  // config/compose.gateway.yaml is a valid configuration: redis at the compose service, simulator, metrics port
  const raw = parseYaml(readFileSync(join(ROOT, 'config/compose.gateway.yaml'), 'utf8'));
  const config = buildConfig(raw, 'config/compose.gateway.yaml', { WX_SECRET: 'x', REDIS_PASSWORD: 'y' });
  t.is(config.session.store, 'redis');
  t.regex(config.session.redis.url, /@redis:6379$/);
  t.true(config.dev.simulator);
  t.true(config.routes.length > 0);
  t.is(typeof config.metrics.port, 'number');
  t.not(config.metrics.port, config.server.port);
});

test("an alert fires when WeChat's daily API quota is used up (45009), as critical", (t) => {
  const rules = (parseYaml(alertsText()).groups as Array<{ rules: Array<{ alert: string; expr: string; labels: { severity: string } }> }>).flatMap((g) => g.rules);
  const quota = rules.filter((r) => /errcode_45009|wechat_quota_exceeded/.test(r.expr) && !/\/ sum/.test(r.expr));
  t.is(quota.length, 1, 'one rule on 45009 alone');
  t.is(quota[0]?.labels.severity, 'critical');
});

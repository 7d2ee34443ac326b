import { familyOf, labelsOf, SUFFIXES, valueKnown, type Exposition } from './exposition.js';
import { parsePromQL, type Node } from './promql.js';

/**
 * A PromQL expression checked against a gateway's exposition: the metrics, labels and (enumerable)
 * label values it names must exist, and the labels of each result are worked out, so that a
 * `by (...)`, an `on (...)`, a legend `{{label}}` or an annotation `$labels.x` naming a label the
 * series do not have is caught, as are two sides of an operator that can never match.
 */

/** Labels whose values are open sets (config, traffic, versions): their values are not checked. */
const FREE_LABELS = new Set(['job', 'instance', 'route', 'target', 'status', 'method', 'appid', 'le', 'quantile', 'version', 'major', 'minor', 'patch']);
const SET_OPS = new Set(['and', 'or', 'unless']);
const COUNTER_FUNCTIONS = new Set(['rate', 'irate', 'increase', 'resets']);

export type Ty = { k: 'scalar' } | { k: 'string' } | { k: 'vector'; labels: Set<string>; unknown?: boolean };

export interface Usage {
  metrics: Set<string>;
  /** label names named anywhere (selectors, by/without/on, label_replace sources) */
  labels: Set<string>;
  /** literal values of enumerable labels, checked against the metric */
  values: Set<string>;
}
export const newUsage = (): Usage => ({ metrics: new Set(), labels: new Set(), values: new Set() });

export const fmt = (s: Set<string>) => `{${[...s].sort().join(', ')}}`;

/** Checks one expression against the exposition; returns its result type, pushing problems to `problems`. */
export function checkExpr(exp: Exposition, src: string, problems: string[], usage: Usage): Ty {
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

import type { Registry } from 'prom-client';

/**
 * What a gateway's /metrics has, family by family: the series' label names and values, read from the
 * prom-client registry that /metrics serializes (its own structured output, not a text parser), for
 * the checks of the dashboard and the alert rules.
 */

export interface Family {
  type: string;
  help: string;
  /** sample name (family name, or with _bucket/_sum/_count) → label → values seen */
  samples: Map<string, Map<string, Set<string>>>;
  /** label names declared on the metric, for families with no sample yet */
  declared: string[];
}

export interface Exposition {
  families: Map<string, Family>;
  /** family → label → values the gateway may give it besides those seen (from its HELP text and sources) */
  knownValues: Map<string, Map<string, RegExp[]>>;
}

/** Labels Prometheus adds to every scraped series (target labels), not in /metrics itself. */
export const TARGET_LABELS = ['job', 'instance'];
/** Series Prometheus makes up itself for each target. */
const SYNTHETIC: Record<string, string[]> = { up: [] };
export const SUFFIXES: Record<string, string[]> = { histogram: ['_bucket', '_sum', '_count'], summary: ['_sum', '_count'] };

export async function readExposition(registry: Registry): Promise<Exposition> {
  const families = new Map<string, Family>();
  for (const m of await registry.getMetricsAsJSON()) {
    const declared = [...((registry.getSingleMetric(m.name) as unknown as { labelNames?: string[] })?.labelNames ?? [])];
    const f: Family = { type: String(m.type), help: m.help, samples: new Map(), declared };
    for (const v of m.values) {
      const sample = (v as { metricName?: string }).metricName ?? m.name;
      const labels = f.samples.get(sample) ?? new Map<string, Set<string>>();
      f.samples.set(sample, labels);
      for (const [k, value] of Object.entries(v.labels)) {
        if (!labels.has(k)) labels.set(k, new Set());
        labels.get(k)!.add(String(value));
      }
    }
    families.set(m.name, f);
  }
  return { families, knownValues: new Map() };
}

/** The family a sample name belongs to: itself (counter, gauge), or a histogram's/summary's with its suffix. */
export function familyOf(families: Map<string, Family>, sample: string): Family | undefined {
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

export function familyName(exp: Exposition, sample: string): string | undefined {
  for (const [name, f] of exp.families) if (familyOf(new Map([[name, f]]), sample)) return name;
  return SYNTHETIC[sample] ? sample : undefined;
}

/** The label names a series of this sample name has (target labels included), or undefined if there is no such series. */
export function labelsOf(exp: Exposition, sample: string): Set<string> | undefined {
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
export function valueKnown(exp: Exposition, sample: string, label: string, value: string): boolean {
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

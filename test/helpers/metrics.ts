import { request } from './http.js';

/**
 * The value of one series in Prometheus text, or 0 when the series is absent. `labels` must name
 * every label of the series (in any order).
 */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  const want = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .sort()
    .join(',');
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = (m[2] ?? '').split(/,(?=[a-zA-Z_]\w*=")/).filter(Boolean).sort().join(',');
    if (have === want) return Number(m[3]);
  }
  return 0;
}

/** Scrapes `/metrics` of a gateway (or its metrics listener). */
export async function scrape(base: string, path = '/metrics'): Promise<string> {
  const res = await request(base, { path });
  if (res.status !== 200) throw new Error(`${base}${path} answered ${res.status}`);
  return res.text;
}

import type { Registry } from 'prom-client';
import { buildConfig, parseYaml } from './config/load.js';
import type { Config } from './config/schema.js';

/** What the primary (cluster.ts) and its workers (cluster-worker.ts) say to each other. */

/** One registry's metrics as JSON (what AggregatorRegistry.aggregate takes). */
export type MetricJSON = Awaited<ReturnType<Registry['getMetricsAsJSON']>>[number];

/** Messages between the primary and its workers (process.send / worker.send). */
export type Message =
  | { type: 'wxgate:ready'; url: string; adminUrl?: string }
  | { type: 'wxgate:config-req' }
  | { type: 'wxgate:config'; text: string }
  | { type: 'wxgate:reload'; text: string }
  | { type: 'wxgate:metrics-json'; id: number }
  | { type: 'wxgate:metrics-json-res'; id: number; metrics: MetricJSON[] }
  | { type: 'wxgate:metrics'; id: number }
  | { type: 'wxgate:metrics-res'; id: number; text?: string; error?: string };

export const isMessage = (m: unknown): m is Message => !!m && typeof m === 'object' && typeof (m as { type?: unknown }).type === 'string' && (m as { type: string }).type.startsWith('wxgate:');

/** How long the primary waits for each worker's metrics. */
export const METRICS_TIMEOUT_MS = 3000;

/** A configuration file's text as the primary sent it, parsed and checked here (with this process's environment). */
export const configFromText = (text: string, file: string): Config => buildConfig(parseYaml(text, file), file);

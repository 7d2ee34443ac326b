import type { Metrics } from '../../metrics/metrics.js';
import { counterSeries, histogramSeries } from '../../metrics/series.js';
import type { Identity } from '../../session/types.js';
import { accessLogger } from '../../base/access-log.js';
import type { Config } from '../../config/schema.js';
import type { Logger } from '../../base/logger.js';

/**
 * How a finished request is recorded, the same for own endpoints, proxied requests and WebSocket
 * upgrades: wxgate_http_requests_total / _duration_seconds by route, method and status, and the access
 * log line (log.access).
 */

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/** Records a finished request; returns its duration in seconds. */
export type Record = (route: string, method: string, status: number, start: bigint) => number;

/**
 * Records a finished request: by route, method and status, and its duration. The labelled series are
 * looked up once per label set (all of them bounded) and added to directly (metrics/series.ts) instead
 * of prom-client hashing the labels per request.
 */
export function recorder(metrics: Metrics): Record {
  const counters = new Map<string, { inc(): void }>();
  const timers = new Map<string, { observe(seconds: number): void }>();
  return function record(route, method, status, start) {
    const m = METHODS.has(method) ? method : 'OTHER';
    const rm = `${route} ${m}`;
    const key = `${rm} ${status}`;
    let counter = counters.get(key);
    if (!counter) counters.set(key, (counter = counterSeries(metrics.requests, { route, method: m, status: String(status) })));
    let timer = timers.get(rm);
    if (!timer) timers.set(rm, (timer = histogramSeries(metrics.requestDuration, { route, method: m })));
    counter.inc();
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    timer.observe(seconds);
    return seconds;
  };
}

/** What a finished admitted (or refused) request is recorded with. */
export interface Finished {
  readonly id: string;
  readonly routeName: string;
  readonly start: bigint;
  readonly req: { method?: string; url?: string };
}

/** Records a finished proxied request or upgrade: metrics, then the access log line. */
export type Finish = (f: Finished, status: number, upstream?: string, who?: Identity) => void;

export function finisher(config: Config, metrics: Metrics, log: Logger): Finish {
  const record = recorder(metrics);
  const access = accessLogger(config, log);
  return function finish(f, status, upstream, who) {
    const method = f.req.method ?? 'OTHER';
    const seconds = record(f.routeName, method, status, f.start);
    access?.({ id: f.id, route: f.routeName, method, url: f.req.url ?? '', status, seconds, upstream, who });
  };
}

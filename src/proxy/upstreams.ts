import type { UpstreamPool } from './upstream-client.js';
import type { RouteConfig } from '../config/schema.js';

/** One upstream target of a route. */
export interface Target {
  /** as configured, without a trailing "/" */
  readonly url: string;
  /** scheme://host:port, what the connection pool is for */
  readonly origin: string;
  /** host:port, the metric label */
  readonly label: string;
  readonly hostname: string;
  readonly port: number;
  readonly secure: boolean;
  /** until when (ms since epoch) the target is skipped after a failed connection; 0 = takes requests */
  downUntil: number;
  /** the proxy's pool for `origin`, once asked for */
  pool?: UpstreamPool;
}

function target(url: string): Target {
  const u = new URL(url);
  const secure = u.protocol === 'https:';
  const port = u.port ? Number(u.port) : secure ? 443 : 80;
  // URL keeps IPv6 hosts in brackets, as a host:port label wants them
  return { url, origin: u.origin, label: `${u.hostname}:${port}`, hostname: u.hostname.replace(/^\[|\]$/g, ''), port, secure, downUntil: 0 };
}

/**
 * What the proxy (and the WebSocket upgrade) needs of a route, made once per route (and config): its
 * targets taken in turn (round-robin) with passive health, the extra headers (lower-case names) and
 * how many leading path segments to strip.
 *
 * Passive health as nginx's fail_timeout: a target whose connection fails is skipped for
 * routes[].failTimeout; when every target is skipped, they are taken in turn anyway. A one-target route
 * is never skipped over (there is nothing else to take) and costs nothing: `single` is its target.
 */
export class RouteTargets {
  readonly name: string;
  readonly targets: readonly Target[];
  /** the target of a one-target route, else undefined */
  readonly single: Target | undefined;
  /** routes[].headers as [lower-case name, value] pairs; undefined when none */
  readonly headers: ReadonlyArray<readonly [string, string]> | undefined;
  /** routes[].stripPrefix: the number of leading segments to drop (the prefix's); 0 = none */
  readonly strip: number;
  private readonly failTimeout: number;
  private turn = 0;

  constructor(
    route: RouteConfig,
    /** the metrics' map of targets ("route\ntarget" → up), filled for wxgate_upstream_target_up */
    register?: Map<string, () => boolean>,
    private readonly now: () => number = Date.now,
  ) {
    this.name = route.name;
    const urls = route.upstreams ?? [route.upstream];
    this.targets = urls.map(target);
    this.single = this.targets.length === 1 ? this.targets[0] : undefined;
    this.failTimeout = route.failTimeout ?? 10_000;
    const headers = route.headers ? Object.entries(route.headers).map(([k, v]) => [k.toLowerCase(), v] as const) : [];
    this.headers = headers.length ? headers : undefined;
    this.strip = route.stripPrefix && route.path !== '/' ? route.path.split('/').length - 1 : 0;
    for (const t of this.targets) register?.set(`${this.name}\n${t.label}`, () => !(t.downUntil > this.now()));
  }

  /**
   * The next target in turn that is not skipped; when all are, the next in turn anyway. With `except`
   * (the target that just refused a connection): another one, or undefined when there is no other.
   */
  pick(except?: Target): Target | undefined {
    const list = this.targets;
    const n = list.length;
    if (n === 1) return except ? undefined : list[0];
    const now = this.now();
    const start = this.turn;
    for (let i = 0; i < n; i++) {
      const idx = (start + i) % n;
      const t = list[idx]!;
      if (t !== except && !(t.downUntil > now)) {
        this.turn = (idx + 1) % n;
        return t;
      }
    }
    this.turn = (start + 1) % n;
    const t = list[start]!;
    return t === except ? list[(start + 1) % n] : t;
  }

  /** A connection to `t` failed: skip it for failTimeout. True when it was taking requests until now (log it then). */
  failed(t: Target): boolean {
    if (this.failTimeout <= 0) return false;
    const now = this.now();
    const wasUp = !(t.downUntil > now);
    t.downUntil = now + this.failTimeout;
    return wasUp;
  }

  /** `t` answered: it takes requests again (it may have been tried while skipped). */
  answered(t: Target): void {
    if (t.downUntil !== 0) t.downUntil = 0;
  }

  /** The request target the upstream gets: with stripPrefix, without the prefix's segments. */
  pathFor(url: string): string {
    return this.strip ? stripSegments(url, this.strip) : url;
  }
}

/**
 * Drops the first `n` segments of a request target's path, keeping the query: ("/api/v1/x?q", 2) →
 * "/x?q"; the bare prefix becomes "/". Counted on the raw target, which checkPath let through only
 * without encoded slashes, so its segments are the matched path's whatever else is percent-encoded.
 */
export function stripSegments(url: string, n: number): string {
  const q = url.indexOf('?');
  const end = q < 0 ? url.length : q;
  let pos = 0;
  for (let k = 0; k < n; k++) {
    const next = url.indexOf('/', pos + 1);
    if (next < 0 || next >= end) {
      pos = end;
      break;
    }
    pos = next;
  }
  const rest = url.slice(pos, end);
  return (rest || '/') + url.slice(end);
}

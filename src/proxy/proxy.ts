import type { IncomingMessage, ServerResponse } from 'node:http';
import type { RouteConfig } from '../config/schema.js';
import type { Metrics } from '../metrics/metrics.js';
import { GatewayError } from '../base/errors.js';
import { writeErrorAnswer } from '../base/error-answer.js';
import { responseHeaders } from './headers.js';
import type { Route } from './routes.js';
import { classify, failureAnswer, type UpstreamFailure } from './upstream-failure.js';
import { RouteTargets, type Target } from './upstreams.js';
import { UpstreamPool, type UpstreamHandler, type UpstreamRequest } from './upstream-client.js';

interface Logger {
  warn(obj: object, msg: string): void;
}

/** A reason phrase node can write back (RFC 9112: HTAB, SP, VCHAR, obs-text); others are dropped. */
const REASON = /^[\t\x20-\x7e\x80-\xff]*$/;

/** Methods safe to send again when no body was sent (nothing of it was consumed). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'DELETE']);

function hasBody(req: IncomingMessage): boolean {
  const len = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (len !== undefined && len !== '0');
}

/**
 * The reverse proxy: one pool of kept-alive connections per upstream origin (./upstream-client.ts: node's
 * own parser under a small HTTP/1.1 client, cheaper per request than undici's Pool, which cost about a
 * quarter less than node's http client under http-proxy; BENCHMARKS.md has both A/Bs).
 * Errors become 502/504 JSON; a client that goes away takes its upstream request with it; a request
 * without a body whose connection closed before any answer is sent once more.
 */
export class Proxy {
  private readonly pools = new Map<string, UpstreamPool>();
  /** per route (and config: keyed by the route's upstreams list, which every copy of the route shares) */
  private readonly routeTargets = new WeakMap<readonly string[], RouteTargets>();

  constructor(
    private readonly metrics: Metrics,
    private readonly log: Logger,
    /** the gateway's cookie names: an upstream's Set-Cookie for them is dropped */
    readonly ownCookies?: ReadonlySet<string>,
  ) {}

  private poolFor(upstream: string): UpstreamPool {
    let pool = this.pools.get(upstream);
    if (!pool) {
      pool = new UpstreamPool(upstream, { connections: 512, keepAliveTimeout: 4_000 });
      this.pools.set(upstream, pool);
    }
    return pool;
  }

  /** The route's targets, their health, headers and path rewriting; made on first use. */
  targets(route: RouteConfig): RouteTargets {
    let t = this.routeTargets.get(route.upstreams);
    if (!t) {
      t = new RouteTargets(route, this.metrics.upstreamTargets);
      this.routeTargets.set(route.upstreams, t);
    }
    return t;
  }

  /**
   * Makes the routes' targets now, so that wxgate_upstream_target_up lists them before any request;
   * with the routes of a new config, the series of targets no longer configured go.
   */
  prepare(routes: ReadonlyArray<RouteConfig>): void {
    const keys = new Set<string>();
    for (const r of routes) for (const t of this.targets(r).targets) keys.add(`${r.name}\n${t.label}`);
    for (const key of this.metrics.upstreamTargets.keys()) if (!keys.has(key)) this.metrics.upstreamTargets.delete(key);
  }

  /** A connection to `target` failed (refused, connect timeout, reset before an answer): skip it for failTimeout. */
  targetFailed(targets: RouteTargets, target: Target, kind: string): void {
    if (targets.failed(target) && targets.targets.length > 1) {
      this.log.warn({ route: targets.name, target: target.label, kind }, 'upstream target failed; skipped for routes[].failTimeout');
    }
  }

  /**
   * Hands the request to the upstream; `done` is called once the response is over (finished or aborted),
   * with the URL of the target that answered (or was tried last).
   * Headers must already be prepared on req.headers (hop-by-hop dropped, identity set).
   */
  forward(req: IncomingMessage, res: ServerResponse, route: Route, clientWantsClose: boolean, done: (target: string) => void): void {
    const targets = this.targets(route);
    const exchange = new Exchange(this, route, targets, req, res, clientWantsClose);
    // `on`, not `once`: a response closes once, and once() costs a wrapper and a bound function per request
    res.on('close', () => {
      if (!res.writableFinished) {
        exchange.clientGone = true;
        exchange.abort?.();
      }
      done(exchange.target.url);
    });
    const headers = req.headers;
    // the upstream client frames the body itself and names the upstream's host; the client's Host is in
    // X-Forwarded-Host (undefined, not deleted: requestHead skips it, and the object stays in fast mode)
    headers.host = undefined;
    if (headers['transfer-encoding'] !== undefined) headers['transfer-encoding'] = undefined;
    // routes[].headers, after the client's were stripped: they replace a client header of the same name
    if (targets.headers) for (const [name, value] of targets.headers) headers[name] = value;
    exchange.send();
  }

  /** Counts and logs a failed upstream request once; answers 502/504 JSON, or cuts a response already begun. */
  fail(exchange: Exchange, kind: UpstreamFailure, reason: string, errno?: string): void {
    exchange.failed = true;
    exchange.abort?.();
    const { res } = exchange;
    const route = exchange.route.name;
    this.metrics.upstreamErrors.inc({ route, kind });
    // "errno", not "code": the logger redacts any field named code (login codes)
    this.log.warn({ route, target: exchange.target.label, kind, errno, err: reason }, 'upstream request failed');
    writeErrorAnswer(res, new GatewayError(failureAnswer(kind)), exchange.method === 'HEAD');
  }

  /** A request sent once more (on a new connection, or to the next target) is counted. */
  retried(route: Route): void {
    this.metrics.upstreamRetries.inc({ route: route.name });
  }

  /** The pool of a target's origin, made on first use. */
  poolOf(target: Target): UpstreamPool {
    return (target.pool ??= this.poolFor(target.origin));
  }

  close(): Promise<void> {
    const pools = [...this.pools.values()];
    this.pools.clear();
    return Promise.all(pools.map((p) => p.destroy())).then(() => undefined);
  }
}

/**
 * One proxied request: what is sent upstream (path, method, headers, body, timeouts: the object is the
 * client's request) and the handler of the answer (onConnect … onError, called as methods).
 *
 * One object per request where there were nine (a state literal, the options, the handler and six
 * closures): less to allocate and to collect on the hot path (-8% CPU per warm request in an A/B run;
 * BENCHMARKS.md).
 */
class Exchange implements UpstreamRequest, UpstreamHandler {
  /** the target the request is (being) sent to */
  target: Target;
  /** the request target the upstream gets (routes[].stripPrefix applied) */
  readonly path: string;
  readonly method: string;
  readonly headers: Record<string, string>;
  readonly body: IncomingMessage | null;
  readonly headersTimeout: number;
  readonly bodyTimeout: number;
  /** the client sent a body (Content-Length above 0, or chunked) */
  readonly withBody: boolean;
  /** the client's abort for the request in flight */
  abort: (() => void) | undefined = undefined;
  /** the client's resume, for the response body after the client's socket drained */
  private resumeUpstream: (() => void) | undefined = undefined;
  private onDrain: (() => void) | undefined = undefined;
  clientGone = false;
  /** the upstream's status line and headers were passed on */
  answered = false;
  /** sent a second time after its connection was closed before any answer */
  retried = false;
  /** sent to another target after its connection was refused */
  failedOver = false;
  /** the failure was answered and counted already */
  failed = false;

  constructor(
    private readonly proxy: Proxy,
    readonly route: Route,
    readonly targets: RouteTargets,
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    private readonly clientWantsClose: boolean,
  ) {
    this.target = targets.single ?? targets.pick()!;
    this.path = targets.strip ? targets.pathFor(req.url!) : req.url!;
    this.method = req.method!;
    this.headers = req.headers as Record<string, string>;
    this.withBody = hasBody(req);
    this.body = this.withBody ? req : null;
    this.headersTimeout = route.timeout;
    this.bodyTimeout = route.timeout;
  }

  /** Sends the request to this.target (again, after a reset or a refused connection). */
  send(): void {
    this.abort = undefined;
    this.proxy.poolOf(this.target).dispatch(this, this);
  }

  onConnect(abort: () => void): void {
    this.abort = abort;
    if (this.clientGone) abort();
  }

  onHeaders(statusCode: number, rawHeaders: string[], resume: () => void, statusText: string): boolean {
    if (statusCode > 599) {
      this.proxy.fail(this, 'other', `upstream answered with status ${statusCode}`);
      return false;
    }
    this.resumeUpstream = resume;
    const { res } = this;
    try {
      const out = responseHeaders(rawHeaders, this.clientWantsClose, this.proxy.ownCookies);
      if (statusText && (statusText === 'OK' || REASON.test(statusText))) res.writeHead(statusCode, statusText, out);
      else res.writeHead(statusCode, out);
    } catch (err) {
      // a header node refuses to write (invalid characters): nothing was sent yet
      this.proxy.fail(this, 'other', (err as Error).message);
      return false;
    }
    this.answered = true;
    this.targets.answered(this.target);
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.res.write(chunk)) return true;
    this.res.once('drain', (this.onDrain ??= () => this.resumeUpstream?.()));
    return false;
  }

  onComplete(): void {
    this.res.end();
  }

  onError(err: Error & { code?: string }): void {
    if (this.clientGone || this.failed) return;
    const kind = classify(err);
    const { target } = this;
    // A kept-alive connection the upstream closed just as we reused it: nothing reached the
    // upstream's application, so a request without a body is sent once more on a new one.
    if (kind === 'reset' && !this.answered && !this.retried && !this.withBody && IDEMPOTENT.has(this.method)) {
      this.retried = true;
      this.proxy.retried(this.route);
      this.send();
      return;
    }
    const connectFailed = kind === 'refused' || err.code === 'UND_ERR_CONNECT_TIMEOUT';
    if (connectFailed || (kind === 'reset' && !this.answered)) this.proxy.targetFailed(this.targets, target, kind);
    // No connection, so nothing reached the upstream: a request without a body goes to the next target once.
    if (connectFailed && !this.failedOver && !this.withBody) {
      const next = this.targets.pick(target);
      if (next) {
        this.failedOver = true;
        this.proxy.retried(this.route);
        this.target = next;
        this.send();
        return;
      }
    }
    this.proxy.fail(this, kind, err.message, err.code);
  }
}

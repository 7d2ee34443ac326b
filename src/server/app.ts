import type { IncomingMessage, ServerResponse } from 'node:http';
import Koa, { type Context, type Next } from 'koa';
import proxyaddr from 'proxy-addr';
import type { Config } from '../config/schema.js';
import { unauthorized } from '../login/handlers.js';
import type { RateLimiter } from '../login/rate-limit.js';
import type { ReplayStore } from '../login/replay.js';
import type { Metrics } from '../metrics/metrics.js';
import { checkHost, dropHopByHop, peerTrusted, setForwarded, setIdentity, stripClientHeaders, stripCredentials } from '../proxy/headers.js';
import { checkPath } from '../proxy/path.js';
import type { Proxy } from '../proxy/proxy.js';
import { RouteTable } from '../proxy/routes.js';
import type { ActiveSession, Sessions } from '../session/sessions.js';
import type { AccessTokens } from '../wechat/access-token.js';
import type { WechatClient } from '../wechat/client.js';
import { bearerOnly, type WebContext } from '../web/context.js';
import { stripOwnCookies } from '../request/cookies.js';
import { accessLogger, requestId } from '../base/access-log.js';
import { GatewayError, sendError, writeError } from '../base/errors.js';
import type { Logger } from '../base/logger.js';
import { ownEndpointMatcher } from '../endpoints/match.js';
import { ownRouter } from './router.js';

export interface AppDeps {
  config: Config;
  sessions: Sessions;
  wechat: WechatClient;
  /** the apps' access_tokens (POST /wx/phone) */
  accessTokens: AccessTokens;
  replay: ReplayStore;
  metrics: Metrics;
  proxy: Proxy;
  log: Logger;
  /** limits.login: counts POST /login (and POST /scan/tickets, apart) per client IP; absent = no limit */
  loginLimiter?: RateLimiter;
  /** browser logins (config `web`) */
  web?: WebContext;
  /** where browsers are sent for WeChat's OAuth pages (the simulator in dev mode); default config.wechat.oauthBase */
  oauthBase?: string;
  /** aborted when the gateway starts draining (SIGTERM): long polls answer at once instead of waiting */
  draining?: AbortSignal;
  /** where Official Account QR codes are shown (showqrcode; the simulator in dev mode); default https://mp.weixin.qq.com */
  mpBase?: string;
}

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/**
 * The gateway's request listener. The whole order is here:
 *   own endpoints (koa: observe → the router of the endpoint table, router.ts)
 *   everything else (bare node, no koa on the hot path): observe → path check → route → session check
 *     → header steps → proxy
 * A path is the gateway's own exactly when @koa/router would match it: case-insensitive, with or
 * without one trailing slash.
 */
export function createHandler(deps: AppDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const own = createApp(deps).callback();
  const isOwn = ownEndpointMatcher(deps.config);
  const proxied = gateway(deps);
  return function handle(req, res) {
    if (isOwn(req.url ?? '')) {
      void own(req, res);
      return;
    }
    try {
      proxied(req, res);
    } catch (err) {
      // gateway() answers its own errors; this is the last guard, so that nothing takes the process down
      deps.log.error({ err }, 'request failed');
      res.destroy();
    }
  };
}

/** (src/endpoints/match.ts: the table knows the paths; still exported here for its callers) */
export { ownEndpointMatcher };

/** The koa app for the gateway's own endpoints. */
export function createApp(deps: AppDeps): Koa {
  const { metrics, log } = deps;
  const app = new Koa({ proxy: false });
  app.silent = true;

  app.use(observe(metrics, log, accessLogger(deps.config, log)));
  app.use(ownRouter(deps).routes());
  app.use(() => {
    throw new GatewayError('not_found');
  });
  return app;
}

/** Records a finished request; returns its duration in seconds. */
type Record = (route: string, method: string, status: number, start: bigint) => number;

/**
 * Records a finished request: by route, method and status, and its duration. The labelled series are
 * looked up once per label set (all of them bounded) instead of prom-client hashing the labels per request.
 */
function recorder(metrics: Metrics): Record {
  const counters = new Map<string, { inc(): void }>();
  const timers = new Map<string, { observe(seconds: number): void }>();
  return function record(route, method, status, start) {
    const m = METHODS.has(method) ? method : 'OTHER';
    const rm = `${route} ${m}`;
    const key = `${rm} ${status}`;
    let counter = counters.get(key);
    if (!counter) counters.set(key, (counter = metrics.requests.labels({ route, method: m, status: String(status) })));
    let timer = timers.get(rm);
    if (!timer) timers.set(rm, (timer = metrics.requestDuration.labels({ route, method: m })));
    counter.inc();
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    timer.observe(seconds);
    return seconds;
  };
}

/** Outermost for own endpoints: times the request, records it, and turns anything thrown into `{ error, message }`. */
function observe(metrics: Metrics, log: Logger, access: ReturnType<typeof accessLogger>) {
  const record = recorder(metrics);
  return async function observe(ctx: Context, next: Next): Promise<void> {
    const start = process.hrtime.bigint();
    const id = requestId(ctx.req.headers);
    ctx.set('X-Request-Id', id);
    try {
      checkHost(ctx.req);
      await next();
    } catch (err) {
      writeError(ctx, err, log);
    }
    const route = ctx.state.route ?? 'unmatched';
    const seconds = record(route, ctx.method, ctx.status, start);
    access?.({ id, route, method: ctx.method, url: ctx.url, status: ctx.status, seconds, who: ctx.state.session });
  };
}

/**
 * routes[].bodyLimit: a declared Content-Length over the limit is refused before anything is sent on.
 * A chunked body is counted as it streams: the chunk that crosses the limit is not passed on, and the
 * client gets 413 if no answer has begun (then, as after a begun one, its connection is closed, which
 * aborts the upstream request, so the upstream never sees a complete request).
 */
function checkBodyLimit(req: IncomingMessage, res: ServerResponse, limit: number, log: Logger, route: string): void {
  const message = `The request body is larger than ${limit} bytes.`;
  const length = req.headers['content-length'];
  if (length !== undefined) {
    // node's parser has refused malformed and conflicting lengths already
    if (Number(length) > limit) throw new GatewayError('payload_too_large', { message, headers: { Connection: 'close' } });
    return;
  }
  if (req.headers['transfer-encoding'] === undefined) return;
  let received = 0;
  const push = req.push;
  req.push = function (this: IncomingMessage, chunk: unknown, encoding?: BufferEncoding): boolean {
    if (received > limit) return true; // over the limit: nothing more goes on, not even the end
    if (chunk !== null && chunk !== undefined) {
      received += (chunk as Buffer).length;
      if (received > limit) {
        if (!res.headersSent) sendError(req, res, new GatewayError('payload_too_large', { message, headers: { Connection: 'close' } }), log, route);
        // before the answer counts as finished: the proxy sees a client gone and drops the upstream request
        req.destroy();
        return true;
      }
    }
    return push.call(this, chunk, encoding);
  };
}

/**
 * Everything else: path check → route → session check → header steps → proxy, recorded like the rest.
 * A session the LRU holds is answered synchronously, so such a request reaches the upstream in the same
 * tick, without a promise on its way.
 */
function gateway({ config, sessions, proxy, metrics, log, web }: AppDeps) {
  const credentials = web?.credentials ?? bearerOnly;
  const ownCookies = web?.cookies.names;
  const routes = new RouteTable(config.routes);
  /** routes[].apps as Sets, made once; routes without `apps` are not in here and cost nothing per request */
  const allowedApps = new Map(routes.all.filter((r) => r.apps).map((r) => [r, new Set(r.apps)] as const));
  const trust = proxyaddr.compile([...config.server.trustedProxies]);
  const record = recorder(metrics);
  const access = accessLogger(config, log);

  return function gateway(req: IncomingMessage, res: ServerResponse): void {
    const start = process.hrtime.bigint();
    let routeName = 'unmatched';
    let who: ActiveSession | undefined;
    const id = requestId(req.headers);
    /** `upstream`: the target that answered, for a proxied request */
    const done = (upstream?: string) => {
      const status = res.headersSent ? res.statusCode : 499;
      const seconds = record(routeName, req.method ?? 'OTHER', status, start);
      access?.({ id, route: routeName, method: req.method ?? 'OTHER', url: req.url ?? '', status, seconds, upstream, who });
    };
    const fail = (err: unknown) => {
      sendError(req, res, err, log, routeName);
      done();
    };
    try {
      checkHost(req);
      const checked = checkPath(req.url ?? '');
      if (!checked.ok) throw new GatewayError('bad_path', { detail: { reason: checked.reason } });
      const route = routes.match(checked.matchKey);
      if (!route) throw new GatewayError('not_found');
      routeName = route.name;
      if (route.bodyLimit !== undefined) checkBodyLimit(req, res, route.bodyLimit, log, routeName);

      const headers = req.headers;
      const clientWantsClose = headers.connection !== undefined && /(?:^|,)\s*close\s*(?:,|$)/i.test(headers.connection);
      // Delete first, then set: nothing the client sent can pass for the gateway's own identity headers.
      dropHopByHop(headers);
      const trusted = peerTrusted(req, trust);
      stripClientHeaders(headers, trusted);
      const allowed = route.apps && allowedApps.get(route);
      const send = (session: ActiveSession | undefined) => {
        if (allowed && !(session && allowed.has(session.appid))) throw new GatewayError('app_not_allowed');
        // a chunked body crossed routes[].bodyLimit while the session was looked up: answered already
        if (route.bodyLimit !== undefined && req.destroyed) return done();
        stripCredentials(headers);
        if (ownCookies) stripOwnCookies(headers, ownCookies);
        setForwarded(req, trusted);
        if (session) setIdentity(headers, session, route.forwardPhone);
        // again after the hop-by-hop step: a Connection header naming it cannot drop it
        headers['x-request-id'] = id;
        who = session;
        proxy.forward(req, res, route, clientWantsClose, done);
      };
      if (route.auth !== 'required') return send(undefined);

      const { token, via, given } = credentials.of(req);
      if (!token) throw unauthorized(given);
      // a cookie session changing something must come from an allowed page (CSRF); Bearer needs nothing
      const verified = (session: ActiveSession | undefined): ActiveSession => {
        if (!session) throw unauthorized(true);
        if (via === 'cookie' && !credentials.csrfOk(req, via, token)) throw new GatewayError('csrf_failed');
        return session;
      };
      const found = sessions.authenticate(token);
      if (!(found instanceof Promise)) return send(verified(found));
      found.then((session) => send(verified(session))).catch(fail);
    } catch (err) {
      fail(err);
    }
  };
}

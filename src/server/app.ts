import type { IncomingMessage, ServerResponse } from 'node:http';
import Router from '@koa/router';
import Koa, { type Context, type Next } from 'koa';
import proxyaddr from 'proxy-addr';
import type { Config } from '../config/schema.js';
import { createCodeOnce, type CodeOnce } from '../login/code-once.js';
import { decryptHandler } from '../login/decrypt.js';
import { phoneHandler } from '../login/phone.js';
import { loginHandlers } from '../login/handlers.js';
import { clientKey, type RateLimiter } from '../login/rate-limit.js';
import type { ReplayStore } from '../login/replay.js';
import type { Metrics } from '../metrics/metrics.js';
import { checkHost } from '../request/host.js';
import { httpGateway } from '../proxy/admission/gate.js';
import { recorder } from '../proxy/admission/record.js';
import type { Proxy } from '../proxy/proxy.js';
import { safeMessage } from '../session/redis-store.js';
import type { ActiveSession, Sessions } from '../session/sessions.js';
import type { AccessTokens } from '../wechat/access-token.js';
import type { WechatClient } from '../wechat/client.js';
import { bearerOnly, type WebContext } from '../web/context.js';
import { ownEndpointMatcher } from '../request/own-endpoints.js';
import { demoPage, demoPageFor } from '../web/demo.js';
import { oauthFlows, oauthHandlers } from '../web/oauth.js';
import { scanHandlers } from '../web/scan.js';
import { mpQrDemoFlow, mpQrHandlers } from '../web/mp-qr.js';
import { accessLogger, requestId } from '../base/access-log.js';
import { openapiDocument } from './openapi.js';
import { GatewayError } from '../base/errors.js';
import { writeError } from '../base/error-answer.js';
import type { Logger } from '../base/logger.js';

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

/**
 * The gateway's request listener: the split between its own endpoints and the rest is here:
 *   own endpoints (koa: observe → router → login | session | logout | health | metrics)
 *   everything else (bare node, no koa on the hot path): admission (proxy/admission/steps.ts: path
 *     check → route → session → header steps) → proxy
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

/** The koa app for the gateway's own endpoints. */
export function createApp(deps: AppDeps): Koa {
  const { metrics, log } = deps;
  const app = new Koa({ proxy: false });
  app.silent = true;

  app.use(observe(metrics, log, accessLogger(deps.config, log)));
  app.use(ownEndpoints(deps).routes());
  app.use(() => {
    throw new GatewayError('not_found');
  });
  return app;
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

/** The endpoints the gateway answers itself; any other method on their paths is 405. */
function ownEndpoints(deps: AppDeps): Router {
  const { config, sessions, metrics } = deps;
  const router = new Router();
  const codeOnce = createCodeOnce({ replay: deps.replay, metrics, log: deps.log, wechatTimeout: config.wechat.timeout });
  const h = loginHandlers({ ...deps, codeOnce });
  const e = config.endpoints;
  const label = (name: string) => async (ctx: Context, next: Next) => {
    ctx.state.route = name;
    await next();
  };
  const notAllowed = (allow: string) => (ctx: Context) => {
    ctx.set('Allow', allow);
    throw new GatewayError('method_not_allowed');
  };

  const limit = perIpLimit(deps, 'login');
  if (limit) router.post(e.login, label('login'), limit, h.login);
  else router.post(e.login, label('login'), h.login);
  router.all(e.login, label('login'), notAllowed('POST'));
  router.get(e.session, label('session'), h.session).all(e.session, label('session'), notAllowed('GET, HEAD'));
  router.post(e.logout, label('logout'), h.logout).all(e.logout, label('logout'), notAllowed('POST'));
  router
    .post(e.decrypt, label('decrypt'), decryptHandler({ config, sessions, current: h.current, keys: h.keys, log: deps.log }))
    .all(e.decrypt, label('decrypt'), notAllowed('POST'));
  router
    .post(e.phone, label('phone'), phoneHandler({ config, sessions, wechat: deps.wechat, accessTokens: deps.accessTokens, current: h.current, log: deps.log }))
    .all(e.phone, label('phone'), notAllowed('POST'));
  router
    .get(e.healthz, label('healthz'), (ctx) => {
      ctx.set('Cache-Control', 'no-store');
      ctx.body = { status: 'ok' };
    })
    .all(e.healthz, label('healthz'), notAllowed('GET, HEAD'));
  router
    .get(e.readyz, label('readyz'), async (ctx) => {
      ctx.set('Cache-Control', 'no-store');
      try {
        await sessions.store.ping();
        ctx.body = { status: 'ok', store: sessions.store.kind };
      } catch {
        throw new GatewayError('not_ready', { message: `The ${sessions.store.kind} session store does not answer.` });
      }
    })
    .all(e.readyz, label('readyz'), notAllowed('GET, HEAD'));
  const openapi = JSON.stringify(openapiDocument(config));
  router
    .get(e.openapi, label('openapi'), (ctx) => {
      ctx.type = 'application/json';
      ctx.body = openapi;
    })
    .all(e.openapi, label('openapi'), notAllowed('GET, HEAD'));
  if (config.metrics.enabled && config.metrics.port === undefined) {
    router
      .get(config.metrics.path, label('metrics'), async (ctx) => {
        ctx.type = metrics.registry.contentType;
        ctx.body = await metrics.registry.metrics();
      })
      .all(config.metrics.path, label('metrics'), notAllowed('GET, HEAD'));
  }
  if (deps.web) webEndpoints(router, deps, deps.web, codeOnce, h.current, label, notAllowed);
  return router;
}

/**
 * Browser logins (config `web`): the OAuth flows under /oauth/, scan-to-login under /scan/. Errors on
 * the pages a browser navigates to (authorize, callback, demo) are HTML for a browser, JSON otherwise.
 */
function webEndpoints(
  router: Router,
  deps: AppDeps,
  web: WebContext,
  codeOnce: CodeOnce,
  current: (ctx: Context) => Promise<{ token: string; via: 'bearer' | 'cookie' | undefined; session: ActiveSession }>,
  label: (name: string) => (ctx: Context, next: Next) => Promise<void>,
  notAllowed: (allow: string) => (ctx: Context) => never,
): void {
  const { config, sessions, wechat, log } = deps;
  const oauth = oauthHandlers({ config, web, sessions, wechat, codeOnce, log });
  const flows = oauthFlows(config, deps.oauthBase ?? config.wechat.oauthBase);
  // one link for every browser: the OA login inside WeChat, the website QR (or scan page) elsewhere
  router.get('/oauth/web/authorize', label('oauth_web'), htmlErrors, oauth.entry(flows)).all('/oauth/web/authorize', label('oauth_web'), notAllowed('GET, HEAD'));
  for (const flow of flows) {
    const p = `/oauth/${flow.provider}`;
    router.get(`${p}/authorize`, label(`oauth_${flow.provider}`), htmlErrors, oauth.authorize(flow)).all(`${p}/authorize`, label(`oauth_${flow.provider}`), notAllowed('GET, HEAD'));
    router.get(`${p}/callback`, label(`oauth_${flow.provider}`), htmlErrors, oauth.callback(flow)).all(`${p}/callback`, label(`oauth_${flow.provider}`), notAllowed('GET, HEAD'));
  }
  const scan = config.web!.scan;
  if (scan) {
    const h = scanHandlers({ config, web, sessions, wechat, accessTokens: deps.accessTokens, current, log, draining: deps.draining });
    const limit = perIpLimit(deps, 'scan');
    const s = label('scan');
    if (limit) router.post('/scan/tickets', s, limit, h.create);
    else router.post('/scan/tickets', s, h.create);
    router.all('/scan/tickets', s, notAllowed('POST'));
    router.get('/scan/tickets/:id', s, h.wait).all('/scan/tickets/:id', s, notAllowed('GET, HEAD'));
    router.post('/scan/tickets/:id/scanned', s, h.scanned).all('/scan/tickets/:id/scanned', s, notAllowed('POST'));
    router.post('/scan/tickets/:id/confirm', s, h.confirm).all('/scan/tickets/:id/confirm', s, notAllowed('POST'));
    router.post('/scan/tickets/:id/cancel', s, h.cancel).all('/scan/tickets/:id/cancel', s, notAllowed('POST'));
    if (scan.demo) router.get('/scan/demo', s, htmlErrors, demoPage).all('/scan/demo', s, notAllowed('GET, HEAD'));
  }
  const mpQr = config.web!.mpQr;
  if (mpQr) {
    const h = mpQrHandlers({ config, web, sessions, wechat, accessTokens: deps.accessTokens, log, metrics: deps.metrics, mpBase: deps.mpBase, draining: deps.draining });
    const limit = perIpLimit(deps, 'qr');
    const s = label('mpqr');
    if (limit) router.post('/qr/tickets', s, limit, h.create);
    else router.post('/qr/tickets', s, h.create);
    router.all('/qr/tickets', s, notAllowed('POST'));
    router.get('/qr/tickets/:id', s, h.wait).all('/qr/tickets/:id', s, notAllowed('GET, HEAD'));
    const ev = label('mp_events');
    router.get(mpQr.eventsPath, ev, h.verifyUrl).post(mpQr.eventsPath, ev, h.push).all(mpQr.eventsPath, ev, notAllowed('GET, HEAD, POST'));
    if (mpQr.demo) {
      const page = demoPageFor(mpQrDemoFlow(deps.mpBase ?? config.wechat.mpBase));
      router.get('/qr/demo', s, htmlErrors, page).all('/qr/demo', s, notAllowed('GET, HEAD'));
    }
  }
  router.all(/^\/(oauth|scan|qr)(\/.*)?$/i, label('web'), () => {
    throw new GatewayError('not_found', { message: 'No such web login endpoint.' });
  });
}

/** Errors as a small HTML page for a browser that navigates (Accept: text/html), as JSON otherwise. */
async function htmlErrors(ctx: Context, next: Next): Promise<void> {
  try {
    await next();
  } catch (err) {
    if (!(err instanceof GatewayError) || !ctx.accepts('json', 'html') || ctx.accepts('json', 'html') === 'json' || !ctx.get('accept').includes('text/html')) throw err;
    ctx.status = err.status;
    if (err.headers) ctx.set(err.headers);
    ctx.set('Cache-Control', 'no-store');
    ctx.set('Content-Security-Policy', "default-src 'none'; style-src 'unsafe-inline'");
    ctx.type = 'text/html; charset=utf-8';
    const text = err.message.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
    ctx.body = err.page ?? `<!doctype html><html><head><meta charset="utf-8"><title>Login</title></head><body style="font:16px system-ui,sans-serif;max-width:32rem;margin:3rem auto"><h1>Login did not work</h1><p>${text}</p><p><code>${err.code}</code></p></body></html>`;
  }
}

/**
 * limits.login: every POST /login counts against its client's budget (the socket peer, or the
 * X-Forwarded-For entry server.trustedProxies vouch for); beyond it 429 rate_limited with Retry-After.
 * When the counter cannot be reached (Redis down) logins go on unlimited: logged once, counted as
 * wxgate_session_store_errors_total{op="rateLimit"}.
 */
function perIpLimit({ config, metrics, log, loginLimiter }: AppDeps, endpoint: 'login' | 'scan' | 'qr') {
  if (!loginLimiter) return undefined;
  const trust = proxyaddr.compile([...config.server.trustedProxies]);
  const limited = metrics.rateLimited.labels({ endpoint });
  let failing = false;
  const what = endpoint === 'login' ? 'logins' : 'QR codes';
  return async function limitPerIp(ctx: Context, next: Next): Promise<void> {
    const client = clientKey(proxyaddr(ctx.req, trust) ?? '');
    // one budget per endpoint: the scan tickets' counters are kept apart from the logins'
    const decision = await loginLimiter.hit(endpoint === 'login' ? client : `${endpoint}:${client}`).then(
      (d) => {
        if (failing) log.info({}, 'the login rate limit is counting again');
        failing = false;
        return d;
      },
      (err: unknown) => {
        metrics.sessionStoreErrors.inc({ op: 'rateLimit' });
        if (!failing) log.warn({ err: safeMessage(err) }, 'the login rate limit cannot count (session store unavailable); logins are not limited meanwhile');
        failing = true;
        return undefined;
      },
    );
    if (decision && !decision.allowed) {
      limited.inc();
      if (endpoint === 'login') metrics.logins.inc({ result: 'rate_limited' });
      throw new GatewayError('rate_limited', {
        message: `Too many ${what} from this address; retry after the time in Retry-After.`,
        headers: { 'Retry-After': String(Math.max(1, Math.ceil(decision.retryAfterMs / 1000))) },
      });
    }
    await next();
  };
}

/** Everything else: admission (proxy/admission/) → proxy, recorded like the rest. */
function gateway({ config, sessions, proxy, metrics, log, web }: AppDeps) {
  return httpGateway({ config, sessions, proxy, metrics, log, credentials: web?.credentials ?? bearerOnly, ownCookies: web?.cookies.names });
}

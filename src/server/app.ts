import type { IncomingMessage, ServerResponse } from 'node:http';
import Koa, { type Context, type Next } from 'koa';
import type { Config } from '../config/schema.js';
import type { RateLimiter } from '../login/rate-limit.js';
import type { ReplayStore } from '../login/replay.js';
import type { Metrics } from '../metrics/metrics.js';
import { checkHost } from '../request/host.js';
import { httpGateway } from '../proxy/admission/gate.js';
import { recorder } from '../proxy/admission/record.js';
import type { Proxy } from '../proxy/proxy.js';
import type { Sessions } from '../session/sessions.js';
import type { AccessTokens } from '../wechat/access-token.js';
import type { WechatClient } from '../wechat/client.js';
import { bearerOnly, type WebContext } from '../web/context.js';
import { accessLogger, requestId } from '../base/access-log.js';
import { GatewayError } from '../base/errors.js';
import { writeError } from '../base/error-answer.js';
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

/**
 * The gateway's request listener: the split between its own endpoints and the rest is here:
 *   own endpoints (koa: observe → the router of the endpoint table, router.ts)
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
  app.use(ownRouter(deps).routes());
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

/** Everything else: admission (proxy/admission/) → proxy, recorded like the rest. */
function gateway({ config, sessions, proxy, metrics, log, web }: AppDeps) {
  return httpGateway({ config, sessions, proxy, metrics, log, credentials: web?.credentials ?? bearerOnly, ownCookies: web?.cookies.names });
}

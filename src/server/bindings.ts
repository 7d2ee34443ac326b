import type { Context, Middleware } from 'koa';
import { GatewayError } from '../base/errors.js';
import type { HandlerName, OwnEndpoint } from '../endpoints/table.js';
import { createCodeOnce } from '../login/code-once.js';
import { decryptHandler, miniProgramSession } from '../login/decrypt.js';
import { loginHandlers } from '../login/handlers.js';
import { phoneHandler } from '../login/phone.js';
import { demoPage, demoPageFor } from '../web/demo.js';
import { mpQrDemoFlow, mpQrHandlers } from '../web/mp-qr.js';
import { oauthFlows, oauthHandlers } from '../web/oauth.js';
import { scanHandlers } from '../web/scan.js';
import type { AppDeps } from './app.js';
import { openapiDocument } from './openapi.js';

/** Made on first use, then kept: a part's handlers exist only when a row of the table needs them. */
function once<T>(make: () => T): () => T {
  let made: { value: T } | undefined;
  return () => (made ??= { value: make() }).value;
}

/** The handler of each row of the endpoint table (`handler`), bound to the gateway's parts. */
export function bindings(deps: AppDeps) {
  const { config, sessions, wechat, accessTokens, metrics, log } = deps;
  const codeOnce = createCodeOnce({ replay: deps.replay, metrics, log, wechatTimeout: config.wechat.timeout });
  const h = loginHandlers({ ...deps, codeOnce });
  const web = () => {
    if (!deps.web) throw new Error('config.web is set, but the app was given no web context');
    return deps.web;
  };
  const oauth = once(() => oauthHandlers({ config, web: web(), sessions, wechat, codeOnce, log }));
  const flows = once(() => oauthFlows(config, deps.oauthBase ?? config.wechat.oauthBase));
  const flow = (row: OwnEndpoint) => {
    const found = flows().find((f) => f.provider === row.provider);
    if (!found) throw new Error(`no OAuth flow ${row.provider} for ${row.path}`);
    return found;
  };
  const scan = once(() => scanHandlers({ config, web: web(), sessions, wechat, accessTokens, current: h.current, log, draining: deps.draining }));
  const mpQr = once(() => mpQrHandlers({ config, web: web(), sessions, wechat, accessTokens, log, metrics, mpBase: deps.mpBase, draining: deps.draining }));

  const handlers: Record<HandlerName, (row: OwnEndpoint) => Middleware> = {
    login: () => h.login,
    session: () => h.session,
    logout: () => h.logout,
    decrypt: () => decryptHandler({ sessions, keys: h.keys, log }),
    phone: () => phoneHandler({ config, sessions, wechat, accessTokens, log }),
    healthz: () => (ctx: Context) => {
      ctx.set('Cache-Control', 'no-store');
      ctx.body = { status: 'ok' };
    },
    readyz: () => async (ctx: Context) => {
      ctx.set('Cache-Control', 'no-store');
      try {
        await sessions.store.ping();
        ctx.body = { status: 'ok', store: sessions.store.kind };
      } catch {
        throw new GatewayError('not_ready', { message: `The ${sessions.store.kind} session store does not answer.` });
      }
    },
    openapi: () => {
      const document = JSON.stringify(openapiDocument(config));
      return (ctx: Context) => {
        ctx.type = 'application/json';
        ctx.body = document;
      };
    },
    metrics: () => async (ctx: Context) => {
      ctx.type = metrics.registry.contentType;
      ctx.body = await metrics.registry.metrics();
    },
    // one link for every browser: the OA login inside WeChat, the website QR (or scan page) elsewhere
    oauthEntry: () => oauth().entry(flows()),
    oauthAuthorize: (row) => oauth().authorize(flow(row)),
    oauthCallback: (row) => oauth().callback(flow(row)),
    scanCreate: () => scan().create,
    scanWait: () => scan().wait,
    scanScanned: () => scan().scanned,
    scanConfirm: () => scan().confirm,
    scanCancel: () => scan().cancel,
    scanDemo: () => demoPage,
    mpQrCreate: () => mpQr().create,
    mpQrWait: () => mpQr().wait,
    mpEventsVerify: () => mpQr().verifyUrl,
    mpEventsPush: () => mpQr().push,
    mpQrDemo: () => demoPageFor(mpQrDemoFlow(deps.mpBase ?? config.wechat.mpBase)),
  };
  return { handlers, miniProgramSession: (what: string) => miniProgramSession(config, h.current, what) };
}

import { hash } from 'node:crypto';
import type { Context } from 'koa';
import proxyaddr from 'proxy-addr';
import type { Config } from '../config/schema.js';
import type { CodeOnce, Exchanged } from '../login/code-once.js';
import { deviceOf, type Device } from '../session/accounts.js';
import { GatewayError, wechatErrorFor, type ErrorCode } from '../server/errors.js';
import type { Sessions } from '../session/sessions.js';
import type { WechatClient } from '../wechat/client.js';
import { WechatError } from '../wechat/types.js';
import type { WebContext } from './context.js';
import { allowedRedirect, type Provider } from './state.js';

interface Logger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** An OAuth code as WeChat hands it over: short and printable; anything else never goes to WeChat. */
const CODE = /^[\x21-\x7e]{1,128}$/;
/** WeChat's answers that stay true for the code's whole life, so a repeated callback gets them too. */
const FINAL: ReadonlySet<ErrorCode> = new Set(['code_invalid', 'code_used']);

export function oauthErrorFor(err: WechatError): ErrorCode {
  return wechatErrorFor(err, { 40029: 'code_invalid', 40163: 'code_used' });
}

interface Flow {
  provider: Provider;
  appid: string;
  scope: 'snsapi_base' | 'snsapi_userinfo' | 'snsapi_login';
  /** WeChat's page the browser is sent to */
  page: string;
}

/**
 * Web OAuth logins, one flow per configured web app:
 *   GET /oauth/mp/authorize?redirect=…    Official Account (公众号) pages inside WeChat: connect/oauth2/authorize
 *   GET /oauth/open/authorize?redirect=…  a website's QR login (Open Platform website app): connect/qrconnect
 * → 302 to WeChat with a state bound to this browser (state.ts) → WeChat sends the browser back to
 *   GET /oauth/{mp,open}/callback?code&state: the code is spent once (code-once.ts: a repeated redirect
 *   or the back button gets the same session, never WeChat's 40163), a session is made for (web appid,
 *   openid, unionid), set as the session cookie, and the browser is sent to the approved redirect.
 * The redirect_uri is built from web.publicUrl, never from the request's Host.
 */
export function oauthFlows(config: Config, oauthBase: string): Flow[] {
  const web = config.web!;
  const base = oauthBase.replace(/\/+$/, '');
  const flows: Flow[] = [];
  if (web.mp) flows.push({ provider: 'mp', appid: web.mp.appid, scope: web.mp.scope, page: `${base}/connect/oauth2/authorize` });
  if (web.open) flows.push({ provider: 'open', appid: web.open.appid, scope: 'snsapi_login', page: `${base}/connect/qrconnect` });
  return flows;
}

export function oauthHandlers(deps: { config: Config; web: WebContext; sessions: Sessions; wechat: WechatClient; codeOnce: CodeOnce; log: Logger }) {
  const { config, web, sessions, wechat, codeOnce, log } = deps;
  const { publicUrl, redirects } = config.web!;
  const trust = proxyaddr.compile([...config.server.trustedProxies]);

  function authorize(flow: Flow) {
    return async function authorize(ctx: Context): Promise<void> {
      const wanted = ctx.query.redirect ?? '/';
      const redirect = allowedRedirect(wanted, redirects, publicUrl);
      if (!redirect) throw new GatewayError('redirect_not_allowed');
      const { state, cookie } = await web.states.issue(flow.provider, redirect);
      // WeChat wants the parameters in this order, and the #wechat_redirect fragment
      const query = new URLSearchParams({
        appid: flow.appid,
        redirect_uri: `${publicUrl}/oauth/${flow.provider}/callback`,
        response_type: 'code',
        scope: flow.scope,
        state,
      });
      ctx.set('Cache-Control', 'no-store');
      ctx.append('Set-Cookie', web.cookies.set(web.cookies.state, cookie, config.web!.loginTimeout / 1000));
      ctx.redirect(`${flow.page}?${query}#wechat_redirect`);
    };
  }

  /** Spends the code at WeChat and makes the session (at most once per code, see code-once.ts). */
  async function exchange(flow: Flow, code: string, device: Device): Promise<Exchanged> {
    try {
      const granted = await wechat.oauth2AccessToken(flow.appid, code);
      if (granted.isSnapshotuser) {
        // a page opened as a Moments "snapshot": WeChat gives a stand-in openid, not the user's
        return { error: 'login_denied', final: true };
      }
      let unionid = granted.unionid;
      if (flow.scope === 'snsapi_userinfo' && !unionid) {
        try {
          unionid = (await wechat.snsUserinfo(granted.accessToken, granted.openid)).unionid;
        } catch (err) {
          log.warn({ appid: flow.appid, err: (err as Error).message }, 'sns/userinfo failed; the session has no unionid');
        }
      }
      const { token } = await sessions.create({ appid: flow.appid, openid: granted.openid, ...(unionid ? { unionid } : {}) }, undefined, flow.provider, device);
      return { token };
    } catch (err) {
      if (!(err instanceof WechatError)) throw err;
      const error = oauthErrorFor(err);
      log.warn({ appid: flow.appid, kind: err.kind, errcode: err.errcode, errmsg: err.errmsg }, 'WeChat refused the web login');
      // the openid is not known: the audit line only, no user history
      await sessions.accounts?.audit({ event: 'login_failed', appid: flow.appid, flow: flow.provider, error, ...(err.errcode !== undefined ? { errcode: err.errcode } : {}), ...device });
      return { error, final: FINAL.has(error) };
    }
  }

  function callback(flow: Flow) {
    return async function callback(ctx: Context): Promise<void> {
      ctx.set('Cache-Control', 'no-store');
      const verified = await web.states.verify(flow.provider, ctx.query.state, web.cookies.read(ctx.get('cookie'), web.cookies.state));
      if (!verified) throw new GatewayError('state_invalid');
      const code = ctx.query.code;
      // the user said no: WeChat comes back with the state only
      if (code === undefined || code === '') throw new GatewayError('login_denied');
      if (typeof code !== 'string' || !CODE.test(code)) throw new GatewayError('bad_request', { message: 'The "code" is not a WeChat authorization code.' });
      // One state, one code: the same code again is the same login (idempotent), another code is a reuse.
      const codeMark = hash('sha256', `${flow.appid}\n${code}`, 'base64url').slice(0, 22);
      const first = await web.store.once(`st:${verified.nonce}`, codeMark, config.web!.loginTimeout);
      if (first !== undefined && first !== codeMark) throw new GatewayError('state_used');
      const outcome = await codeOnce(flow.appid, code, () => exchange(flow, code, deviceOf(ctx.req, trust)));
      if ('error' in outcome) {
        const error = outcome.error as ErrorCode;
        if (error === 'login_denied') throw new GatewayError(error, { message: 'Open this page in WeChat itself (not as a Moments snapshot) to log in.' });
        throw new GatewayError(error, error === 'wechat_rate_limited' ? { headers: { 'Retry-After': '1' } } : {});
      }
      const session = await sessions.authenticate(outcome.token);
      if (!session) throw new GatewayError('code_used', { message: 'This login has ended since (logged out); start the login again.' });
      web.setSession(ctx, outcome.token);
      log.info({ appid: flow.appid, flow: flow.provider }, 'web login');
      ctx.redirect(verified.redirect);
    };
  }

  return { authorize, callback };
}

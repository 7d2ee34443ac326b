import { hash, randomBytes } from 'node:crypto';
import type { Context } from 'koa';
import proxyaddr from 'proxy-addr';
import type { Config } from '../config/schema.js';
import type { CodeOnce, Exchanged } from '../login/code-once.js';
import { deviceOf, type Device } from '../session/controls.js';
import { GatewayError, type ErrorCode } from '../base/errors.js';
import { nextMinuteRetryAfter, wechatErrorFor } from '../wechat/errcodes.js';
import type { Sessions } from '../session/sessions.js';
import type { WechatClient } from '../wechat/client.js';
import { WechatError } from '../wechat/types.js';
import type { WebContext } from './context.js';
import { hostMismatch } from './public-host.js';
import { snapshotPage } from './snapshot.js';
import { allowedRedirect, type Provider } from './state.js';

interface Logger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** An OAuth code as WeChat hands it over: short and printable; anything else never goes to WeChat. */
const CODE = /^[\x21-\x7e]{1,128}$/;
/** WeChat's answers that stay true for the code's whole life, so a repeated callback gets them too. */
const FINAL: ReadonlySet<ErrorCode> = new Set(['code_invalid', 'code_used']);

interface Flow {
  provider: Provider;
  appid: string;
  scope: 'snsapi_base' | 'snsapi_userinfo' | 'snsapi_login';
  /** WeChat's page the browser is sent to */
  page: string;
}

export function oauthFlows(config: Config, oauthBase: string): Flow[] {
  const web = config.web!;
  const base = oauthBase.replace(/\/+$/, '');
  const flows: Flow[] = [];
  if (web.mp) flows.push({ provider: 'mp', appid: web.mp.appid, scope: web.mp.scope, page: `${base}/connect/oauth2/authorize` });
  if (web.open) flows.push({ provider: 'open', appid: web.open.appid, scope: 'snsapi_login', page: `${base}/connect/qrconnect` });
  return flows;
}

/**
 * Web OAuth logins, one flow per configured web app:
 *   GET /oauth/mp/authorize?redirect=…    Official Account (公众号) pages inside WeChat: connect/oauth2/authorize
 *   GET /oauth/open/authorize?redirect=…  a website's QR login (Open Platform website app): connect/qrconnect
 * → 302 to WeChat with a state bound to this browser (state.ts) → WeChat sends the browser back to
 *   GET /oauth/{mp,open}/callback?code&state: the code is spent once (code-once.ts: a repeated redirect
 *   or the back button gets the same session, never WeChat's 40163; bound to the state that spent it, so
 *   the code in another browser's login gets no session), a session is made for (web appid,
 *   openid, unionid), set as the session cookie, and the browser is sent to the approved redirect.
 * The redirect_uri is built from web.publicUrl, never from the request's Host.
 */
export function oauthHandlers(deps: { config: Config; web: WebContext; sessions: Sessions; wechat: WechatClient; codeOnce: CodeOnce; log: Logger }) {
  const { config, web, sessions, wechat, codeOnce, log } = deps;
  const { publicUrl, redirects } = config.web!;
  const trust = proxyaddr.compile([...config.server.trustedProxies]);

  /**
   * The embedded QR (wxLogin.js style, website login only): the site shows the QR inside its own page
   * in an iframe whose src is `/oauth/open/authorize?redirect=…&embed=1` (or /oauth/web/authorize),
   * with WeChat's optional `self_redirect` (true: the login ends inside the iframe; false, the default:
   * in the top window), `style` (black, white), `href` (the site's CSS for WeChat's QR page: a
   * data:text/css;base64 URL, or an https URL on publicUrl's origin, web.origins or an allowed redirect
   * origin) and `stylelite` (1: WeChat's newer layout). Undefined when the request asks for none of it.
   */
  function embedParams(ctx: Context): Array<[string, string]> | undefined {
    const q = ctx.query;
    const one = (name: string): string | undefined => {
      const v = q[name];
      if (Array.isArray(v)) throw new GatewayError('bad_request', { message: `"${name}" is given more than once.` });
      return v === undefined || v === '' ? undefined : v;
    };
    const embed = one('embed');
    const selfRedirect = one('self_redirect');
    const style = one('style');
    const href = one('href');
    const stylelite = one('stylelite');
    if (embed === undefined && selfRedirect === undefined && style === undefined && href === undefined && stylelite === undefined) return undefined;
    if (embed !== undefined && embed !== '1' && embed !== 'true') throw new GatewayError('bad_request', { message: '"embed" must be 1.' });
    if (selfRedirect !== undefined && selfRedirect !== 'true' && selfRedirect !== 'false') throw new GatewayError('bad_request', { message: '"self_redirect" must be true or false.' });
    if (style !== undefined && style !== 'black' && style !== 'white') throw new GatewayError('bad_request', { message: '"style" must be black or white.' });
    if (stylelite !== undefined && stylelite !== '1' && stylelite !== '0') throw new GatewayError('bad_request', { message: '"stylelite" must be 1 or 0.' });
    if (href !== undefined && !cssAllowed(href)) {
      throw new GatewayError('bad_request', { message: '"href" must be a data:text/css;base64 URL (up to 8 KB) or an https URL on web.publicUrl, web.origins or an origin of web.redirects.' });
    }
    const out: Array<[string, string]> = [['login_type', 'jssdk'], ['self_redirect', selfRedirect ?? 'default']];
    if (style) out.push(['style', style]);
    if (href) out.push(['href', href]);
    if (stylelite) out.push(['stylelite', stylelite]);
    return out;
  }

  const cssOrigins = new Set([new URL(publicUrl).origin, ...config.web!.origins.map((o) => new URL(o).origin), ...redirects.filter((r) => !r.startsWith('/')).map((o) => new URL(o).origin)]);
  function cssAllowed(href: string): boolean {
    if (href.length > 8192) return false;
    if (/^data:text\/css;base64,[A-Za-z0-9+/]+={0,2}$/.test(href)) return true;
    try {
      const u = new URL(href);
      return (u.protocol === 'https:' || u.origin === new URL(publicUrl).origin) && !u.username && !u.password && cssOrigins.has(u.origin);
    } catch {
      return false;
    }
  }

  /** authorize: the redirect checked, a state for this browser, and the browser sent to WeChat's page. */
  async function start(ctx: Context, flow: Flow): Promise<void> {
    const mismatch = hostMismatch(ctx, publicUrl);
    if (mismatch?.sameListener) {
      // development: localhost vs 127.0.0.1. Start again on publicUrl's origin, where the callback will be.
      ctx.set('Cache-Control', 'no-store');
      ctx.redirect(`${publicUrl}${ctx.originalUrl}`);
      return;
    }
    const wanted = ctx.query.redirect ?? '/';
    const redirect = allowedRedirect(wanted, redirects, publicUrl);
    if (!redirect) throw new GatewayError('redirect_not_allowed');
    const embed = flow.provider === 'open' ? embedParams(ctx) : undefined;
    const { state, cookie } = await web.states.issue(flow.provider, redirect);
    // WeChat wants the parameters in this order, and the #wechat_redirect fragment
    const query = new URLSearchParams({
      appid: flow.appid,
      redirect_uri: `${publicUrl}/oauth/${flow.provider}/callback`,
      response_type: 'code',
      scope: flow.scope,
      state,
    });
    for (const [k, v] of embed ?? []) query.append(k, v);
    ctx.set('Cache-Control', 'no-store');
    ctx.append('Set-Cookie', web.cookies.set(web.cookies.state, cookie, config.web!.loginTimeout / 1000));
    ctx.redirect(`${flow.page}?${query}#wechat_redirect`);
  }

  function authorize(flow: Flow) {
    return async function authorize(ctx: Context): Promise<void> {
      await start(ctx, flow);
    };
  }

  /**
   * GET /oauth/web/authorize?redirect=…: one "log in with WeChat" link for a site. Inside the WeChat
   * browser (its User-Agent has "MicroMessenger") the Official Account login (web.mp); elsewhere the
   * website QR login (web.open, embedded QR parameters welcome), or, with scan-to-login only, its page
   * (/scan/demo). When nothing configured fits the browser: 400 web_login_unavailable, saying why.
   */
  function entry(flows: ReadonlyArray<Flow>) {
    const mp = flows.find((f) => f.provider === 'mp');
    const open = flows.find((f) => f.provider === 'open');
    const scan = config.web!.scan;
    return async function webAuthorize(ctx: Context): Promise<void> {
      ctx.set('Vary', 'User-Agent');
      ctx.set('Cache-Control', 'no-store');
      const inWechat = /MicroMessenger/i.test(ctx.get('user-agent'));
      const redirect = allowedRedirect(ctx.query.redirect ?? '/', redirects, publicUrl);
      if (!redirect) throw new GatewayError('redirect_not_allowed');
      if (inWechat) {
        if (mp) return start(ctx, mp);
        throw new GatewayError('web_login_unavailable', {
          message: 'Inside WeChat this login needs the Official Account login (web.mp), which is not configured here: open the page in a browser outside WeChat.',
        });
      }
      if (open) return start(ctx, open);
      if (scan?.demo) {
        ctx.redirect(`/scan/demo?${new URLSearchParams({ redirect })}`);
        return;
      }
      if (scan) {
        throw new GatewayError('web_login_unavailable', {
          message: "Outside WeChat this gateway offers scan-to-login only, without its page (web.scan.demo): the site's own page starts it with POST /scan/tickets.",
        });
      }
      throw new GatewayError('web_login_unavailable', {
        message: 'Only the Official Account login (web.mp) is configured, and it works inside WeChat only: open this page in WeChat (or configure web.open for the website QR login).',
      });
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
      const error = wechatErrorFor(err);
      log.warn({ appid: flow.appid, kind: err.kind, errcode: err.errcode, errmsg: err.errmsg }, 'WeChat refused the web login');
      // the openid is not known: the audit line only, no user history
      await sessions.controls?.audit({ event: 'login_failed', appid: flow.appid, flow: flow.provider, error, ...(err.errcode !== undefined ? { errcode: err.errcode } : {}), ...device });
      return { error, final: FINAL.has(error) };
    }
  }

  function callback(flow: Flow) {
    return async function callback(ctx: Context): Promise<void> {
      ctx.set('Cache-Control', 'no-store');
      // the URL carries the code: no page this navigation ends on learns it from a Referer
      ctx.set('Referrer-Policy', 'no-referrer');
      if (ctx.get('sec-fetch-dest') === 'iframe') return toTopWindow(ctx);
      const stateCookie = web.cookies.read(ctx.get('cookie'), web.cookies.state);
      const verified = await web.states.verify(flow.provider, ctx.query.state, stateCookie);
      if (!verified) {
        const mismatch = stateCookie === undefined ? hostMismatch(ctx, publicUrl) : undefined;
        if (mismatch) {
          throw new GatewayError('state_invalid', {
            message: `The browser's origin differs from web.publicUrl: this request came to ${mismatch.host}, web.publicUrl is ${publicUrl}, so the login's state cookie (set on the origin the login started on) is not sent here. Open the site at ${publicUrl} and start the login again, or set web.publicUrl to the origin the browser uses.`,
          });
        }
        throw new GatewayError('state_invalid');
      }
      const code = ctx.query.code;
      // the user said no: WeChat comes back with the state only
      if (code === undefined || code === '') throw new GatewayError('login_denied');
      if (typeof code !== 'string' || !CODE.test(code)) throw new GatewayError('bad_request', { message: 'The "code" is not a WeChat authorization code.' });
      // One state, one code: the same code again is the same login (idempotent), another code is a reuse.
      const codeMark = hash('sha256', `${flow.appid}\n${code}`, 'base64url').slice(0, 22);
      const first = await web.store.once(`st:${verified.nonce}`, codeMark, config.web!.loginTimeout);
      if (first !== undefined && first !== codeMark) throw new GatewayError('state_used');
      // The remembered session goes only to this state (so this browser) again: the same code in anyone
      // else's login, even with a fresh state of their own, is refused (no code injection).
      const outcome = await codeOnce(flow.appid, code, () => exchange(flow, code, deviceOf(ctx.req, trust)), { flow: flow.provider, holder: verified.nonce });
      if ('error' in outcome) {
        const error = outcome.error as ErrorCode;
        if (error === 'login_denied') throw new GatewayError(error, { message: 'Open this page in WeChat itself (not as a Moments snapshot) to log in.', page: snapshotPage(`${publicUrl}/oauth/${flow.provider}/authorize?redirect=${encodeURIComponent(verified.redirect)}`) });
        if (error === 'state_used') throw new GatewayError(error, { message: 'This login code was already used by another login; start the login again.' });
        throw new GatewayError(error, error === 'wechat_rate_limited' ? { headers: { 'Retry-After': nextMinuteRetryAfter() } } : {});
      }
      const session = await sessions.authenticate(outcome.token);
      if (!session) throw new GatewayError('code_used', { message: 'This login has ended since (logged out); start the login again.' });
      web.setSession(ctx, outcome.token);
      log.info({ appid: flow.appid, flow: flow.provider }, 'web login');
      // approved at authorize (and MAC'd into the state); checked again by the same rule, in case
      // web.redirects changed since
      ctx.redirect(allowedRedirect(verified.redirect, redirects, publicUrl) ?? '/');
    };
  }

  /**
   * The callback loaded inside an iframe (the embedded QR with self_redirect=true: WeChat's frame goes
   * to redirect_uri itself). Browsers do not send SameSite=Lax cookies on a navigation another site
   * (WeChat) started in a frame, nor take the session cookie from its answer, so the login cannot end
   * there: the frame sends the top window to this same URL (a page of the top's own origin may), where
   * the state cookie comes along and the login ends as any other. The code is not spent in the frame.
   * Without script, or when the top window is of another origin (no top navigation without a click),
   * a link to click.
   */
  function toTopWindow(ctx: Context): void {
    const nonce = randomBytes(16).toString('base64');
    const target = ctx.originalUrl;
    const js = JSON.stringify(target).replace(/</g, '\\u003c');
    const attr = target.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
    ctx.set('Content-Security-Policy', `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'`);
    ctx.set('X-Content-Type-Options', 'nosniff');
    ctx.type = 'text/html; charset=utf-8';
    ctx.body = `<!doctype html><html><head><meta charset="utf-8"><title>Login</title></head><body style="font:16px system-ui,sans-serif;text-align:center">
<p><a id="continue" href="${attr}" target="_top">Continue / 继续</a></p>
<script nonce="${nonce}">try { window.top.location.replace(${js}); } catch (e) {}</script>
</body></html>`;
  }

  return { authorize, callback, entry };
}

import type { Context } from 'koa';
import proxyaddr from 'proxy-addr';
import type { Config } from '../config/schema.js';
import type { Metrics } from '../metrics/metrics.js';
import { GatewayError, unauthorized, type ErrorCode } from '../base/errors.js';
import { hintFor, nextMinuteRetryAfter, wechatErrorFor } from '../wechat/errcodes.js';
import { deviceOf, UserBlockedError, type Device } from '../session/controls.js';
import type { Sessions } from '../session/sessions.js';
import { StoreUnavailableError } from '../session/types.js';
import type { WechatClient } from '../wechat/client.js';
import { WechatError } from '../wechat/types.js';
import { userDataOf, type LoginBody, type LogoutBody } from '../endpoints/bodies.js';
import { openUserDataAtLogin, requireMiniProgram } from './decrypt.js';
import { keyStaleAtWechat, sessionKeys } from './session-key.js';
import type { AccessTokens } from '../wechat/access-token.js';
import { bearerOnly, type WebContext } from '../web/context.js';
import type { CodeOnce, Exchanged } from './code-once.js';

interface Logger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface LoginDeps {
  config: Config;
  sessions: Sessions;
  wechat: WechatClient;
  /** the apps' shared access_tokens (for wxa/checksession) */
  accessTokens?: AccessTokens;
  /** spends each code once across replicas (code-once.ts) */
  codeOnce: CodeOnce;
  /** browser logins (session cookie, CSRF), when configured */
  web?: WebContext;
  metrics: Metrics;
  log: Logger;
}

/** WeChat's answers that stay true for the code's whole life, so a replay gets them too. */
const FINAL: ReadonlySet<ErrorCode> = new Set(['code_invalid', 'code_used', 'user_blocked']);

/** How a failed jscode2session call is answered. */
export function loginErrorFor(err: WechatError): ErrorCode {
  return wechatErrorFor(err);
}


/** POST /login, GET /session and POST /logout: the mini-program's side of the session (bodies validated before: endpoints/bodies.ts). */
export function loginHandlers({ config, sessions, wechat, accessTokens, codeOnce: once, web, metrics, log }: LoginDeps) {
  const keys = accessTokens ? sessionKeys(wechat, accessTokens) : undefined;
  const credentials = web?.credentials ?? bearerOnly;
  const apps = new Map(config.wechat.apps.map((a) => [a.appid, a]));
  const soleApp = config.wechat.apps.length === 1 ? config.wechat.apps[0]!.appid : undefined;
  const trust = proxyaddr.compile([...config.server.trustedProxies]);
  /** the request's device (user agent, client IP), for the audit trail and the device list */
  const device = (ctx: Context): Device => deviceOf(ctx.req, trust);

  function pickApp(body: Record<string, unknown>, ctx: Context): string {
    const header = ctx.get('x-wx-appid');
    if (body.appid !== undefined && header !== '' && body.appid !== header) {
      throw new GatewayError('invalid_request', { message: 'The "appid" in the body and the X-Wx-Appid header differ.' });
    }
    const given = body.appid ?? header;
    if (given === undefined || given === '') {
      if (soleApp) return soleApp;
      throw new GatewayError('invalid_request', { message: 'Several apps are served here: "appid" is required.' });
    }
    if (typeof given !== 'string' || !apps.has(given)) throw new GatewayError('unknown_appid');
    return given;
  }

  /** Spends a code at WeChat and makes the session (run at most once per code: see code-once.ts). */
  async function exchange(appid: string, code: string, from: Device): Promise<Exchanged> {
    let answer;
    try {
      answer = await wechat.code2Session(appid, code);
    } catch (err) {
      if (!(err instanceof WechatError)) throw err;
      const error = loginErrorFor(err);
      const detail = { appid, kind: err.kind, errcode: err.errcode, errmsg: err.errmsg, hint: hintFor(err.errcode) };
      if (error === 'wechat_quota_exceeded') log.error({ ...detail, error }, 'WeChat refused the login: the daily API quota of this app is used up (45009); logins fail until it is reset');
      else log.warn(detail, 'WeChat refused the login');
      // the openid is not known: the audit line only, no user history
      await sessions.controls?.audit({ event: 'login_failed', appid, flow: 'miniprogram', error, ...(err.errcode !== undefined ? { errcode: err.errcode } : {}), ...from });
      return { error, final: FINAL.has(error) };
    }
    // A user the operator blocked is refused here: WeChat was asked once (only its answer names the
    // user), but no session is made and the session_key is not kept.
    try {
      const { token } = await sessions.create({ appid, openid: answer.openid, unionid: answer.unionid }, answer.sessionKey, 'miniprogram', from);
      return { token };
    } catch (err) {
      if (err instanceof UserBlockedError) throw err.gatewayError();
      throw err;
    }
  }

  async function login(ctx: Context): Promise<void> {
    let result: string = 'ok';
    try {
      const body = ctx.state.body as LoginBody; // validated (endpoints/bodies.ts)
      const code = body.code;
      const appid = pickApp(body, ctx);
      const userData = userDataOf(body);
      const from = device(ctx);
      const outcome = await once(appid, code, () => exchange(appid, code, from), { flow: 'jscode2session' });
      if ('error' in outcome) {
        const error = outcome.error as ErrorCode;
        throw new GatewayError(error, error === 'wechat_rate_limited' ? { headers: { 'Retry-After': nextMinuteRetryAfter() } } : {});
      }
      // A remembered token may have been logged out since: then the code is spent.
      const session = await sessions.authenticate(outcome.token);
      if (!session) throw new GatewayError('code_used');
      ctx.state.session = session;
      const data = userData && (await openUserDataAtLogin(sessions, session, outcome.token, userData));
      ctx.set('Cache-Control', 'no-store');
      ctx.body = { token: outcome.token, expires_in: sessions.expiresIn(session), ...(data ? { data } : {}) };
    } catch (err) {
      result = err instanceof GatewayError ? err.code : err instanceof StoreUnavailableError ? 'session_store_unavailable' : 'internal_error';
      throw err;
    } finally {
      metrics.logins.inc({ result });
    }
  }

  /** The request's session: its Bearer token, or with web logins its session cookie (CSRF-checked). */
  async function current(ctx: Context) {
    const { token, via, given } = credentials.of(ctx.req);
    if (!token) throw unauthorized(given);
    const session = await sessions.authenticate(token);
    if (!session) throw unauthorized(true);
    if (!credentials.csrfOk(ctx.req, via, token)) throw new GatewayError('csrf_failed');
    ctx.state.session = session; // for the access log line
    return { token, via, session };
  }

  /**
   * The server side of wx.checkSession(): is this token still good, and for how long? With
   * `?verify=wechat` (mini-program sessions only) WeChat is asked too whether the session_key the gateway
   * holds is still the user's (wxa/checksession): 401 session_key_stale when not (log in again).
   */
  async function session(ctx: Context): Promise<void> {
    const verify = ctx.query.verify;
    if (verify !== undefined && verify !== 'wechat') throw new GatewayError('bad_request', { message: 'verify must be "wechat" (or absent).' });
    const { session } = await current(ctx);
    if (verify === 'wechat') {
      requireMiniProgram(config, session, 'verify=wechat checks the session_key');
      const key = await sessions.store.getSessionKey(session.appid, session.openid);
      if (!keys) throw new GatewayError('wechat_unavailable', { message: 'The gateway cannot ask WeChat here.' });
      if (key === undefined || !(await keys.check(session.appid, session.openid, key, { cached: true }))) throw keyStaleAtWechat();
    }
    ctx.set('Cache-Control', 'no-store');
    ctx.body = {
      openid: session.openid,
      appid: session.appid,
      ...(session.unionid ? { unionid: session.unionid } : {}),
      expires_in: sessions.expiresIn(session),
    };
  }

  /** Kills the current token, or with `{"all": true}` every session of the user (all devices). */
  async function logout(ctx: Context): Promise<void> {
    const body = ctx.state.body as LogoutBody; // validated (endpoints/bodies.ts)
    if (body.all === true) {
      const { session, via } = await current(ctx);
      const revoked = await sessions.revokeAll(session);
      log.info({ appid: session.appid, revoked }, 'logout of all sessions');
      await sessions.controls?.audit({ event: 'logout', appid: session.appid, openid: session.openid, flow: session.flow, session: session.tokenHash, revoked, by: 'user', ...device(ctx) });
      if (via === 'cookie') web?.clearSession(ctx);
    } else {
      // a token that is no longer valid is logged out all the same (idempotent)
      const { token, via, given } = credentials.of(ctx.req);
      if (!token) throw unauthorized(given);
      if (via === 'cookie' && !credentials.csrfOk(ctx.req, via, token)) throw new GatewayError('csrf_failed');
      // whose it was, for the audit trail (a live session only; the LRU answers most)
      const session = sessions.controls ? await sessions.authenticate(token) : undefined;
      const ended = await sessions.revoke(token);
      if (session && ended) {
        await sessions.controls?.audit({ event: 'logout', appid: session.appid, openid: session.openid, flow: session.flow, session: session.tokenHash, revoked: 1, by: 'user', ...device(ctx) });
      }
      if (via === 'cookie') web?.clearSession(ctx);
    }
    ctx.status = 204;
  }

  return { login, session, logout, current, keys };
}

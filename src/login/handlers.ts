import type { Context } from 'koa';
import type { Config } from '../config/schema.js';
import type { Metrics } from '../metrics/metrics.js';
import { GatewayError, type ErrorCode } from '../server/errors.js';
import type { Sessions } from '../session/sessions.js';
import { authorizationOf, bearerToken } from '../session/tokens.js';
import { StoreUnavailableError } from '../session/types.js';
import type { WechatClient } from '../wechat/client.js';
import { WechatError } from '../wechat/types.js';
import { readJsonObject } from './body.js';
import { openUserDataAtLogin, userDataFields } from './decrypt.js';
import { CODE_LIFETIME_MS, replayKey, seal, unseal, type LoginOutcome, type ReplayStore } from './replay.js';

interface Logger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface LoginDeps {
  config: Config;
  sessions: Sessions;
  wechat: WechatClient;
  replay: ReplayStore;
  metrics: Metrics;
  log: Logger;
}

/** WeChat's answers that stay true for the code's whole life, so a replay gets them too. */
const FINAL: ReadonlySet<ErrorCode> = new Set(['code_invalid', 'code_used', 'user_blocked']);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A wx.login() code is a short printable token; anything else never goes to WeChat. */
const CODE = /^[\x21-\x7e]{1,128}$/;

/** How a failed jscode2session call is answered. */
export function loginErrorFor(err: WechatError): ErrorCode {
  if (err.kind === 'timeout') return 'wechat_timeout';
  if (err.kind === 'network') return 'wechat_unavailable';
  if (err.kind === 'bad_response') return 'wechat_error';
  switch (err.errcode) {
    case 40029:
      return 'code_invalid';
    case 40163:
      return 'code_used';
    case 45011:
      return 'wechat_rate_limited';
    case 40226:
      return 'user_blocked';
    case -1:
      return 'wechat_unavailable';
    default:
      return 'wechat_error';
  }
}

const HINTS: Record<number, string> = {
  40013: 'the appid is not valid: check wechat.apps',
  40125: 'the app secret is wrong: check wechat.apps[].secret',
  41002: 'appid missing',
  41004: 'secret missing',
};

export function unauthorized(tokenGiven: boolean): GatewayError {
  return new GatewayError('unauthorized', {
    headers: { 'WWW-Authenticate': tokenGiven ? 'Bearer realm="wxgate", error="invalid_token"' : 'Bearer realm="wxgate"' },
  });
}

/** POST /login, GET /session and POST /logout: the mini-program's side of the session. */
export function loginHandlers({ config, sessions, wechat, replay, metrics, log }: LoginDeps) {
  const apps = new Map(config.wechat.apps.map((a) => [a.appid, a]));
  const soleApp = config.wechat.apps.length === 1 ? config.wechat.apps[0]!.appid : undefined;

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

  /** Asks WeChat about a code this replica has the right to spend, and remembers the answer. */
  async function exchange(appid: string, code: string, key: string): Promise<LoginOutcome> {
    let answer;
    try {
      answer = await wechat.code2Session(appid, code);
    } catch (err) {
      if (!(err instanceof WechatError)) throw err;
      const error = loginErrorFor(err);
      log.warn(
        { appid, kind: err.kind, errcode: err.errcode, errmsg: err.errmsg, hint: err.errcode === undefined ? undefined : HINTS[err.errcode] },
        'WeChat refused the login',
      );
      // A final answer is remembered; after a timeout or an outage a retry may try WeChat again.
      if (FINAL.has(error)) await replay.fulfil(key, seal(appid, code, { error }), CODE_LIFETIME_MS).catch(() => {});
      else await replay.release(key).catch(() => {});
      return { error };
    }
    let token: string;
    try {
      ({ token } = await sessions.create({ appid, openid: answer.openid, unionid: answer.unionid }, answer.sessionKey));
    } catch (err) {
      await replay.release(key).catch(() => {});
      throw err;
    }
    await replay.fulfil(key, seal(appid, code, { token }), CODE_LIFETIME_MS).catch((err: Error) => {
      log.warn({ appid, err: err.message }, 'could not remember the login code; a retry with it will fail');
    });
    return { token };
  }

  /**
   * One WeChat call per code, however often and wherever it is presented within its life: concurrent
   * callers in this process share one promise; other replicas and later retries read the remembered answer.
   */
  async function resolveCode(appid: string, code: string, key: string): Promise<LoginOutcome> {
    const lockMs = config.wechat.timeout + 2000;
    const deadline = Date.now() + lockMs + 1000;
    for (;;) {
      const claim = await replay.claim(key, lockMs);
      if (claim === 'won') return exchange(appid, code, key);
      if (claim !== 'pending') return fromRemembered(appid, code, claim);
      metrics.loginReplays.inc({ source: 'pending' });
      let value: string | undefined = 'pending';
      while (value === 'pending' && Date.now() < deadline) {
        await sleep(40);
        value = await replay.peek(key);
      }
      if (value === 'pending') return { error: 'wechat_timeout' };
      if (value !== undefined) return fromRemembered(appid, code, value);
      // released after a passing failure elsewhere: try ourselves
    }
  }

  function fromRemembered(appid: string, code: string, sealed: string): LoginOutcome {
    metrics.loginReplays.inc({ source: 'store' });
    return unseal(appid, code, sealed) ?? { error: 'code_used' };
  }

  const inflight = new Map<string, Promise<LoginOutcome>>();

  async function login(ctx: Context): Promise<void> {
    let result: string = 'ok';
    try {
      const body = await readJsonObject(ctx, config.server.bodyLimit);
      const code = body.code;
      if (typeof code !== 'string' || code === '') {
        throw new GatewayError('invalid_request', { message: 'A "code" string from wx.login() is required.' });
      }
      if (!CODE.test(code)) {
        throw new GatewayError('invalid_request', { message: 'The "code" is not a wx.login() code (1-128 printable characters).' });
      }
      const appid = pickApp(body, ctx);
      const userData = userDataFields(body, false);
      const key = replayKey(appid, code);
      let pending = inflight.get(key);
      if (pending) metrics.loginReplays.inc({ source: 'inflight' });
      else {
        pending = resolveCode(appid, code, key).finally(() => inflight.delete(key));
        inflight.set(key, pending);
      }
      const outcome = await pending;
      if ('error' in outcome) {
        const error = outcome.error as ErrorCode;
        throw new GatewayError(error, error === 'wechat_rate_limited' ? { headers: { 'Retry-After': '1' } } : {});
      }
      // A remembered token may have been logged out since: then the code is spent.
      const session = await sessions.authenticate(outcome.token);
      if (!session) throw new GatewayError('code_used');
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

  async function current(ctx: Context) {
    const header = authorizationOf(ctx.req);
    const token = bearerToken(header);
    if (!token) throw unauthorized(header !== undefined);
    const session = await sessions.authenticate(token);
    if (!session) throw unauthorized(true);
    return { token, session };
  }

  /** The server side of wx.checkSession(): is this token still good, and for how long? */
  async function session(ctx: Context): Promise<void> {
    const { session } = await current(ctx);
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
    const hasBody = ctx.request.length > 0 || ctx.get('transfer-encoding') !== '';
    const body = hasBody ? await readJsonObject(ctx, config.server.bodyLimit) : {};
    if (body.all !== undefined && typeof body.all !== 'boolean') {
      throw new GatewayError('invalid_request', { message: '"all" must be true or false.' });
    }
    if (body.all === true) {
      const { session } = await current(ctx);
      const revoked = await sessions.revokeAll(session);
      log.info({ appid: session.appid, revoked }, 'logout of all sessions');
    } else {
      const header = authorizationOf(ctx.req);
      const token = bearerToken(header);
      if (!token) throw unauthorized(header !== undefined);
      await sessions.revoke(token);
    }
    ctx.status = 204;
  }

  return { login, session, logout, current };
}

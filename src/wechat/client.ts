import { createHmac } from 'node:crypto';
import type { WxacodeImage } from './transport.js';
import { SESSION_KEY_INVALID } from './errcodes.js';
import { WechatError, type CodeSession } from './types.js';
import { WechatWebApis } from './web-apis.js';

export type { WxacodeImage } from './transport.js';
export type { WechatClientOptions } from './web-apis.js';

/**
 * The only code that talks to WeChat: the mini-program APIs and the access_token APIs here, the web
 * and Official Account APIs in web-apis.ts, the HTTP exchange in transport.ts. One method per API; each
 * returns data or throws a WechatError (errcode, timeout, network, bad_response). Error messages carry
 * the API name, errcode, errmsg and error codes such as ECONNREFUSED, never the secret, the code, an
 * access_token or a session key. Nothing here retries: a login code may already be spent
 * (access-token.ts retries stable_token).
 */
export class WechatClient extends WechatWebApis {
  /** `sns/jscode2session`: a wx.login() code → openid, session_key and maybe unionid. Never retried. */
  async code2Session(appid: string, code: string): Promise<CodeSession> {
    const secret = this.secretOf(appid);
    const query = new URLSearchParams({ appid, secret, js_code: code, grant_type: 'authorization_code' });
    const data = await this.call('jscode2session', `/sns/jscode2session?${query}`, ['openid', 'session_key'], [secret, code]);
    const { openid, session_key: sessionKey, unionid } = data as { openid: string; session_key: string; unionid?: unknown };
    return { openid, sessionKey, ...(typeof unionid === 'string' && unionid !== '' ? { unionid } : {}) };
  }

  /**
   * `POST cgi-bin/stable_token`: the app's access_token. With forceRefresh false WeChat answers the
   * current token while it has more than 5 minutes left (idempotent, so callers may retry it).
   */
  async stableToken(appid: string, forceRefresh = false): Promise<AccessTokenAnswer> {
    const secret = this.secretOf(appid);
    const body = { grant_type: 'client_credential', appid, secret, force_refresh: forceRefresh };
    return tokenAnswer(await this.call('stable_token', '/cgi-bin/stable_token', ['access_token'], [secret], body), 'stable_token');
  }

  /** `GET cgi-bin/token`: a new access_token at every call (the previous one stays valid for 5 minutes). Never retried. */
  async token(appid: string): Promise<AccessTokenAnswer> {
    const secret = this.secretOf(appid);
    const query = new URLSearchParams({ grant_type: 'client_credential', appid, secret });
    return tokenAnswer(await this.call('token', `/cgi-bin/token?${query}`, ['access_token'], [secret]), 'token');
  }

  /**
   * `POST wxa/business/getuserphonenumber`: a getPhoneNumber button's code → the user's phone number.
   * With `openid`, WeChat checks that the code was made for that user. Never retried (the code is single-use).
   */
  async getPhoneNumber(accessToken: string, code: string, openid?: string): Promise<PhoneNumber> {
    const query = new URLSearchParams({ access_token: accessToken });
    const data = await this.call('getuserphonenumber', `/wxa/business/getuserphonenumber?${query}`, [], [accessToken, code], {
      code,
      ...(openid ? { openid } : {}),
    });
    const info = data.phone_info as Record<string, unknown> | undefined;
    const str = (v: unknown) => (typeof v === 'string' ? v : typeof v === 'number' && Number.isFinite(v) ? String(v) : undefined);
    const phoneNumber = str(info?.phoneNumber);
    const purePhoneNumber = str(info?.purePhoneNumber);
    const countryCode = str(info?.countryCode);
    if (!info || typeof info !== 'object' || !phoneNumber || !purePhoneNumber || !countryCode) {
      throw new WechatError('bad_response', 'getuserphonenumber', undefined, 'no phone_info in the answer');
    }
    return { phoneNumber, purePhoneNumber, countryCode };
  }

  /**
   * `GET wxa/checksession`: whether WeChat still takes `sessionKey` as the user's current session_key
   * (a later wx.login, or its expiry, replaces it). The key is never sent: only the login state signature,
   * hmac_sha256(key: session_key, message: ""), in hex. True for errcode 0, false for 87009 (invalid
   * signature: the key is no longer the user's); anything else throws. Safe to retry (it changes nothing).
   */
  async checkSessionKey(accessToken: string, openid: string, sessionKey: string): Promise<boolean> {
    const signature = loginStateSignature(sessionKey);
    const query = new URLSearchParams({ access_token: accessToken, openid, signature, sig_method: 'hmac_sha256' });
    try {
      await this.call('checksession', `/wxa/checksession?${query}`, [], [accessToken, signature, sessionKey]);
      return true;
    } catch (err) {
      if (err instanceof WechatError && err.errcode === SESSION_KEY_INVALID) return false;
      throw err;
    }
  }

  /**
   * `GET wxa/resetusersessionkey`: WeChat replaces the user's session_key (given as its signature, as for
   * checksession), so the old one stops working; answers the new one, which keeps the old one's expiry.
   * 87009 when `sessionKey` is not the user's current one. Never retried (WeChat limits resets per user).
   */
  async resetUserSessionKey(accessToken: string, openid: string, sessionKey: string): Promise<{ openid: string; sessionKey: string }> {
    const signature = loginStateSignature(sessionKey);
    const query = new URLSearchParams({ access_token: accessToken, openid, signature, sig_method: 'hmac_sha256' });
    const data = await this.call('resetusersessionkey', `/wxa/resetusersessionkey?${query}`, ['session_key'], [accessToken, signature, sessionKey]);
    if (data.openid !== undefined && data.openid !== openid) throw new WechatError('bad_response', 'resetusersessionkey', undefined, 'the answer is about another openid');
    return { openid, sessionKey: data.session_key as string };
  }

  /**
   * `POST wxa/getwxacodeunlimit`: a mini-program code image that opens `page` with `scene`. The parameters
   * are checked first (checkWxacodeParams; a bad one throws a plain Error, nothing is sent). WeChat answers
   * the image itself, or JSON with an errcode. Never retried.
   */
  async getwxacodeUnlimit(accessToken: string, params: WxacodeParams): Promise<WxacodeImage> {
    const problem = checkWxacodeParams(params);
    if (problem) throw new Error(`invalid wxacode parameters: ${problem}`);
    const query = new URLSearchParams({ access_token: accessToken });
    const body = {
      scene: params.scene,
      page: params.page,
      check_path: params.checkPath,
      env_version: params.envVersion,
      width: params.width,
    };
    const answer = await this.transport.exchange('getwxacodeunlimit', `/wxa/getwxacodeunlimit?${query}`, [], [accessToken], body, true);
    if (!answer.image) throw new WechatError('bad_response', 'getwxacodeunlimit', undefined, 'JSON without an image');
    return answer.image;
  }
}

/** An access_token as WeChat gave it: the token and its lifetime in seconds. */
export interface AccessTokenAnswer {
  accessToken: string;
  expiresIn: number;
}

export interface PhoneNumber {
  phoneNumber: string;
  purePhoneNumber: string;
  countryCode: string;
}

function tokenAnswer(data: Record<string, unknown>, api: string): AccessTokenAnswer {
  const expiresIn = Number(data.expires_in);
  if (!Number.isFinite(expiresIn) || expiresIn <= 0) throw new WechatError('bad_response', api, undefined, 'no expires_in in the answer');
  return { accessToken: data.access_token as string, expiresIn };
}

/**
 * WeChat's user login state signature for a GET (an empty body): hmac_sha256 keyed with the session_key
 * as it is given (the base64 text, not its bytes), hex.
 */
export function loginStateSignature(sessionKey: string, body = ''): string {
  return createHmac('sha256', sessionKey).update(body).digest('hex');
}

export interface WxacodeParams {
  /** 1 to 32 characters: digits, letters and !#$&'()*+,/:;=?@-._~ (no %). */
  scene: string;
  /** A page such as "pages/index/index": no leading "/", no query; the home page when left out. */
  page?: string;
  /** WeChat's default true: the page must exist in the released version. */
  checkPath?: boolean;
  envVersion?: 'release' | 'trial' | 'develop';
  /** Pixels, 280 to 1280 (WeChat's default 430). */
  width?: number;
}

const SCENE = /^[0-9A-Za-z!#$&'()*+,/:;=?@\-._~]{1,32}$/;
const ENV_VERSIONS = new Set(['release', 'trial', 'develop']);

/**
 * What is wrong with getwxacodeunlimit parameters as WeChat documents them, or undefined when nothing is:
 * scene 1 to 32 characters from its allowed set, page without a leading "/" or a query, env_version one
 * of release, trial, develop.
 */
export function checkWxacodeParams(p: { scene: unknown; page?: unknown; envVersion?: unknown }): string | undefined {
  if (typeof p.scene !== 'string' || p.scene.length === 0) return 'scene is required';
  if (p.scene.length > 32) return 'scene is longer than 32 characters';
  if (!SCENE.test(p.scene)) return "scene may only contain digits, letters and !#$&'()*+,/:;=?@-._~";
  if (p.page !== undefined) {
    if (typeof p.page !== 'string' || p.page === '') return 'page must be a non-empty string';
    if (p.page.startsWith('/')) return 'page must not start with "/"';
    if (/[?#]/.test(p.page)) return 'page must not carry a query (put it in scene)';
  }
  if (p.envVersion !== undefined && (typeof p.envVersion !== 'string' || !ENV_VERSIONS.has(p.envVersion))) {
    return 'envVersion must be release, trial or develop';
  }
  return undefined;
}

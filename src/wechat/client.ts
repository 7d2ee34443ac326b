import { createHmac } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { Metrics } from '../metrics/metrics.js';
import { WechatError, type CodeSession } from './types.js';

export interface WechatClientOptions {
  /** e.g. https://api.weixin.qq.com; a path prefix is kept, a trailing slash ignored. */
  apiBase: string;
  /** Whole-call deadline in ms: connect, answer and body. */
  timeout: number;
  apps: ReadonlyArray<{ appid: string; secret: string }>;
  metrics?: Metrics;
}

/** Largest JSON answer read; WeChat's are a few hundred bytes. */
const MAX_BODY = 64 * 1024;
/** Largest image answer read (wxacode images are some 10 to 300 KB). */
const MAX_IMAGE = 2 * 1024 * 1024;
const MAX_SOCKETS = 64;

/**
 * The only code that talks to WeChat. One method per API; each returns data or throws a WechatError
 * (errcode, timeout, network, bad_response). Error messages carry the API name, errcode, errmsg and
 * error codes such as ECONNREFUSED, never the secret, the code, an access_token or a session key.
 * Nothing here retries: a login code may already be spent (access-token.ts retries stable_token).
 */
export class WechatClient {
  private readonly base: URL;
  private readonly basePath: string;
  private readonly secrets: Map<string, string>;
  private readonly agent: http.Agent;
  private readonly transport: typeof http | typeof https;

  constructor(private readonly opts: WechatClientOptions) {
    this.base = new URL(opts.apiBase);
    this.basePath = this.base.pathname.replace(/\/+$/, '');
    this.secrets = new Map(opts.apps.map((a) => [a.appid, a.secret]));
    const tls = this.base.protocol === 'https:';
    this.transport = tls ? https : http;
    // Keep-alive: /login must not pay a TCP + TLS handshake per call. Idle sockets close after 30s,
    // before WeChat's (and the simulator's) servers drop them, so a request never meets a closing socket.
    const agentOpts = { keepAlive: true, maxSockets: MAX_SOCKETS, maxFreeSockets: MAX_SOCKETS, timeout: 30_000 };
    this.agent = tls ? new https.Agent(agentOpts) : new http.Agent(agentOpts);
  }

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
      if (err instanceof WechatError && err.errcode === 87009) return false;
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
   * `GET sns/oauth2/access_token`: the code of a web authorization (Official Account `connect/oauth2/authorize`
   * or website `connect/qrconnect`) → the user's openid and a user access_token. The app's secret comes from
   * `apps`. Never retried (the code is single-use).
   */
  async oauth2AccessToken(appid: string, code: string): Promise<OAuthAccessToken> {
    const secret = this.secretOf(appid);
    const query = new URLSearchParams({ appid, secret, code, grant_type: 'authorization_code' });
    const data = await this.call('oauth2_access_token', `/sns/oauth2/access_token?${query}`, ['openid', 'access_token'], [secret, code]);
    const expiresIn = Number(data.expires_in);
    if (!Number.isFinite(expiresIn) || expiresIn <= 0) {
      throw new WechatError('bad_response', 'oauth2_access_token', undefined, 'no expires_in in the answer');
    }
    const refreshToken = nonEmpty(data.refresh_token);
    const scope = nonEmpty(data.scope);
    const unionid = nonEmpty(data.unionid);
    return {
      openid: data.openid as string,
      accessToken: data.access_token as string,
      expiresIn,
      ...(refreshToken ? { refreshToken } : {}),
      ...(scope ? { scope } : {}),
      ...(unionid ? { unionid } : {}),
      ...(data.is_snapshotuser === 1 || data.is_snapshotuser === '1' ? { isSnapshotuser: true } : {}),
    };
  }

  /**
   * `GET sns/userinfo`: the profile of the user a `snsapi_userinfo` (or `snsapi_login`) access_token was
   * given for. An answer about another openid than the one asked for is a bad response.
   */
  async snsUserinfo(accessToken: string, openid: string, lang: SnsLang = 'zh_CN'): Promise<SnsUserinfo> {
    const query = new URLSearchParams({ access_token: accessToken, openid, lang });
    const data = await this.call('sns_userinfo', `/sns/userinfo?${query}`, ['openid'], [accessToken]);
    if (data.openid !== openid) throw new WechatError('bad_response', 'sns_userinfo', undefined, 'the answer is about another openid');
    const info: SnsUserinfo = { openid };
    for (const key of ['nickname', 'headimgurl', 'unionid', 'province', 'city', 'country'] as const) {
      const v = nonEmpty(data[key]);
      if (v) info[key] = v;
    }
    const sex = Number(data.sex);
    if (data.sex !== undefined && data.sex !== null && Number.isInteger(sex)) info.sex = sex;
    return info;
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
    const answer = await this.exchange('getwxacodeunlimit', `/wxa/getwxacodeunlimit?${query}`, [], [accessToken], body, true);
    if (!answer.image) throw new WechatError('bad_response', 'getwxacodeunlimit', undefined, 'JSON without an image');
    return answer.image;
  }

  /**
   * `POST cgi-bin/qrcode/create`: a temporary parametric QR code of an Official Account (QR_STR_SCENE,
   * `sceneStr` 1 to 64 characters, `expireSeconds` at most 30 days). WeChat answers the ticket (shown with
   * mp.weixin.qq.com/cgi-bin/showqrcode?ticket=…), its life and the URL the code encodes. Never retried.
   */
  async qrcodeCreate(accessToken: string, params: { sceneStr: string; expireSeconds: number }): Promise<MpQrcode> {
    if (params.sceneStr.length < 1 || params.sceneStr.length > 64) throw new Error('invalid qrcode parameters: scene_str must be 1 to 64 characters');
    const query = new URLSearchParams({ access_token: accessToken });
    const data = await this.call('qrcode_create', `/cgi-bin/qrcode/create?${query}`, ['ticket'], [accessToken], {
      expire_seconds: params.expireSeconds,
      action_name: 'QR_STR_SCENE',
      action_info: { scene: { scene_str: params.sceneStr } },
    });
    const expireSeconds = Number(data.expire_seconds);
    return {
      ticket: data.ticket as string,
      expireSeconds: Number.isFinite(expireSeconds) && expireSeconds > 0 ? expireSeconds : params.expireSeconds,
      ...(nonEmpty(data.url) ? { url: data.url as string } : {}),
    };
  }

  /**
   * `GET cgi-bin/user/info`: what the Official Account knows of one of its users (by openid): whether
   * they follow it and, when the account is bound to an Open Platform account, their unionid. Never retried.
   */
  async mpUserInfo(accessToken: string, openid: string): Promise<MpUserInfo> {
    const query = new URLSearchParams({ access_token: accessToken, openid, lang: 'zh_CN' });
    const data = await this.call('user_info', `/cgi-bin/user/info?${query}`, [], [accessToken]);
    if (data.openid !== undefined && data.openid !== openid) throw new WechatError('bad_response', 'user_info', undefined, 'the answer is about another openid');
    const unionid = nonEmpty(data.unionid);
    return { subscribed: data.subscribe === 1 || data.subscribe === '1', ...(unionid ? { unionid } : {}) };
  }

  close(): void {
    this.agent.destroy();
  }

  private secretOf(appid: string): string {
    const secret = this.secrets.get(appid);
    if (secret === undefined) throw new Error('unknown appid');
    return secret;
  }

  /**
   * GET a WeChat API path (or POST `json` to it); resolves with the JSON object when it has no (or a
   * zero) errcode and every `required` key as a non-empty string. `hidden` values are cut out of
   * WeChat's errmsg, should it ever echo them.
   */
  private async call(api: string, pathAndQuery: string, required: string[], hidden: string[], json?: object): Promise<Record<string, unknown>> {
    return (await this.exchange(api, pathAndQuery, required, hidden, json, false)).data!;
  }

  /**
   * call(), and with `acceptImage` an answer whose content type is image/* is read (up to MAX_IMAGE
   * bytes, checked to be a PNG, JPEG or GIF) and resolved as `image` instead of JSON.
   */
  private exchange(
    api: string,
    pathAndQuery: string,
    required: string[],
    hidden: string[],
    json: object | undefined,
    acceptImage: boolean,
  ): Promise<{ data?: Record<string, unknown>; image?: WxacodeImage }> {
    const payload = json === undefined ? undefined : Buffer.from(JSON.stringify(json));
    const started = process.hrtime.bigint();
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (kind: 'timeout' | 'network' | 'bad_response', detail: string) =>
        finish(kind, new WechatError(kind, api, undefined, detail));
      const finish = (outcome: string, err?: WechatError, answer?: { data?: Record<string, unknown>; image?: WxacodeImage }) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.opts.metrics?.wechatRequests.inc({ api, outcome });
        this.opts.metrics?.wechatDuration.observe({ api }, Number(process.hrtime.bigint() - started) / 1e9);
        if (err) reject(err);
        else resolve(answer!);
      };

      const accept = acceptImage ? 'image/*, application/json' : 'application/json';
      const req = this.transport.request({
        protocol: this.base.protocol,
        hostname: this.base.hostname,
        port: this.base.port || undefined,
        path: this.basePath + pathAndQuery,
        method: payload ? 'POST' : 'GET',
        agent: this.agent,
        headers: payload
          ? { accept, 'content-type': 'application/json', 'content-length': payload.length }
          : { accept },
      });
      const timer = setTimeout(() => {
        fail('timeout', `no answer within ${this.opts.timeout}ms`);
        req.destroy();
      }, this.opts.timeout);
      // Only the error code (ECONNREFUSED, ENOTFOUND, ...): Node's messages may name the request.
      req.on('error', (err: NodeJS.ErrnoException) => fail('network', err.code ?? 'request failed'));

      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        if (status < 200 || status > 299) {
          res.resume();
          return fail('bad_response', `HTTP ${status}`);
        }
        const contentType = String(res.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
        const isImage = acceptImage && contentType.startsWith('image/');
        const limit = isImage ? MAX_IMAGE : MAX_BODY;
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > limit) {
            fail('bad_response', `answer larger than ${limit} bytes`);
            req.destroy();
          } else chunks.push(c);
        });
        res.on('error', (err: NodeJS.ErrnoException) => fail('network', err.code ?? 'answer cut off'));
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          if (isImage) {
            if (!looksLikeImage(body)) return fail('bad_response', `${contentType} answer is not a PNG, JPEG or GIF`);
            return finish('ok', undefined, { image: { contentType, body } });
          }
          let data: unknown;
          try {
            data = JSON.parse(body.toString('utf8'));
          } catch {
            return fail('bad_response', 'answer is not JSON');
          }
          if (!data || typeof data !== 'object' || Array.isArray(data)) return fail('bad_response', 'answer is not a JSON object');
          const obj = data as Record<string, unknown>;
          if (obj.errcode !== undefined && obj.errcode !== 0 && obj.errcode !== '0') {
            const errcode = Number(obj.errcode);
            if (!Number.isInteger(errcode)) return fail('bad_response', 'errcode is not a number');
            const errmsg = typeof obj.errmsg === 'string' ? redact(obj.errmsg, hidden).slice(0, 200) : undefined;
            return finish(`errcode_${errcode}`, new WechatError('errcode', api, errcode, errmsg));
          }
          const missing = required.filter((k) => typeof obj[k] !== 'string' || obj[k] === '');
          if (missing.length) return fail('bad_response', `no ${missing.join(', ')} in the answer`);
          finish('ok', undefined, { data: obj });
        });
      });
      req.end(payload);
    });
  }
}

/** An Official Account's user (cgi-bin/user/info), as far as the gateway needs it. */
export interface MpUserInfo {
  subscribed: boolean;
  /** when the Official Account is bound to an Open Platform account */
  unionid?: string;
}

/** A temporary Official Account QR code (cgi-bin/qrcode/create). */
export interface MpQrcode {
  /** what showqrcode takes, and what the subscribe / SCAN event carries as Ticket */
  ticket: string;
  expireSeconds: number;
  /** the text the QR code encodes (http://weixin.qq.com/q/…) */
  url?: string;
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

/** WeChat's errmsg without any of the given values (the secret, the code); values under 4 characters are no secret. */
function redact(text: string, hidden: string[]): string {
  for (const h of hidden) if (h.length >= 4) text = text.split(h).join('***');
  return text;
}

/** What `sns/oauth2/access_token` gives for a web authorization code. */
export interface OAuthAccessToken {
  openid: string;
  /** A user access_token, only good for sns/userinfo and sns/auth (not the app's access_token). */
  accessToken: string;
  expiresIn: number;
  refreshToken?: string;
  /** The scope(s) the user granted, e.g. "snsapi_base", "snsapi_userinfo", "snsapi_login". */
  scope?: string;
  /** WeChat documents it for snsapi_userinfo (and website apps) when the app is bound to an Open Platform account. */
  unionid?: string;
  /** True for the virtual user of WeChat's "snapshot page" mode: not a real person's openid. */
  isSnapshotuser?: boolean;
}

export type SnsLang = 'zh_CN' | 'zh_TW' | 'en';

/** What `sns/userinfo` gives; WeChat answers sex 0 and empty places since 2021, left out here when empty. */
export interface SnsUserinfo {
  openid: string;
  nickname?: string;
  headimgurl?: string;
  unionid?: string;
  sex?: number;
  province?: string;
  city?: string;
  country?: string;
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

/** An image as WeChat answered it. */
export interface WxacodeImage {
  /** e.g. "image/jpeg" or "image/png", without parameters */
  contentType: string;
  body: Buffer;
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

function nonEmpty(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** PNG, JPEG or GIF magic bytes. */
function looksLikeImage(b: Buffer): boolean {
  if (b.length >= 8 && b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) return true;
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return true;
  return b.length >= 6 && (b.subarray(0, 6).toString('latin1') === 'GIF87a' || b.subarray(0, 6).toString('latin1') === 'GIF89a');
}

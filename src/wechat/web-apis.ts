import type { Metrics } from '../metrics/metrics.js';
import { WechatTransport } from './transport.js';
import { WechatError } from './types.js';

export interface WechatClientOptions {
  /** e.g. https://api.weixin.qq.com; a path prefix is kept, a trailing slash ignored. */
  apiBase: string;
  /** Whole-call deadline in ms: connect, answer and body. */
  timeout: number;
  apps: ReadonlyArray<{ appid: string; secret: string }>;
  metrics?: Metrics;
}

/**
 * The part of WechatClient (client.ts) that the browser logins use: the web authorization (OAuth) and
 * Official Account APIs, and what every API shares (the apps' secrets, the transport). One method per
 * API; each returns data or throws a WechatError. Nothing here retries.
 */
export class WechatWebApis {
  protected readonly transport: WechatTransport;
  private readonly secrets: Map<string, string>;

  constructor(opts: WechatClientOptions) {
    this.transport = new WechatTransport(opts);
    this.secrets = new Map(opts.apps.map((a) => [a.appid, a.secret]));
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
    this.transport.close();
  }

  protected secretOf(appid: string): string {
    const secret = this.secrets.get(appid);
    if (secret === undefined) throw new Error('unknown appid');
    return secret;
  }

  /**
   * GET a WeChat API path (or POST `json` to it); resolves with the JSON object when it has no (or a
   * zero) errcode and every `required` key as a non-empty string. `hidden` values are cut out of
   * WeChat's errmsg, should it ever echo them.
   */
  protected async call(api: string, pathAndQuery: string, required: string[], hidden: string[], json?: object): Promise<Record<string, unknown>> {
    return (await this.transport.exchange(api, pathAndQuery, required, hidden, json)).data!;
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

function nonEmpty(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

import { createHash, randomBytes } from 'node:crypto';
import type http from 'node:http';
import { readJson } from './read-body.js';
import { answers, exchangeError, failCode, router } from './simulator-http.js';
import { simulatedOpenid, simulatedUnionid } from './simulator-ids.js';
import { wxacodePng } from './simulator-png.js';
import { createAuthPages, type Grant } from './simulator-web-pages.js';

/**
 * The simulator's web-login APIs (dev only, like the whole simulator):
 *
 * Pages for a browser (open.weixin.qq.com at WeChat; the `#wechat_redirect` fragment never reaches a server):
 *   GET /connect/oauth2/authorize?appid&redirect_uri&response_type=code&scope&state   (Official Account)
 *        scope snsapi_base or snsapi_userinfo; state at most 128 bytes.
 *   GET /connect/qrconnect?appid&redirect_uri&response_type=code&scope=snsapi_login&state   (website app)
 *        Both answer an HTML page with a user name (default "webuser") and "Approve as <user>" / "Deny"
 *        buttons; bad parameters (unknown appid, bad scope, no redirect_uri, ...) an HTML error page, 400.
 *   GET /connect/approve?<the same parameters>&flow=oauth2|qrconnect&user=<name>[&deny=1]
 *        What the page submits, also callable directly by tests (flow defaults to qrconnect for scope
 *        snsapi_login, oauth2 otherwise; the same checks apply): 302 to `redirect_uri?code=CODE&state=STATE`
 *        (denied: `redirect_uri?state=STATE`, as the website flow does). Codes are single use, live
 *        5 minutes (10 for the website login) and belong to the appid. With login_type=jssdk (the
 *        embedded QR in an iframe) the page sends the top window back, unless self_redirect=true.
 * APIs (api.weixin.qq.com), JSON as WeChat answers it:
 *   GET /sns/oauth2/access_token?appid&secret&code&grant_type=authorization_code
 *        → { access_token, expires_in: 7200, refresh_token, openid, scope, unionid?, is_snapshotuser? }
 *        41002/41004/41008 missing appid/secret/code, 40002 grant_type, 40013 appid, 40125 secret,
 *        40029 unknown or expired code (or another app's), 40163 a code used before; code "fail-<errcode>"
 *        answers that errcode.
 *   GET /sns/oauth2/refresh_token?appid&grant_type=refresh_token&refresh_token → a new access_token (40030 bad token)
 *   GET /sns/userinfo?access_token&openid&lang → { openid, nickname, sex, province, city, country, headimgurl,
 *        privilege, unionid? }; 41001/40001/42001 token missing/invalid/expired, 40003 another openid,
 *        48001 a token of scope snsapi_base.
 *   GET /sns/auth?access_token&openid → { errcode: 0, errmsg: "ok" } while the token is good.
 *   POST /wxa/getwxacodeunlimit?access_token=…  { scene, page?, check_path?, env_version?, width? }
 *        → a real PNG (image/png), black and white modules drawn from the scene; the app's access_token is
 *        checked like getuserphonenumber's (41001, 40001). 40169 scene missing or longer than 32 (or a body
 *        that is not JSON), 40129 a scene character WeChat does not allow, 41030 a page with a leading "/"
 *        or a query, 40097 a bad env_version / check_path / width; scene "fail-<errcode>" answers that errcode.
 * Users: "union*" get a unionid, the same as a mini-program user of that name (simulatedUnionid), and with
 * scope snsapi_userinfo or snsapi_login only, as WeChat documents for the access_token answer; "snapshot*"
 * are snapshot-page virtual users (is_snapshotuser: 1).
 */
export interface WebApiOptions {
  /** appid → secret; when given, other appids are refused and wrong secrets get 40125. */
  apps?: Record<string, string>;
  /** The app access_token check of simulator-token.ts (for getwxacodeunlimit). */
  checkToken(token: string | null | undefined): { appid: string } | { errcode: number };
  /** Clock, ms (tests). */
  now?: () => number;
}

const TOKEN_LIFE_S = 7200;
const REFRESH_LIFE = 30 * 24 * 3600 * 1000;
/** Expired tokens are remembered this long more, to answer 42001 rather than 40001. */
const EXPIRED_MEMORY = 3600 * 1000;
const STORE_MAX = 100_000;
const BODY_LIMIT = 16 * 1024;
const SCENE = /^[0-9A-Za-z!#$&'()*+,/:;=?@\-._~]*$/;

export function createWebApis(opts: WebApiOptions) {
  const now = opts.now ?? Date.now;
  /** code → the grant, its deadline and whether it was exchanged */
  const codes = new Map<string, Grant & { expiresAt: number; used: boolean }>();
  /** user access_token → grant and deadline */
  const tokens = new Map<string, Grant & { expiresAt: number }>();
  /** refresh_token → grant and deadline */
  const refreshTokens = new Map<string, Grant & { expiresAt: number }>();
  const { json, error } = answers('simw');

  /** Drops entries past their deadline (plus `grace`), and the oldest beyond STORE_MAX. Insertion order is time order. */
  function sweep<V extends { expiresAt: number }>(map: Map<string, V>, t: number, grace = 0): void {
    for (const [k, v] of map) {
      if (v.expiresAt + grace > t && map.size < STORE_MAX) break;
      map.delete(k);
    }
  }

  const appKnown = (appid: string) => !opts.apps || Object.hasOwn(opts.apps, appid);
  const pages = createAuthPages(appKnown, (code, grant, life) => {
    const t = now();
    sweep(codes, t);
    codes.set(code, { ...grant, expiresAt: t + life, used: false });
  });

  // ---- sns APIs ----

  function newToken(grant: Grant, t: number): { accessToken: string } {
    sweep(tokens, t, EXPIRED_MEMORY);
    const accessToken = `simsns_${randomBytes(24).toString('base64url')}`;
    tokens.set(accessToken, { ...grant, expiresAt: t + TOKEN_LIFE_S * 1000 });
    return { accessToken };
  }

  function tokenAnswer(grant: Grant, accessToken: string, refreshToken: string): object {
    const unionid = grant.user.startsWith('union') && profileScope(grant.scope);
    return {
      access_token: accessToken,
      expires_in: TOKEN_LIFE_S,
      refresh_token: refreshToken,
      openid: simulatedOpenid(grant.appid, grant.user),
      scope: grant.scope,
      ...(unionid ? { unionid: simulatedUnionid(grant.user) } : {}),
      ...(grant.user.startsWith('snapshot') ? { is_snapshotuser: 1 } : {}),
    };
  }

  function accessToken(q: URLSearchParams, res: http.ServerResponse): void {
    if (q.get('grant_type') !== 'authorization_code') return error(res, 40002);
    const refused = exchangeError(opts.apps, q, 'code');
    if (refused !== undefined) return error(res, refused);
    const appid = q.get('appid')!;
    const code = q.get('code')!;
    const t = now();
    const grant = codes.get(code);
    if (!grant || grant.appid !== appid || grant.expiresAt <= t) return error(res, 40029);
    if (grant.used) return error(res, 40163);
    grant.used = true;
    sweep(refreshTokens, t);
    const refreshToken = `simsnsr_${randomBytes(24).toString('base64url')}`;
    const g: Grant = { appid, user: grant.user, scope: grant.scope };
    refreshTokens.set(refreshToken, { ...g, expiresAt: t + REFRESH_LIFE });
    json(res, tokenAnswer(g, newToken(g, t).accessToken, refreshToken));
  }

  function refresh(q: URLSearchParams, res: http.ServerResponse): void {
    const appid = q.get('appid');
    const refreshToken = q.get('refresh_token');
    if (!appid) return error(res, 41002);
    if (q.get('grant_type') !== 'refresh_token') return error(res, 40002);
    if (!refreshToken) return error(res, 41003);
    if (!appKnown(appid)) return error(res, 40013);
    const t = now();
    const grant = refreshTokens.get(refreshToken);
    if (!grant || grant.appid !== appid || grant.expiresAt <= t) return error(res, 40030);
    const g: Grant = { appid, user: grant.user, scope: grant.scope };
    json(res, tokenAnswer(g, newToken(g, t).accessToken, refreshToken));
  }

  /** The grant of a user access_token for `openid`, or the errcode. */
  function userToken(q: URLSearchParams): Grant | number {
    const token = q.get('access_token');
    const openid = q.get('openid');
    if (!token) return 41001;
    if (!openid) return 41009;
    const grant = tokens.get(token);
    if (!grant) return 40001;
    if (grant.expiresAt <= now()) return 42001;
    if (simulatedOpenid(grant.appid, grant.user) !== openid) return 40003;
    return grant;
  }

  function userinfo(q: URLSearchParams, res: http.ServerResponse): void {
    const grant = userToken(q);
    if (typeof grant === 'number') return error(res, grant);
    if (!profileScope(grant.scope)) return error(res, 48001);
    const face = createHash('sha256').update(`face:${grant.user}`).digest('base64url').slice(0, 32);
    json(res, {
      openid: simulatedOpenid(grant.appid, grant.user),
      nickname: grant.user,
      // Since October 2021 WeChat answers sex 0 and empty places.
      sex: 0,
      language: '',
      city: '',
      province: '',
      country: '',
      headimgurl: `https://thirdwx.qlogo.cn/mmopen/sim/${face}/132`,
      privilege: [],
      ...(grant.user.startsWith('union') ? { unionid: simulatedUnionid(grant.user) } : {}),
      ...(grant.user.startsWith('snapshot') ? { is_snapshotuser: 1 } : {}),
    });
  }

  function auth(q: URLSearchParams, res: http.ServerResponse): void {
    const grant = userToken(q);
    if (typeof grant === 'number') return error(res, grant);
    json(res, { errcode: 0, errmsg: 'ok' });
  }

  // ---- getwxacodeunlimit ----

  function wxacode(req: http.IncomingMessage, res: http.ServerResponse, q: URLSearchParams): void {
    const jsonError = (errcode: number) => error(res, errcode, 'application/json; encoding=utf-8');
    readJson(req, BODY_LIMIT, (b) => {
      const app = opts.checkToken(q.get('access_token'));
      if ('errcode' in app) return jsonError(app.errcode);
      if (!b) return jsonError(40169);
      const scene = b.scene;
      if (typeof scene !== 'string' || scene.length === 0 || scene.length > 32) return jsonError(40169);
      if (!SCENE.test(scene)) return jsonError(40129);
      const fail = failCode(scene);
      if (fail !== undefined) return jsonError(fail);
      if (b.page !== undefined && (typeof b.page !== 'string' || b.page.startsWith('/') || /[?#]/.test(b.page))) return jsonError(41030);
      if (b.check_path !== undefined && typeof b.check_path !== 'boolean') return jsonError(40097);
      if (b.env_version !== undefined && !['release', 'trial', 'develop'].includes(b.env_version as string)) return jsonError(40097);
      if (b.width !== undefined && (typeof b.width !== 'number' || !Number.isFinite(b.width))) return jsonError(40097);
      // WeChat draws codes 280 to 1280 px wide, whatever was asked.
      const width = Math.round(Math.min(1280, Math.max(280, typeof b.width === 'number' ? b.width : 430)));
      const png = wxacodePng(`${app.appid}:${typeof b.page === 'string' ? b.page : ''}:${scene}`, width);
      res.writeHead(200, { 'content-type': 'image/png', 'content-length': png.length });
      res.end(png);
    });
  }

  return {
    /** Answers the request when it is one of these APIs or pages; false otherwise. */
    handle: router({
      'GET /connect/oauth2/authorize': pages.authorize,
      'GET /connect/qrconnect': pages.qrconnect,
      'GET /connect/approve': pages.approve,
      'GET /sns/oauth2/access_token': (_req, res, q) => accessToken(q, res),
      'GET /sns/oauth2/refresh_token': (_req, res, q) => refresh(q, res),
      'GET /sns/userinfo': (_req, res, q) => userinfo(q, res),
      'GET /sns/auth': (_req, res, q) => auth(q, res),
      'POST /wxa/getwxacodeunlimit': wxacode,
    }),
  };
}

/** Whether a scope lets the app read the profile (sns/userinfo) and see the unionid in the access_token answer. */
const profileScope = (scope: string) => scope.split(',').some((s) => s === 'snsapi_userinfo' || s === 'snsapi_login');

import { createHash, randomBytes } from 'node:crypto';
import type http from 'node:http';
import { deflateSync } from 'node:zlib';
import { simulatedOpenid, simulatedUnionid } from './simulator-ids.js';
import { readBody } from './read-body.js';

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

const ERRMSG: Record<number, string> = {
  [-1]: 'system error',
  40001: 'invalid credential, access_token is invalid or not latest',
  40002: 'invalid grant_type',
  40003: 'invalid openid',
  40013: 'invalid appid',
  40029: 'invalid code',
  40030: 'invalid refresh_token',
  40097: 'invalid args',
  40125: 'invalid appsecret',
  40129: 'invalid scene',
  40163: 'code been used',
  40169: 'invalid length for scene, or the data is not json string',
  41001: 'access_token missing',
  41002: 'appid missing',
  41003: 'refresh_token missing',
  41004: 'appsecret missing',
  41008: 'missing code',
  41009: 'missing openid',
  41030: 'invalid page',
  42001: 'access_token expired',
  45009: 'reach max api daily quota limit',
  48001: 'api unauthorized',
};

/** As WeChat: an Official Account OAuth code lives 5 minutes, a website login (qrconnect) code 10. */
const CODE_LIFE = { oauth2: 5 * 60 * 1000, qrconnect: 10 * 60 * 1000 };
const TOKEN_LIFE_S = 7200;
const REFRESH_LIFE = 30 * 24 * 3600 * 1000;
/** Expired tokens are remembered this long more, to answer 42001 rather than 40001. */
const EXPIRED_MEMORY = 3600 * 1000;
const STORE_MAX = 100_000;
const BODY_LIMIT = 16 * 1024;
const USER = /^[A-Za-z0-9_-]{1,64}$/;
const SCENE = /^[0-9A-Za-z!#$&'()*+,/:;=?@\-._~]*$/;
const OA_SCOPES = new Set(['snsapi_base', 'snsapi_userinfo', 'snsapi_privateinfo']);

interface Grant {
  appid: string;
  user: string;
  scope: string;
}

export function createWebApis(opts: WebApiOptions) {
  const now = opts.now ?? Date.now;
  /** code → the grant, its deadline and whether it was exchanged */
  const codes = new Map<string, Grant & { expiresAt: number; used: boolean }>();
  /** user access_token → grant and deadline */
  const tokens = new Map<string, Grant & { expiresAt: number }>();
  /** refresh_token → grant and deadline */
  const refreshTokens = new Map<string, Grant & { expiresAt: number }>();
  let rid = 0;

  function json(res: http.ServerResponse, body: object): void {
    const text = JSON.stringify(body);
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }
  function error(res: http.ServerResponse, errcode: number, contentType = 'text/plain'): void {
    const text = JSON.stringify({ errcode, errmsg: `${ERRMSG[errcode] ?? 'simulated error'}, rid: simw-${(++rid).toString(16)}` });
    res.writeHead(200, { 'content-type': contentType, 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  /** Drops entries past their deadline (plus `grace`), and the oldest beyond STORE_MAX. Insertion order is time order. */
  function sweep<V extends { expiresAt: number }>(map: Map<string, V>, t: number, grace = 0): void {
    for (const [k, v] of map) {
      if (v.expiresAt + grace > t && map.size < STORE_MAX) break;
      map.delete(k);
    }
  }

  const secretOk = (appid: string, secret: string) => !opts.apps || opts.apps[appid] === secret;
  const appKnown = (appid: string) => !opts.apps || Object.hasOwn(opts.apps, appid);

  // ---- browser pages ----

  interface AuthRequest {
    appid: string;
    redirect: URL;
    scope: string;
    state: string;
    website: boolean;
  }

  /** The authorize parameters, or what is wrong with them (as WeChat's error page would say). */
  function authRequest(q: URLSearchParams, website: boolean): AuthRequest | { code?: number; message: string } {
    const appid = q.get('appid') ?? '';
    const redirectUri = q.get('redirect_uri') ?? '';
    const scope = q.get('scope') ?? '';
    const state = q.get('state') ?? '';
    if (appid === '') return { code: 10012, message: 'appid is empty' };
    if (!appKnown(appid)) return { code: 40013, message: 'invalid appid' };
    if (redirectUri === '') return { code: 10011, message: 'redirect_uri is empty' };
    let redirect: URL;
    try {
      redirect = new URL(redirectUri);
    } catch {
      return { code: 10003, message: 'redirect_uri is not an absolute URL' };
    }
    if (redirect.protocol !== 'http:' && redirect.protocol !== 'https:') return { code: 10003, message: 'redirect_uri must be http(s)' };
    if (q.get('response_type') !== 'code') return { message: 'response_type must be code' };
    if (scope === '') return { code: 10010, message: 'scope is empty' };
    const scopes = scope.split(',');
    if (website ? scopes.length !== 1 || scopes[0] !== 'snsapi_login' : !scopes.every((s) => OA_SCOPES.has(s))) {
      return { code: 10005, message: `this app has no permission for scope ${scope}` };
    }
    if (!website && Buffer.byteLength(state) > 128) return { message: 'state is longer than 128 bytes' };
    return { appid, redirect, scope, state, website };
  }

  function html(res: http.ServerResponse, status: number, title: string, body: string): void {
    const page = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<meta name="viewport" content="width=device-width,initial-scale=1"></head><body>${body}</body></html>`;
    res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(page), 'cache-control': 'no-store' });
    res.end(page);
  }
  function errorPage(res: http.ServerResponse, problem: { code?: number; message: string }): void {
    html(res, 400, 'Authorization error', `<h1>Authorization error</h1>
<p id="error">${problem.code !== undefined ? `<code>${problem.code}</code> ` : ''}${esc(problem.message)}</p>`);
  }

  function authorizePage(q: URLSearchParams, website: boolean, res: http.ServerResponse): void {
    const r = authRequest(q, website);
    if (!('redirect' in r)) return errorPage(res, r);
    const user = q.get('user') ?? 'webuser';
    // the embedded QR (wxLogin.js: login_type=jssdk) in an iframe sends the top window back, unless self_redirect=true
    const topWindow = website && q.get('login_type') === 'jssdk' && q.get('self_redirect') !== 'true';
    const hidden = (['appid', 'redirect_uri', 'response_type', 'scope', 'state'] as const)
      .map((k) => `<input type="hidden" name="${k}" value="${esc(q.get(k) ?? '')}">`)
      .join('') + `<input type="hidden" name="flow" value="${website ? 'qrconnect' : 'oauth2'}">`;
    html(res, 200, website ? 'WeChat website login (simulator)' : 'WeChat authorization (simulator)', `
<h1>${website ? 'Log in with WeChat' : 'Authorize'} (WeChat simulator)</h1>
<p><code id="appid">${esc(r.appid)}</code> asks for <code id="scope">${esc(r.scope)}</code>.</p>
<form id="approve" method="get" action="/connect/approve"${topWindow ? ' target="_top"' : ''}>${hidden}
<label>User <input id="user" name="user" value="${esc(USER.test(user) ? user : 'webuser')}" pattern="[A-Za-z0-9_\\-]{1,64}" required
 oninput="document.getElementById('who').textContent=this.value"></label>
<button id="approve-button" type="submit">Approve as <span id="who">${esc(USER.test(user) ? user : 'webuser')}</span></button>
<button id="deny-button" type="submit" name="deny" value="1" formnovalidate>Deny</button>
</form>`);
  }

  function approve(q: URLSearchParams, res: http.ServerResponse): void {
    const flow = q.get('flow');
    const r = authRequest(q, flow ? flow === 'qrconnect' : (q.get('scope') ?? '') === 'snsapi_login');
    if (!('redirect' in r)) return errorPage(res, r);
    const target = new URL(r.redirect);
    if (q.get('deny') !== '1') {
      const user = q.get('user') ?? 'webuser';
      if (!USER.test(user)) return errorPage(res, { message: 'user must be 1 to 64 letters, digits, "_" or "-"' });
      const t = now();
      sweep(codes, t);
      const code = randomBytes(16).toString('base64url');
      codes.set(code, { appid: r.appid, user, scope: r.scope, expiresAt: t + CODE_LIFE[r.scope === 'snsapi_login' ? 'qrconnect' : 'oauth2'], used: false });
      target.searchParams.set('code', code);
    }
    target.searchParams.set('state', r.state);
    res.writeHead(302, { location: target.href, 'content-length': 0, 'cache-control': 'no-store' });
    res.end();
  }

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
    const appid = q.get('appid');
    const secret = q.get('secret');
    const code = q.get('code');
    if (!appid) return error(res, 41002);
    if (!secret) return error(res, 41004);
    if (!code) return error(res, 41008);
    if (q.get('grant_type') !== 'authorization_code') return error(res, 40002);
    if (!appKnown(appid)) return error(res, 40013);
    if (!secretOk(appid, secret)) return error(res, 40125);
    const fail = /^fail-(-?\d+)$/.exec(code);
    if (fail) return error(res, Number(fail[1]));
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

  function wxacode(req: http.IncomingMessage, q: URLSearchParams, res: http.ServerResponse): void {
    const jsonError = (errcode: number) => error(res, errcode, 'application/json; encoding=utf-8');
    readBody(req, BODY_LIMIT, (raw, tooLarge) => {
      const app = opts.checkToken(q.get('access_token'));
      if ('errcode' in app) return jsonError(app.errcode);
      let body: unknown;
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch {
        return jsonError(40169);
      }
      if (tooLarge || !body || typeof body !== 'object' || Array.isArray(body)) return jsonError(40169);
      const b = body as Record<string, unknown>;
      const scene = b.scene;
      if (typeof scene !== 'string' || scene.length === 0 || scene.length > 32) return jsonError(40169);
      if (!SCENE.test(scene)) return jsonError(40129);
      const fail = /^fail-(-?\d+)$/.exec(scene);
      if (fail) return jsonError(Number(fail[1]));
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

  /** Answers the request when it is one of these APIs or pages; false otherwise. */
  function handle(req: http.IncomingMessage, res: http.ServerResponse, url: URL): boolean {
    const q = url.searchParams;
    switch (`${req.method} ${url.pathname}`) {
      case 'GET /connect/oauth2/authorize':
        authorizePage(q, false, res);
        return true;
      case 'GET /connect/qrconnect':
        authorizePage(q, true, res);
        return true;
      case 'GET /connect/approve':
        approve(q, res);
        return true;
      case 'GET /sns/oauth2/access_token':
        accessToken(q, res);
        return true;
      case 'GET /sns/oauth2/refresh_token':
        refresh(q, res);
        return true;
      case 'GET /sns/userinfo':
        userinfo(q, res);
        return true;
      case 'GET /sns/auth':
        auth(q, res);
        return true;
      case 'POST /wxa/getwxacodeunlimit':
        wxacode(req, q, res);
        return true;
      default:
        return false;
    }
  }
  return { handle };
}

/** Whether a scope lets the app read the profile (sns/userinfo) and see the unionid in the access_token answer. */
const profileScope = (scope: string) => scope.split(',').some((s) => s === 'snsapi_userinfo' || s === 'snsapi_login');

function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// ---- PNG ----

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 as PNG (and zlib) compute it. */
export function crc32(data: Buffer): number {
  let c = 0xffffffff;
  for (const byte of data) c = CRC_TABLE[(c ^ byte) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

/**
 * A `size`×`size` 8-bit greyscale PNG: a white quiet zone around 29×29 black and white modules drawn
 * from the SHA-256 of `seed`, with three finder squares in the corners (a QR look; it does not scan).
 */
export function wxacodePng(seed: string, size: number): Buffer {
  const N = 29;
  const bits: boolean[] = [];
  for (let i = 0; bits.length < N * N; i++) {
    for (const byte of createHash('sha256').update(`${i}:${seed}`).digest()) {
      for (let b = 7; b >= 0; b--) bits.push(((byte >> b) & 1) === 1);
    }
  }
  const finder = (x: number, y: number): boolean | undefined => {
    for (const [ox, oy] of [[0, 0], [N - 7, 0], [0, N - 7]] as const) {
      const dx = x - ox;
      const dy = y - oy;
      if (dx >= -1 && dx <= 7 && dy >= -1 && dy <= 7) {
        if (dx < 0 || dy < 0 || dx > 6 || dy > 6) return false;
        const ring = Math.min(dx, dy, 6 - dx, 6 - dy);
        return ring !== 1;
      }
    }
    return undefined;
  };
  const quiet = Math.max(4, Math.floor(size / 16));
  const cell = (size - 2 * quiet) / N;
  const raw = Buffer.alloc((size + 1) * size, 0xff);
  for (let y = 0; y < size; y++) {
    const row = y * (size + 1);
    raw[row] = 0; // filter: none
    const my = Math.floor((y - quiet) / cell);
    if (my < 0 || my >= N) continue;
    for (let x = 0; x < size; x++) {
      const mx = Math.floor((x - quiet) / cell);
      if (mx < 0 || mx >= N) continue;
      const dark = finder(mx, my) ?? bits[my * N + mx]!;
      if (dark) raw[row + 1 + x] = 0;
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 0; // greyscale
  ihdr[10] = 0; // deflate
  ihdr[11] = 0; // adaptive filtering
  ihdr[12] = 0; // no interlace
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

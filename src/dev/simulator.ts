import { createHash, createHmac, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { answers, exchangeError } from './simulator-http.js';
import { devEncrypt } from './simulator-encrypt.js';
import { simulatedOpenid, simulatedUnionid } from './simulator-ids.js';
import { createTokenApis } from './simulator-token.js';
import { createMpQrApis, type MpPushOptions } from './simulator-mpqr.js';
import { createWebApis } from './simulator-web.js';

/**
 * A WeChat API simulator for development and tests (never for production). It answers like WeChat:
 * HTTP 200 with JSON (content-type text/plain, as WeChat does), errors as `{ errcode, errmsg }`.
 *
 * `GET /sns/jscode2session` is deterministic. The user is the part of the code before the first "."
 * (`alice.1` and `alice.2` are two logins of alice; `alice` alone is alice too). Codes are single-use
 * per appid for 5 minutes (40163 the second time), as at WeChat. Users whose name starts with "union"
 * also get a unionid, the same in every app. Codes that ask for trouble:
 *   fail-<errcode>      that errcode, every time (fail-40029, fail-45011, fail-45009, fail-40226, fail--1, ...)
 *   slow-<ms>[.x]       answers normally after <ms> (at most 60000)
 *   html                a 502 HTML error page
 *   garbage             200 with a body that is not JSON
 *   nojson-openid       200 JSON without openid
 *
 * `POST /dev/encrypt` (not a WeChat API) makes open data (encryptedData, iv, rawData, signature) with a
 * user's session_key from here: see simulator-encrypt.ts.
 *
 * `GET /wxa/checksession` and `GET /wxa/resetusersessionkey` check (and replace) a user's latest
 * session_key here by its login state signature.
 *
 * `POST /cgi-bin/stable_token`, `GET /cgi-bin/token` and `POST /wxa/business/getuserphonenumber`
 * (codes "phone-<digits>", "fail-<errcode>"): see simulator-token.ts.
 *
 * Web logins, see simulator-web.ts: the browser pages `GET /connect/oauth2/authorize` (Official Account,
 * snsapi_base / snsapi_userinfo) and `GET /connect/qrconnect` (website app, snsapi_login) with an
 * "Approve as <user>" button that submits `GET /connect/approve` (tests may call it directly: 302 to
 * redirect_uri?code&state); `GET /sns/oauth2/access_token`, `/sns/oauth2/refresh_token`, `/sns/userinfo`,
 * `/sns/auth`; and `POST /wxa/getwxacodeunlimit` (a real PNG; the access_token from cgi-bin/*). A web user
 * "union*" has the same unionid as the mini-program user of that name.
 *
 * Official Account follow-QR login, see simulator-mpqr.ts: `POST /cgi-bin/qrcode/create`, `GET
 * /cgi-bin/showqrcode`, and the phone's side `GET /dev/mp/scan` / `GET /dev/mp/follow`, which push the
 * signed (and, per `mp.encrypt`, encrypted) subscribe / SCAN event to the gateway's server URL.
 */
export const SIMULATOR_CODES = `Codes: any "<user>.<n>" logs <user> in (single use; users "union*" get a unionid);
  fail-<errcode> (fail-40029, fail-45011, fail-45009, fail-40226, fail--1), slow-<ms>, html, garbage, nojson-openid.
  Web logins: /connect/oauth2/authorize and /connect/qrconnect show an "Approve as <user>" page.`;

export interface SimulatorOptions {
  /** appid → secret. When given, other appids get 40013 and wrong secrets 40125; otherwise all are accepted. */
  apps?: Record<string, string>;
  /** Added to every answer, ms. */
  latencyMs?: number;
  /** Lifetime of the access_tokens it issues (cgi-bin/stable_token, cgi-bin/token), seconds; default 7200. */
  tokenExpiresIn?: number;
  /** The Official Account whose follow events /dev/mp/follow pushes, and where to (web.mpQr). */
  mp?: MpPushOptions;
}

const USED_CODE_LIFE = 5 * 60 * 1000;
const USED_CODES_MAX = 100_000;
const SLOW_MAX = 60_000;

const sha256 = (text: string) => createHash('sha256').update(text).digest();

export { simulatedOpenid, simulatedUnionid };

/** The session_key the simulator gives the login with `code` in `appid` (a new one per code: WeChat may rotate it at a login; the simulator always does). */
export function simulatedSessionKey(appid: string, code: string): string {
  return sha256(`session_key:${appid}:${code}`).subarray(0, 16).toString('base64');
}

/** The user a code logs in: the part before the first ".", or the whole code. */
export function simulatedUser(code: string): string {
  const dot = code.indexOf('.');
  return dot === -1 ? code : code.slice(0, dot);
}

/** A WeChat-like API server, not yet listening. Logs nothing. */
export function createSimulator(opts: SimulatorOptions = {}): http.Server {
  /** "appid:code" → when first used; insertion order is time order, so the oldest are in front. */
  const used = new Map<string, number>();
  /** "appid:openid" → the session_key of the user's latest login here (for POST /dev/encrypt) */
  const latestKeys = new Map<string, string>();
  /** access_token APIs and getuserphonenumber: see simulator-token.ts */
  const tokenApis = createTokenApis({ apps: opts.apps, tokenExpiresIn: opts.tokenExpiresIn });
  /** OAuth pages, sns/* and getwxacodeunlimit: see simulator-web.ts */
  const webApis = createWebApis({ apps: opts.apps, checkToken: tokenApis.checkToken });
  /** qrcode/create, showqrcode and the follow page: see simulator-mpqr.ts */
  const mpQrApis = createMpQrApis({ checkToken: tokenApis.checkToken, push: opts.mp });

  const { json, error } = answers('sim');

  /** True the first time a code is seen (per appid) within USED_CODE_LIFE. */
  function firstUse(appid: string, code: string, now: number): boolean {
    for (const [k, at] of used) {
      if (now - at < USED_CODE_LIFE && used.size < USED_CODES_MAX) break;
      used.delete(k);
    }
    const key = `${appid}:${code}`;
    if (used.has(key)) return false;
    used.set(key, now);
    return true;
  }

  function jscode2session(q: URLSearchParams, res: http.ServerResponse): void {
    const refused = exchangeError(opts.apps, q, 'js_code', true);
    if (refused !== undefined) return error(res, refused);
    const appid = q.get('appid')!;
    const code = q.get('js_code')!;
    if (code === 'html') {
      res.writeHead(502, { 'content-type': 'text/html' });
      res.end('<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>');
      return;
    }
    if (code === 'garbage') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('{"openid": "o-broken');
      return;
    }
    if (code === 'nojson-openid') return json(res, {});
    if (!firstUse(appid, code, Date.now())) return error(res, 40163);

    const user = simulatedUser(code);
    // WeChat may rotate session_key at a login; the simulator always does (the harder case): derived from the code, not the user.
    const sessionKey = simulatedSessionKey(appid, code);
    const openid = simulatedOpenid(appid, user);
    latestKeys.delete(`${appid}:${openid}`);
    if (latestKeys.size >= USED_CODES_MAX) latestKeys.delete(latestKeys.keys().next().value!);
    latestKeys.set(`${appid}:${openid}`, sessionKey);
    json(res, {
      session_key: sessionKey,
      openid,
      ...(user.startsWith('union') ? { unionid: simulatedUnionid(user) } : {}),
    });
  }

  /**
   * `GET /wxa/checksession` and `GET /wxa/resetusersessionkey` (access_token, openid, signature =
   * hmac_sha256 keyed with the session_key over "", sig_method=hmac_sha256): 87009 unless the signature is
   * made with the user's latest session_key here; 87008 for another sig_method. A reset gives the user a
   * new random key, so the old one stops working, as at WeChat.
   */
  function sessionKeyApi(q: URLSearchParams, res: http.ServerResponse, reset: boolean): void {
    const entry = tokenApis.checkToken(q.get('access_token'));
    if ('errcode' in entry) return error(res, entry.errcode);
    const openid = q.get('openid');
    if (!openid) return error(res, 40003);
    if (q.get('sig_method') !== 'hmac_sha256') return error(res, 87008);
    const key = latestKeys.get(`${entry.appid}:${openid}`);
    const expected = key === undefined ? undefined : createHmac('sha256', key).update('').digest('hex');
    if (expected === undefined || q.get('signature') !== expected) return error(res, 87009);
    if (!reset) return json(res, { errcode: 0, errmsg: 'ok' });
    const fresh = randomBytes(16).toString('base64');
    latestKeys.set(`${entry.appid}:${openid}`, fresh);
    json(res, { errcode: 0, errmsg: 'ok', openid, session_key: fresh });
  }

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://simulator');
    const answer = () => {
      if (req.method === 'GET' && url.pathname === '/sns/jscode2session') return jscode2session(url.searchParams, res);
      if (req.method === 'GET' && url.pathname === '/wxa/checksession') return sessionKeyApi(url.searchParams, res, false);
      if (req.method === 'GET' && url.pathname === '/wxa/resetusersessionkey') return sessionKeyApi(url.searchParams, res, true);
      if (req.method === 'POST' && url.pathname === '/dev/encrypt') {
        return devEncrypt(req, res, { apps: opts.apps, latestKeys, sessionKeyOf: simulatedSessionKey, openidOf: simulatedOpenid });
      }
      if (tokenApis.handle(req, res, url)) return;
      if (webApis.handle(req, res, url)) return;
      if (mpQrApis.handle(req, res, url)) return;
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errcode: -1, errmsg: `the simulator does not know ${req.method} ${url.pathname}` }));
    };
    const slow = /^slow-(\d+)/.exec(url.searchParams.get('js_code') ?? '');
    const delay = (opts.latencyMs ?? 0) + (slow ? Math.min(Number(slow[1]), SLOW_MAX) : 0);
    if (delay > 0) {
      const t = setTimeout(answer, delay);
      res.on('close', () => clearTimeout(t));
    } else answer();
  });
  // Longer than the client's idle-socket timeout (30s), so the client always closes idle sockets first.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  return server;
}

/** Starts the simulator on host:port (port 0: any free port). */
export async function startSimulator(
  port: number,
  host = '127.0.0.1',
  opts: SimulatorOptions = {},
): Promise<{ server: http.Server; url: string; close(): Promise<void> }> {
  const server = createSimulator(opts);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port: actual } = server.address() as AddressInfo;
  return {
    server,
    url: `http://${host.includes(':') ? `[${host}]` : host}:${actual}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

import { randomBytes } from 'node:crypto';
import type http from 'node:http';
import { simulatedOpenid } from './simulator-ids.js';
import { readBody } from './read-body.js';

/**
 * The simulator's access_token APIs and the one API here that takes a token (dev only, like the whole
 * simulator):
 *   POST /cgi-bin/stable_token  { grant_type, appid, secret, force_refresh? }  → { access_token, expires_in }
 *        Normal mode answers the current token while more than min(5 min, half its life) is left, then a
 *        new one; force_refresh makes a new one at once (the old one keeps working for 5 more minutes).
 *   GET  /cgi-bin/token?grant_type=client_credential&appid&secret  → a new token at every call (the
 *        previous one keeps working for 5 more minutes).
 *   POST /wxa/business/getuserphonenumber?access_token=…  { code, openid? }
 *        → { errcode: 0, errmsg: "ok", phone_info: { phoneNumber, purePhoneNumber, countryCode, watermark } }
 *        An unknown or expired token is 40001. Codes: "phone-<digits>" gives that number (+86); with
 *        "@<user>" after it ("phone-13800138000@alice") the code belongs to that user, and an `openid` of
 *        another user is 40029; "fail-<errcode>" answers that errcode; anything else is 40029. Single-use.
 * Dev-only helpers (not WeChat APIs):
 *   GET  /dev/token-stats                → { stable_token, stable_token_forced, token }: fetches so far
 *   GET  /dev/phone-stats                → { calls, numbers }: getuserphonenumber calls so far, and how many
 *                                          of them gave a number (the calls WeChat charges for)
 *   POST /dev/revoke-tokens?appid=…      every token of the app stops working (40001) at once
 */
export interface TokenApiOptions {
  /** appid → secret; when given, other appids get 40013 and wrong secrets 40125. */
  apps?: Record<string, string>;
  /** Lifetime of the tokens issued, seconds (WeChat: 7200). */
  tokenExpiresIn?: number;
}

const ERRMSG: Record<number, string> = {
  [-1]: 'system error',
  40001: 'invalid credential, access_token is invalid or not latest',
  40002: 'invalid grant_type',
  40013: 'invalid appid',
  40029: 'invalid code',
  40125: 'invalid appsecret',
  41001: 'access_token missing',
  41002: 'appid missing',
  41004: 'appsecret missing',
  41008: 'missing code',
  45011: 'api minute-quota reach limit  mustslower  retry next minute',
  47001: 'data format error',
};

const OLD_TOKEN_GRACE = 5 * 60 * 1000;
const BODY_LIMIT = 16 * 1024;

export function createTokenApis(opts: TokenApiOptions) {
  const life = (opts.tokenExpiresIn ?? 7200) * 1000;
  /** token → its app and deadline */
  const tokens = new Map<string, { appid: string; expiresAt: number }>();
  /** "mode:appid" → the token that mode handed out last */
  const current = new Map<string, string>();
  const stats = { stable_token: 0, stable_token_forced: 0, token: 0 };
  const phoneStats = { calls: 0, numbers: 0 };
  const usedCodes = new Set<string>();
  let rid = 0;

  function json(res: http.ServerResponse, body: object): void {
    const text = JSON.stringify(body);
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }
  const error = (res: http.ServerResponse, errcode: number) =>
    json(res, { errcode, errmsg: `${ERRMSG[errcode] ?? 'simulated error'}, rid: simt-${(++rid).toString(16)}` });

  function sweep(now: number): void {
    for (const [t, v] of tokens) if (v.expiresAt <= now) tokens.delete(t);
  }

  /** Checks appid and secret; answers the error and returns false when they are not good. */
  function credentials(res: http.ServerResponse, appid: unknown, secret: unknown): appid is string {
    if (typeof appid !== 'string' || appid === '') return error(res, 41002), false;
    if (typeof secret !== 'string' || secret === '') return error(res, 41004), false;
    if (opts.apps) {
      if (!Object.hasOwn(opts.apps, appid)) return error(res, 40013), false;
      if (opts.apps[appid] !== secret) return error(res, 40125), false;
    }
    return true;
  }

  function issue(mode: string, appid: string, now: number): string {
    const key = `${mode}:${appid}`;
    const old = current.get(key);
    const oldEntry = old === undefined ? undefined : tokens.get(old);
    if (oldEntry) oldEntry.expiresAt = Math.min(oldEntry.expiresAt, now + OLD_TOKEN_GRACE);
    const token = `simtok_${randomBytes(24).toString('base64url')}`;
    tokens.set(token, { appid, expiresAt: now + life });
    current.set(key, token);
    return token;
  }

  const expiresIn = (token: string, now: number) => Math.max(1, Math.round((tokens.get(token)!.expiresAt - now) / 1000));

  function stableToken(body: Record<string, unknown>, res: http.ServerResponse): void {
    if (body.grant_type !== 'client_credential') return error(res, 40002);
    if (!credentials(res, body.appid, body.secret)) return;
    const now = Date.now();
    sweep(now);
    const appid = body.appid as string;
    const force = body.force_refresh === true;
    stats.stable_token++;
    if (force) stats.stable_token_forced++;
    let token = current.get(`stable:${appid}`);
    const entry = token === undefined ? undefined : tokens.get(token);
    const renewAt = Math.min(OLD_TOKEN_GRACE, life / 2);
    if (force || !entry || entry.expiresAt - now <= renewAt) token = issue('stable', appid, now);
    json(res, { access_token: token, expires_in: expiresIn(token!, now) });
  }

  function plainToken(q: URLSearchParams, res: http.ServerResponse): void {
    if (q.get('grant_type') !== 'client_credential') return error(res, 40002);
    if (!credentials(res, q.get('appid') ?? '', q.get('secret') ?? '')) return;
    const now = Date.now();
    sweep(now);
    stats.token++;
    const token = issue('token', q.get('appid')!, now);
    json(res, { access_token: token, expires_in: expiresIn(token, now) });
  }

  /**
   * The app an access_token from here belongs to, or the errcode WeChat answers for it: 41001 when
   * missing, 40001 when unknown, revoked or expired. (Other simulator APIs that take a token use it too.)
   */
  function checkToken(token: string | null | undefined): { appid: string } | { errcode: 41001 | 40001 } {
    if (!token) return { errcode: 41001 };
    const entry = tokens.get(token);
    if (!entry || entry.expiresAt <= Date.now()) return { errcode: 40001 };
    return { appid: entry.appid };
  }

  function phoneNumber(q: URLSearchParams, body: Record<string, unknown>, res: http.ServerResponse): void {
    phoneStats.calls++;
    const entry = checkToken(q.get('access_token'));
    if ('errcode' in entry) return error(res, entry.errcode);
    const code = body.code;
    if (typeof code !== 'string' || code === '') return error(res, 41008);
    const fail = /^fail-(-?\d+)$/.exec(code);
    if (fail) return error(res, Number(fail[1]));
    const m = /^phone-(\d{5,15})(?:@(.+))?$/.exec(code);
    if (!m) return error(res, 40029);
    if (m[2] !== undefined && body.openid !== undefined && body.openid !== simulatedOpenid(entry.appid, m[2])) return error(res, 40029);
    const key = `${entry.appid}:${code}`;
    if (usedCodes.has(key)) return error(res, 40029);
    if (usedCodes.size >= 100_000) usedCodes.clear();
    usedCodes.add(key);
    phoneStats.numbers++;
    json(res, {
      errcode: 0,
      errmsg: 'ok',
      phone_info: {
        phoneNumber: m[1],
        purePhoneNumber: m[1],
        countryCode: '86',
        watermark: { timestamp: Math.floor(Date.now() / 1000), appid: entry.appid },
      },
    });
  }

  function readJson(req: http.IncomingMessage, res: http.ServerResponse, then: (body: Record<string, unknown>) => void): void {
    readBody(req, BODY_LIMIT, (raw, tooLarge) => {
      let body: unknown;
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch {
        return error(res, 47001);
      }
      if (tooLarge || !body || typeof body !== 'object' || Array.isArray(body)) return error(res, 47001);
      then(body as Record<string, unknown>);
    });
  }

  /** Answers the request when it is one of these APIs; false otherwise. */
  function handle(req: http.IncomingMessage, res: http.ServerResponse, url: URL): boolean {
    const route = `${req.method} ${url.pathname}`;
    switch (route) {
      case 'POST /cgi-bin/stable_token':
        readJson(req, res, (body) => stableToken(body, res));
        return true;
      case 'GET /cgi-bin/token':
        plainToken(url.searchParams, res);
        return true;
      case 'POST /wxa/business/getuserphonenumber':
        readJson(req, res, (body) => phoneNumber(url.searchParams, body, res));
        return true;
      case 'GET /dev/token-stats':
        json(res, stats);
        return true;
      case 'GET /dev/phone-stats':
        json(res, phoneStats);
        return true;
      case 'POST /dev/revoke-tokens': {
        const appid = url.searchParams.get('appid');
        let revoked = 0;
        for (const [t, v] of tokens) {
          if (v.appid === appid) {
            tokens.delete(t);
            revoked++;
          }
        }
        json(res, { revoked });
        return true;
      }
      default:
        return false;
    }
  }
  return { handle, checkToken };
}

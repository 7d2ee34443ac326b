import { randomBytes } from 'node:crypto';
import type http from 'node:http';
import { readJson } from './read-body.js';
import { answers, appError, failCode, router } from './simulator-http.js';
import { simulatedOpenid } from './simulator-ids.js';

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
  const { json, error } = answers('simt');

  function sweep(now: number): void {
    for (const [t, v] of tokens) if (v.expiresAt <= now) tokens.delete(t);
  }

  /** Checks appid and secret; answers the error and returns false when they are not good. */
  function credentials(res: http.ServerResponse, appid: unknown, secret: unknown): appid is string {
    const refused = appError(opts.apps, appid, secret);
    if (refused !== undefined) error(res, refused);
    return refused === undefined;
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
    const fail = failCode(code);
    if (fail !== undefined) return error(res, fail);
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

  /** The JSON body of a POST, or 47001 when it is not a JSON object. */
  const withJson = (then: (body: Record<string, unknown>, res: http.ServerResponse, q: URLSearchParams) => void) => (req: http.IncomingMessage, res: http.ServerResponse, q: URLSearchParams) =>
    readJson(req, BODY_LIMIT, (body) => (body ? then(body, res, q) : error(res, 47001)));

  function revoke(q: URLSearchParams, res: http.ServerResponse): void {
    const appid = q.get('appid');
    let revoked = 0;
    for (const [t, v] of tokens) {
      if (v.appid === appid) {
        tokens.delete(t);
        revoked++;
      }
    }
    json(res, { revoked });
  }

  /** Answers the request when it is one of these APIs; false otherwise. */
  const handle = router({
    'POST /cgi-bin/stable_token': withJson((body, res) => stableToken(body, res)),
    'GET /cgi-bin/token': (_req, res, q) => plainToken(q, res),
    'POST /wxa/business/getuserphonenumber': withJson((body, res, q) => phoneNumber(q, body, res)),
    'GET /dev/token-stats': (_req, res) => json(res, stats),
    'GET /dev/phone-stats': (_req, res) => json(res, phoneStats),
    'POST /dev/revoke-tokens': (_req, res, q) => revoke(q, res),
  });
  return { handle, checkToken };
}

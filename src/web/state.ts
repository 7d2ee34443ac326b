import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** The web login flows that carry an OAuth state. */
export type Provider = 'mp' | 'open';

/** A state: nonce, expiry and mac as fixed-width lower-case hex (72 characters). */
const STATE = /^[0-9a-f]{72}$/;

/**
 * The OAuth `state` of a web login: 72 hex digits, within WeChat's documented `[A-Za-z0-9]`, at most 128
 * bytes: a 128-bit nonce (32), the expiry in Unix seconds (8), and a 128-bit mac (32), an HMAC over the
 * flow, the nonce, the expiry and the redirect target. The browser that started the login holds the
 * nonce's secret (the nonce is a hash of it) and the redirect in the state cookie, so a state is good only
 *   - in that browser (the cookie's secret must give the state's nonce: no login CSRF, no state from
 *     elsewhere, and a leaked state does not tell how to make its cookie),
 *   - until its expiry (web.loginTimeout), for that flow, and with the redirect the gateway approved,
 *   - for one authorization code (the caller marks it used, see oauth.ts).
 */
export class OAuthStates {
  constructor(
    private readonly key: () => Promise<Buffer>,
    private readonly ttlMs: number,
  ) {}

  private async mac(provider: Provider, nonce: string, exp: string, redirect: string): Promise<string> {
    return createHmac('sha256', await this.key())
      .update(`wxgate-oauth-state\n${provider}\n${nonce}\n${exp}\n${redirect}`)
      .digest('hex')
      .slice(0, 32);
  }

  /** A new state for a login that will end at `redirect`, and the state cookie's value that goes with it. */
  async issue(provider: Provider, redirect: string, now = Date.now()): Promise<{ state: string; cookie: string }> {
    const secret = randomBytes(16).toString('base64url');
    const nonce = nonceOf(secret);
    const exp = Math.ceil((now + this.ttlMs) / 1000).toString(16).padStart(8, '0');
    const state = `${nonce}${exp}${await this.mac(provider, nonce, exp, redirect)}`;
    return { state, cookie: `${secret}.${Buffer.from(redirect).toString('base64url')}` };
  }

  /** The nonce and redirect of a good state; undefined when forged, expired, of another flow, or not this browser's. */
  async verify(provider: Provider, state: unknown, cookie: string | undefined, now = Date.now()): Promise<{ nonce: string; redirect: string } | undefined> {
    if (typeof state !== 'string' || !STATE.test(state) || cookie === undefined || cookie.length > 4096) return undefined;
    const nonce = state.slice(0, 32);
    const exp = state.slice(32, 40);
    const mac = state.slice(40);
    const dot = cookie.indexOf('.');
    if (dot < 0) return undefined;
    // the cookie holds the secret the nonce is made from: a state (which travels in URLs, and may leak
    // with a code through a Referer or a log) does not tell how to make the cookie that goes with it
    if (!same(nonceOf(cookie.slice(0, dot)), nonce)) return undefined;
    const redirect = Buffer.from(cookie.slice(dot + 1), 'base64url').toString('utf8');
    if (!same(mac, await this.mac(provider, nonce, exp, redirect))) return undefined;
    if (parseInt(exp, 16) * 1000 <= now) return undefined;
    return { nonce, redirect };
  }
}

/** The public nonce of a state cookie's secret (32 hex digits). */
function nonceOf(secret: string): string {
  return createHash('sha256').update(`wxgate-oauth-nonce\n${secret}`).digest('hex').slice(0, 32);
}

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * Where a login may send the browser afterwards (no open redirects): a path on the gateway's own origin
 * under one of the allowed path prefixes, or a URL on one of the allowed origins. The target is parsed
 * as a browser would (WHATWG URL against publicUrl: dot segments resolved, `%2e` included), and the
 * decision is made on the result: a local path that resolves to `//host` or `/\host` (`/.//evil`,
 * `/x/..//evil`, `/%2e//evil`) is refused, whatever the prefix rules say, and so is anything with
 * control characters or backslashes (which the parser strips or turns into `/`), credentials,
 * or another scheme. Last, what is returned is parsed once more against publicUrl: it must land on the
 * origin it was approved for. Returns the target to put in Location, or undefined. The one check for
 * every `redirect` the gateway takes.
 */
export function allowedRedirect(target: unknown, rules: ReadonlyArray<string>, publicUrl: string): string | undefined {
  if (typeof target !== 'string' || target === '' || target.length > 2048) return undefined;
  if (/[\u0000-\u001f\u007f-\u009f\\]/.test(target)) return undefined;
  let url: URL;
  try {
    url = new URL(target, publicUrl);
  } catch {
    return undefined;
  }
  if (url.username || url.password || (url.protocol !== 'https:' && url.protocol !== 'http:')) return undefined;
  const home = new URL(publicUrl).origin;
  // a path of this origin, as typed: "/x", never "//x" (a host)
  const local = target.startsWith('/') && !target.startsWith('//');
  let out: string | undefined;
  let origin: string | undefined;
  for (const rule of rules) {
    if (rule.startsWith('/')) {
      if (!local || url.origin !== home || /^\/[/\\]/.test(url.pathname)) continue;
      const prefix = rule === '/' ? '/' : rule.replace(/\/$/, '');
      if (prefix === '/' || url.pathname === prefix || url.pathname.startsWith(`${prefix}/`)) {
        out = url.pathname + url.search + url.hash;
        origin = home;
        break;
      }
    } else if (!local && url.origin === rule.replace(/\/$/, '')) {
      out = url.href;
      origin = url.origin;
      break;
    }
  }
  if (out === undefined) return undefined;
  // what the browser will make of the Location: the origin it was approved for, nothing else
  let seen: URL;
  try {
    seen = new URL(out, publicUrl);
  } catch {
    return undefined;
  }
  return seen.origin === origin && seen.href === url.href ? out : undefined;
}

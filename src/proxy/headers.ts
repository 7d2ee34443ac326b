import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { Identity } from '../session/types.js';
import { setCookieName } from '../request/cookies.js';

/**
 * What the header steps do to a proxied request's own headers (admission/steps.ts runs them, in order,
 * before the proxy sends them on), and the one step of the response's headers.
 */

/** Hop-by-hop headers (RFC 9110 7.6.1) plus ones the gateway answers itself (Expect). */
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'proxy-authenticate', 'expect'];
const RESPONSE_HOP_BY_HOP = new Set(HOP_BY_HOP);
/** DROPPED_LENGTHS[n] is 1 when a response header name of n characters may be dropped (responseHeaders). */
const DROPPED_LENGTHS = new Uint8Array(32);
for (const h of [...HOP_BY_HOP, 'transfer-encoding', 'set-cookie']) DROPPED_LENGTHS[h.length] = 1;
/** Never dropped because a Connection header named them: they frame the body. */
const FRAMING = new Set(['content-length', 'transfer-encoding', 'host']);

/**
 * Drops hop-by-hop headers and every header the Connection header names.
 *
 * Dropped by setting them to undefined, never by `delete`: every sender skips an undefined value (the
 * upstream client's requestHead, undici for WebSocket upgrades), and one `delete` on the headers object
 * turns it into a slow dictionary for every step after: 15% more CPU per proxied request, measured
 * (BENCHMARKS.md, "Two deletes, the token's hash"). Most clients send `Connection: keep-alive`, so
 * this is the common case.
 */
export function dropHopByHop(headers: IncomingHttpHeaders): void {
  const connection = headers.connection;
  if (connection) {
    for (const name of connection.split(',')) {
      const n = name.trim().toLowerCase();
      if (n && !FRAMING.has(n) && headers[n] !== undefined) headers[n] = undefined;
    }
  }
  for (const h of HOP_BY_HOP) if (headers[h] !== undefined) headers[h] = undefined;
}

/**
 * The headers the gateway sets to say who the user is (lower case, as node names them). The one list:
 * every client-sent header of these names is removed before the gateway sets its own. A new identity
 * header is added here and nowhere else.
 */
export const IDENTITY_HEADERS = ['x-openid', 'x-unionid', 'x-appid', 'x-wx-phone', 'x-user-id'] as const;
/** The identity headers' names without their "-" (`xopenid`): `X-Open-Id`, `XOpenid` fold onto these. */
const IDENTITY_FOLDED = new Set<string>(IDENTITY_HEADERS.map((h) => h.replace(/-/g, '')));
let minFolded = Infinity;
let maxFolded = 0;
for (const f of IDENTITY_FOLDED) {
  minFolded = Math.min(minFolded, f.length);
  maxFolded = Math.max(maxFolded, f.length);
}

/**
 * Headers that tell an upstream where a request came from or what it asked for before a proxy: Spring,
 * ASP.NET, Rails, Django, Symfony and forward-auth setups build URLs, redirects and decisions from them.
 * From a peer outside server.trustedProxies every one is removed (with every `x-forwarded-*` and
 * `x-original-*` name, below); the gateway then sets its own X-Forwarded-For/-Proto/-Host.
 */
const FORWARDING = new Set([
  'forwarded',
  'x-forwarded',
  'x-real-ip',
  'x-client-ip',
  'client-ip',
  'true-client-ip',
  'cf-connecting-ip',
  'fastly-client-ip',
  'x-cluster-client-ip',
  'x-originating-ip',
  'x-remote-ip',
  'x-remote-addr',
  'x-host',
  'x-scheme',
  'x-url-scheme',
  'front-end-https',
  'x-arr-ssl',
]);
/**
 * Headers that name another request target than the request line's (IIS/Symfony `X-Original-URL`,
 * `X-Rewrite-URL`): the gateway matched its route and `auth` on the request line, so an upstream that
 * took its path from these would serve a path the gateway never authorized. Removed from every peer,
 * trusted proxies included.
 */
const TARGET_OVERRIDE = new Set(['x-original-url', 'x-rewrite-url']);

/**
 * Removes every client-sent identity header in any spelling, and every header whose name has a
 * character outside `[A-Za-z0-9-]`, before anything else is done with the request.
 *
 * Names with other characters (HTTP allows `_ . ~ ! # $ % & ' * + ^ \` |`) are dropped whatever they
 * are, as nginx's default `ignore_invalid_headers` does and Envoy does for underscores: upstreams fold
 * them onto real names (CGI/WSGI/PHP turn `X_Openid` and `X-Openid` alike into HTTP_X_OPENID,
 * oauth2-proxy's CVE-2025-64484; some frameworks fold `.` and `~`, the Traefik CVE-2026-33433 class),
 * and that holds for forwarding headers (`X_Forwarded_For`) as much as for identity ones. Of the plain
 * names left, any that equals an identity header once its "-" are ignored (`X-Openid`, `XOpenid`,
 * `X-Open-Id`: camelCasing header maps folds those) goes too. Node lower-cases names, so case is no
 * spelling.
 *
 * Cheap in the common case: one char-code loop per name, no regex, no allocation; a header dropped is
 * set to undefined, never deleted (dropHopByHop says why); the folded compare (a Set lookup, a
 * string made only for a name with "-" in it) runs only for names whose length without "-" is that of
 * an identity header.
 */
export function stripIdentity(headers: IncomingHttpHeaders): void {
  // the forwarding headers are left to the caller (stripClientHeaders); TARGET_OVERRIDE goes here too
  stripClientHeaders(headers, true);
}

/**
 * stripIdentity's step and, in the same pass, the forwarding headers: TARGET_OVERRIDE from every peer;
 * FORWARDING, `x-forwarded-*` and `x-original-*` unless `trusted` (the peer is in server.trustedProxies,
 * whose X-Forwarded-* and Forwarded are believed and passed on).
 */
export function stripClientHeaders(headers: IncomingHttpHeaders, trusted: boolean): void {
  for (const name of Object.keys(headers)) {
    let dashes = 0;
    let plain = true;
    for (let i = 0; i < name.length; i++) {
      const c = name.charCodeAt(i);
      if (c === 45) dashes++;
      // a-z, 0-9 (node lower-cases names, so A-Z never appears)
      else if (!((c >= 97 && c <= 122) || (c >= 48 && c <= 57))) {
        plain = false;
        break;
      }
    }
    if (!plain) {
      headers[name] = undefined;
      continue;
    }
    if (TARGET_OVERRIDE.has(name) || (!trusted && (FORWARDING.has(name) || name.startsWith('x-forwarded-') || name.startsWith('x-original-')))) {
      headers[name] = undefined;
      continue;
    }
    const len = name.length - dashes;
    if (len < minFolded || len > maxFolded) continue;
    if (IDENTITY_FOLDED.has(dashes === 0 ? name : name.replace(/-/g, ''))) headers[name] = undefined;
  }
}

/** The gateway's token is for the gateway only (set to undefined, not deleted: dropHopByHop says why). */
export function stripCredentials(headers: IncomingHttpHeaders): void {
  if (headers.authorization !== undefined) headers.authorization = undefined;
}

export type TrustFn = (addr: string, index: number) => boolean;

/** Whether the request's peer (the socket's remote address) is one of server.trustedProxies. */
export function peerTrusted(req: IncomingMessage, trust: TrustFn): boolean {
  const peer = req.socket.remoteAddress;
  return peer !== undefined && peer !== '' && trust(peer, 0);
}

/**
 * X-Forwarded-For / -Proto / -Host the usual way. A client's own values are believed only when the
 * peer is a configured trusted proxy (`trusted`, from peerTrusted): then X-Forwarded-For is appended
 * to, and -Proto and -Host kept when present. Otherwise they are the gateway's own, and the client's
 * other forwarding headers were removed by stripClientHeaders.
 */
export function setForwarded(req: IncomingMessage, trusted: boolean): void {
  const headers = req.headers;
  const peer = req.socket.remoteAddress ?? '';
  const proto = (req.socket as TLSSocket).encrypted ? 'https' : 'http';
  if (trusted) {
    const xff = headers['x-forwarded-for'];
    headers['x-forwarded-for'] = xff ? `${xff}, ${peer}` : peer;
    headers['x-forwarded-proto'] ??= proto;
    if (headers['x-forwarded-host'] === undefined && headers.host) headers['x-forwarded-host'] = headers.host;
  } else {
    if (headers.forwarded !== undefined) headers.forwarded = undefined;
    if (headers['x-real-ip'] !== undefined) headers['x-real-ip'] = undefined;
    headers['x-forwarded-for'] = peer;
    headers['x-forwarded-proto'] = proto;
    if (headers.host) headers['x-forwarded-host'] = headers.host;
    else if (headers['x-forwarded-host'] !== undefined) headers['x-forwarded-host'] = undefined;
  }
}

/**
 * Sets the identity the upstream trusts, from the session (X-User-Id: the person's account id, see
 * session/accounts.ts); with `phone` (routes[].forwardPhone) also
 * the phone number the user granted, when they have.
 */
export function setIdentity(headers: IncomingHttpHeaders, who: Identity & { phone?: string; accountId?: string }, phone?: boolean): void {
  headers['x-openid'] = who.openid;
  if (who.accountId) headers['x-user-id'] = who.accountId;
  headers['x-appid'] = who.appid;
  if (who.unionid) headers['x-unionid'] = who.unionid;
  if (phone && who.phone) headers['x-wx-phone'] = who.phone;
}

/** A header as the proxy's client gives it (a string) or undici does (a Buffer, WebSocket upgrades). */
function latin1(h: string | Buffer): string {
  return typeof h === 'string' ? h : h.toString('latin1');
}

/**
 * An upstream's raw response headers as the client gets them: a flat [name, value, ...] list for
 * res.writeHead (duplicates such as Set-Cookie kept as sent), without hop-by-hop headers, those the
 * upstream's Connection header names, its Transfer-Encoding (node frames the body for the client), or
 * Set-Cookie lines for the gateway's own cookies (`ownCookies`, with web logins).
 */
export function responseHeaders(raw: ReadonlyArray<string | Buffer>, close: boolean, ownCookies?: ReadonlySet<string>): string[] {
  const out: string[] = [];
  let named: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = latin1(raw[i]!);
    // only a name as long as one that is dropped is lower-cased and compared (Content-Type, Date … are not)
    if (name.length < DROPPED_LENGTHS.length && DROPPED_LENGTHS[name.length] === 1) {
      const lower = name.toLowerCase();
      if (lower === 'connection') {
        for (const n of latin1(raw[i + 1]!).split(',')) {
          const t = n.trim().toLowerCase();
          // `keep-alive` (the common value) names a header dropped anyway: no Set for it
          if (t && !FRAMING.has(t) && !RESPONSE_HOP_BY_HOP.has(t)) (named ??= new Set()).add(t);
        }
        continue;
      }
      if (lower === 'transfer-encoding' || RESPONSE_HOP_BY_HOP.has(lower)) continue;
      const value = latin1(raw[i + 1]!);
      // an upstream cannot set (or delete) the gateway's own cookies
      if (ownCookies && lower === 'set-cookie' && ownCookies.has(setCookieName(value))) continue;
      out.push(name, value);
      continue;
    }
    out.push(name, latin1(raw[i + 1]!));
  }
  if (named) {
    for (let i = out.length - 2; i >= 0; i -= 2) if (named.has(out[i]!.toLowerCase())) out.splice(i, 2);
  }
  if (close) out.push('Connection', 'close');
  return out;
}

import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { Identity } from '../session/types.js';
import { setCookieName } from '../web/cookies.js';

/**
 * The header steps a proxied request goes through, in order, each a small function on the
 * request's own headers, all done before the proxy sends them on; and the one step of the response's.
 */

/** Hop-by-hop headers (RFC 9110 7.6.1) plus ones the gateway answers itself (Expect). */
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'proxy-authenticate', 'expect'];
const RESPONSE_HOP_BY_HOP = new Set(HOP_BY_HOP);
/** Never dropped because a Connection header named them: they frame the body. */
const FRAMING = new Set(['content-length', 'transfer-encoding', 'host']);

export const IDENTITY_HEADERS = ['x-openid', 'x-unionid', 'x-appid', 'x-wx-phone', 'x-user-id'] as const;

/** Drops hop-by-hop headers and every header the Connection header names. */
export function dropHopByHop(headers: IncomingHttpHeaders): void {
  const connection = headers.connection;
  if (connection) {
    for (const name of connection.split(',')) {
      const n = name.trim().toLowerCase();
      if (n && !FRAMING.has(n)) delete headers[n];
    }
  }
  // Deleting only what is there keeps the headers object in V8's fast mode in the common case.
  for (const h of HOP_BY_HOP) if (headers[h] !== undefined) delete headers[h];
}

/**
 * Removes every client-sent identity header, in any case and with "_" for "-" (`X_Openid` was
 * oauth2-proxy's CVE-2025-64484). Node lower-cases header names; underscores it keeps.
 */
export function stripIdentity(headers: IncomingHttpHeaders): void {
  for (const name of Object.keys(headers)) {
    if (name.length < 7 || name.length > 10 || (name.charCodeAt(0) | 32) !== 120 /* x */) continue;
    const n = name.replace(/_/g, '-');
    if (n === 'x-openid' || n === 'x-unionid' || n === 'x-appid' || n === 'x-wx-phone' || n === 'x-user-id') delete headers[name];
  }
}

/** The gateway's token is for the gateway only. */
export function stripCredentials(headers: IncomingHttpHeaders): void {
  delete headers.authorization;
}

export type TrustFn = (addr: string, index: number) => boolean;

/**
 * X-Forwarded-For / -Proto / -Host the usual way. A client's own values are believed only when the
 * peer is a configured trusted proxy; otherwise they are replaced (and `Forwarded` dropped).
 */
export function setForwarded(req: IncomingMessage, trust: TrustFn): void {
  const headers = req.headers;
  const peer = req.socket.remoteAddress ?? '';
  const trusted = peer !== '' && trust(peer, 0);
  const proto = (req.socket as TLSSocket).encrypted ? 'https' : 'http';
  if (trusted) {
    const xff = headers['x-forwarded-for'];
    headers['x-forwarded-for'] = xff ? `${xff}, ${peer}` : peer;
    headers['x-forwarded-proto'] ??= proto;
    if (headers['x-forwarded-host'] === undefined && headers.host) headers['x-forwarded-host'] = headers.host;
  } else {
    delete headers.forwarded;
    delete headers['x-real-ip'];
    headers['x-forwarded-for'] = peer;
    headers['x-forwarded-proto'] = proto;
    if (headers.host) headers['x-forwarded-host'] = headers.host;
    else delete headers['x-forwarded-host'];
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

/**
 * An upstream's raw response headers as the client gets them: a flat [name, value, ...] list for
 * res.writeHead (duplicates such as Set-Cookie kept as sent), without hop-by-hop headers, those the
 * upstream's Connection header names, its Transfer-Encoding (node frames the body for the client), or
 * Set-Cookie lines for the gateway's own cookies (`ownCookies`, with web logins).
 */
export function responseHeaders(raw: Buffer[], close: boolean, ownCookies?: ReadonlySet<string>): string[] {
  const out: string[] = [];
  let named: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toString('latin1');
    const lower = name.toLowerCase();
    if (lower === 'connection') {
      for (const n of raw[i + 1]!.toString('latin1').split(',')) {
        const t = n.trim().toLowerCase();
        if (t && !FRAMING.has(t)) (named ??= new Set()).add(t);
      }
      continue;
    }
    if (lower === 'transfer-encoding' || RESPONSE_HOP_BY_HOP.has(lower)) continue;
    const value = raw[i + 1]!.toString('latin1');
    // an upstream cannot set (or delete) the gateway's own cookies
    if (ownCookies && lower === 'set-cookie' && ownCookies.has(setCookieName(value))) continue;
    out.push(name, value);
  }
  if (named) {
    for (let i = out.length - 2; i >= 0; i -= 2) if (named.has(out[i]!.toLowerCase())) out.splice(i, 2);
  }
  if (close) out.push('Connection', 'close');
  return out;
}

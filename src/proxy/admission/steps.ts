import { GatewayError, unauthorized } from '../../base/errors.js';
import { stripOwnCookies } from '../../request/cookies.js';
import { checkHost } from '../../request/host.js';
import { dropHopByHop, peerTrusted, setForwarded, setIdentity, stripClientHeaders, stripCredentials } from '../headers.js';
import { checkPath } from '../path.js';
import type { Admission } from './admission.js';
import { checkBodyLimit } from './body-limit.js';

/**
 * The steps of admission, in their order, each a small function of the request's Admission: it reads
 * or changes the request (its headers above all) and throws a GatewayError to refuse it. The header
 * functions themselves are in ../headers.ts. Delete first, then set: nothing the client sent can pass
 * for the gateway's own identity headers; X-Request-Id is set last, after the hop-by-hop step, so that
 * a Connection header naming it cannot drop it.
 */
export type Step = (a: Admission) => void;

/** 400 bad_host: a repeated Host, or one that is not `host[:port]`. */
export function host(a: Admission): void {
  checkHost(a.req);
}

/** 400 bad_path for a target not in plain form (proxy/path.ts); 404 when no route matches it. */
export function route(a: Admission): void {
  const checked = checkPath(a.req.url ?? '');
  if (!checked.ok) throw new GatewayError('bad_path', { detail: { reason: checked.reason } });
  const r = a.gate.routes.match(checked.matchKey);
  if (!r) throw new GatewayError('not_found');
  a.route = r;
  a.routeName = r.name;
}

/** routes[].bodyLimit (HTTP requests; an upgrade has no body): 413 payload_too_large. */
export function bodyLimit(a: Admission): void {
  const limit = a.matched.bodyLimit;
  if (limit !== undefined && a.res) checkBodyLimit(a.req, a.res, limit, a.gate.log, a.routeName);
}

/** Hop-by-hop headers out, and every header the Connection header names (after noting a `close` in it). */
export function hopByHop(a: Admission): void {
  const connection = a.req.headers.connection;
  a.clientWantsClose = connection !== undefined && /(?:^|,)\s*close\s*(?:,|$)/i.test(connection);
  dropHopByHop(a.req.headers);
}

/** The client's identity headers (any spelling), odd names, and forwarding headers from untrusted peers out. */
export function clientHeaders(a: Admission): void {
  a.trusted = peerTrusted(a.req, a.gate.trust);
  stripClientHeaders(a.req.headers, a.trusted);
}

/** A route with auth: required needs a session credential (Bearer, or the session cookie): else 401. */
export function credential(a: Admission): void {
  if (a.matched.auth !== 'required') return;
  const { token, via, given } = a.gate.credentials.of(a.req);
  if (!token) throw unauthorized(given);
  a.token = token;
  a.via = via;
}

// ---- the session lookup (Sessions.authenticate) is between these two lists

/** The credential named a session that exists: else 401 (invalid_token). */
export function session(a: Admission): void {
  if (a.token !== undefined && !a.session) throw unauthorized(true);
}

/**
 * A cookie session from an allowed page (CSRF): an HTTP request that changes something shows its Origin
 * or the CSRF token; an upgrade (a GET, yet any site's page can open a WebSocket with the user's
 * cookie) must come from an allowed Origin. Bearer needs nothing: a browser never adds it by itself.
 */
export function csrf(a: Admission): void {
  if (a.via !== 'cookie') return;
  const { credentials } = a.gate;
  if (!a.gate.upgrade) {
    if (!credentials.csrfOk(a.req, a.via, a.token!)) throw new GatewayError('csrf_failed');
  } else if (!credentials.originAllowed(a.req)) {
    throw new GatewayError('csrf_failed', { message: 'A WebSocket opened with the session cookie must come from an allowed page (Origin: web.publicUrl or one of web.origins).' });
  }
}

/** routes[].apps: the session's app is one the route serves, else 403 app_not_allowed. */
export function app(a: Admission): void {
  if (!a.matched.apps) return;
  const allowed = a.gate.allowedApps.get(a.matched);
  if (allowed && !(a.session && allowed.has(a.session.appid))) throw new GatewayError('app_not_allowed');
}

/** The gateway's token is for the gateway only: Authorization out. */
export function credentialsOut(a: Admission): void {
  stripCredentials(a.req.headers);
}

/** The gateway's own cookies (web logins) out of the Cookie header. */
export function ownCookies(a: Admission): void {
  const names = a.gate.ownCookies;
  if (names) stripOwnCookies(a.req.headers, names);
}

/** X-Forwarded-For / -Proto / -Host. */
export function forwarded(a: Admission): void {
  setForwarded(a.req, a.trusted);
}

/** X-Openid, X-Unionid, X-Appid, X-User-Id (and X-Wx-Phone with routes[].forwardPhone) from the session. */
export function identity(a: Admission): void {
  if (a.session) setIdentity(a.req.headers, a.session, a.matched.forwardPhone);
}

/** X-Request-Id: the request's id, last, so that no earlier step can drop it. */
export function requestId(a: Admission): void {
  a.req.headers['x-request-id'] = a.id;
}

/** Before the session lookup: path check → route → body limit → hop-by-hop → client headers → credential. */
export const BEFORE_SESSION: readonly Step[] = [host, route, bodyLimit, hopByHop, clientHeaders, credential];
/** After it: session → CSRF → apps → credentials out → own cookies out → X-Forwarded-* → identity → X-Request-Id. */
export const AFTER_SESSION: readonly Step[] = [session, csrf, app, credentialsOut, ownCookies, forwarded, identity, requestId];

import { hash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { authorizationOf, bearerToken, isToken } from './bearer.js';
import type { WebCookies } from './cookies.js';

/** Where a request's session token came from. `given` is true when it carried any credential at all. */
export interface Credential {
  token: string | undefined;
  via: 'bearer' | 'cookie' | undefined;
  given: boolean;
}

const NONE: Credential = { token: undefined, via: undefined, given: false };
const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);

export interface CookieAuth {
  cookies: WebCookies;
  csrf: 'origin' | 'double-submit';
  /** publicUrl's origin and web.origins */
  origins: ReadonlySet<string>;
}

/**
 * A request's session credential: `Authorization: Bearer` (mini-programs, scripts), or else the session
 * cookie when web logins are on (browsers). A request that sends an Authorization header is judged by
 * it alone: a bad header is never rescued by a cookie.
 */
export class Credentials {
  constructor(private readonly web?: CookieAuth) {}

  get cookies(): WebCookies | undefined {
    return this.web?.cookies;
  }

  of(req: IncomingMessage): Credential {
    const authorization = authorizationOf(req);
    if (authorization !== undefined) return { token: bearerToken(authorization), via: 'bearer', given: true };
    const web = this.web;
    if (!web) return NONE;
    const value = web.cookies.read(req.headers.cookie, web.cookies.session);
    if (value === undefined) return NONE;
    return { token: isToken(value) ? value : undefined, via: 'cookie', given: true };
  }

  /**
   * CSRF: a request that may change something (not GET, HEAD or OPTIONS) and is authenticated by the
   * cookie must show it comes from an allowed page: its Origin (or, without one, its Referer's origin)
   * is publicUrl's or one of web.origins, or (csrf: double-submit) X-CSRF-Token is the session's token.
   * Bearer requests need neither: a browser never adds an Authorization header by itself.
   */
  csrfOk(req: IncomingMessage, via: Credential['via'], token: string): boolean {
    const web = this.web;
    if (via !== 'cookie' || !web || SAFE.has(req.method ?? '')) return true;
    if (web.csrf === 'double-submit') {
      const sent = req.headers['x-csrf-token'];
      if (typeof sent !== 'string') return false;
      const expected = Buffer.from(csrfToken(token));
      const given = Buffer.from(sent);
      return given.length === expected.length && timingSafeEqual(given, expected);
    }
    const origin = req.headers.origin ?? originOf(req.headers.referer);
    return origin !== undefined && web.origins.has(origin);
  }

  /**
   * Whether a request comes from one of the allowed pages by its Origin header (publicUrl's or one of
   * web.origins): a cookie-authenticated WebSocket upgrade must (a GET, so csrfOk lets it pass, yet
   * any site's page could open the socket with the user's cookie: cross-site WebSocket hijacking).
   * Browsers always send Origin with a WebSocket handshake; without one, or without web logins, false.
   */
  originAllowed(req: IncomingMessage): boolean {
    const origin = req.headers.origin;
    return this.web !== undefined && origin !== undefined && this.web.origins.has(origin);
  }

}

/**
 * The double-submit token of a session (the csrf cookie's value, for page scripts to send back as
 * X-CSRF-Token): derived from the session token, so only a holder of the (HttpOnly) session cookie's
 * value can know it; a cookie planted by another site does not match.
 */
export function csrfToken(token: string): string {
  return hash('sha256', `wxgate-csrf\n${token}`, 'base64url').slice(0, 32);
}

function originOf(url: string | undefined): string | undefined {
  if (!url) return undefined;
  try {
    const o = new URL(url).origin;
    return o === 'null' ? undefined : o;
  } catch {
    return undefined;
  }
}

import type { Context } from 'koa';
import type { Config } from '../config/schema.js';
import { WebCookies } from '../request/cookies.js';
import { Credentials, csrfToken } from '../request/credentials.js';
import { OAuthStates } from './state.js';
import type { WebStore } from './store.js';

/** What the browser-login handlers share: cookies, credentials, OAuth states and the web store. */
export interface WebContext {
  cookies: WebCookies;
  credentials: Credentials;
  states: OAuthStates;
  store: WebStore;
  /** Sets the session cookie (and the CSRF cookie with csrf: double-submit) on the answer. */
  setSession(ctx: Context, token: string): void;
  /** Deletes them. */
  clearSession(ctx: Context): void;
}

/** The credentials of a gateway without web logins: Bearer only. */
export const bearerOnly = new Credentials();

export function createWebContext(config: Config, store: WebStore): WebContext {
  const web = config.web!;
  const cookies = new WebCookies(web.publicUrl, web.cookie.name);
  const origins = new Set([new URL(web.publicUrl).origin, ...web.origins.map((o) => new URL(o).origin)]);
  const credentials = new Credentials({ cookies, csrf: web.cookie.csrf, origins });
  let key: Promise<Buffer> | undefined;
  const stateKey = (): Promise<Buffer> => {
    if (web.stateSecret !== undefined) return (key ??= Promise.resolve(Buffer.from(web.stateSecret)));
    // shared through the store so that any replica can check a state another one issued; retried after a failure
    key ??= store.sharedKey('oauth-state').catch((err: unknown) => {
      key = undefined;
      throw err;
    });
    return key;
  };
  // the cookie lives as long as a session can: the server decides when it ends before that
  const maxAge = config.session.maxAge / 1000;
  return {
    cookies,
    credentials,
    states: new OAuthStates(stateKey, web.loginTimeout),
    store,
    setSession(ctx, token) {
      ctx.append('Set-Cookie', cookies.set(cookies.session, token, maxAge));
      if (web.cookie.csrf === 'double-submit') ctx.append('Set-Cookie', cookies.set(cookies.csrf, csrfToken(token), maxAge, { httpOnly: false }));
    },
    clearSession(ctx) {
      ctx.append('Set-Cookie', cookies.clear(cookies.session));
      if (web.cookie.csrf === 'double-submit') ctx.append('Set-Cookie', cookies.clear(cookies.csrf));
    },
  };
}

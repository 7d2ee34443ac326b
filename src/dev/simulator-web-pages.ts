import { randomBytes } from 'node:crypto';
import type http from 'node:http';
import { esc, html, USER } from './simulator-http.js';

/**
 * The simulator's web authorization pages (open.weixin.qq.com at WeChat): GET /connect/oauth2/authorize,
 * GET /connect/qrconnect and what their "Approve" / "Deny" buttons submit, GET /connect/approve; see
 * simulator-web.ts for what each takes and answers.
 */

/** What a user approved: the app, the user and the scope. */
export interface Grant {
  appid: string;
  user: string;
  scope: string;
}

/** As WeChat: an Official Account OAuth code lives 5 minutes, a website login (qrconnect) code 10. */
const CODE_LIFE = { oauth2: 5 * 60 * 1000, qrconnect: 10 * 60 * 1000 };
const OA_SCOPES = new Set(['snsapi_base', 'snsapi_userinfo', 'snsapi_privateinfo']);

interface AuthRequest {
  appid: string;
  redirect: URL;
  scope: string;
  state: string;
  website: boolean;
}

/** `appKnown`: whether the simulator serves the appid; `issue`: stores a code for the grant, good for `life` ms. */
export function createAuthPages(appKnown: (appid: string) => boolean, issue: (code: string, grant: Grant, life: number) => void) {
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
      const code = randomBytes(16).toString('base64url');
      issue(code, { appid: r.appid, user, scope: r.scope }, CODE_LIFE[r.scope === 'snsapi_login' ? 'qrconnect' : 'oauth2']);
      target.searchParams.set('code', code);
    }
    target.searchParams.set('state', r.state);
    res.writeHead(302, { location: target.href, 'content-length': 0, 'cache-control': 'no-store' }).end();
  }

  return {
    authorize: (_req: http.IncomingMessage, res: http.ServerResponse, q: URLSearchParams) => authorizePage(q, false, res),
    qrconnect: (_req: http.IncomingMessage, res: http.ServerResponse, q: URLSearchParams) => authorizePage(q, true, res),
    approve: (_req: http.IncomingMessage, res: http.ServerResponse, q: URLSearchParams) => approve(q, res),
  };
}

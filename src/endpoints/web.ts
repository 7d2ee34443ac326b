import { z } from 'zod';
import type { ErrorCode } from '../base/errors.js';
import { ALWAYS, jsonSchema, NO_STORE, ok, page, REDIRECT_BODY, STRING, TICKET_ID, WECHAT_ERRORS, type DocContext } from './docs.js';
import { mpQrEndpoints } from './mp-qr.js';
import type { OwnEndpoint, OwnEndpoints } from './table.js';
import { ticketRows } from './tickets.js';

/** The browser logins' rows (config `web`): the OAuth flows under /oauth/, scan-to-login under /scan/, follow-QR under /qr/. */

/** The embedded QR's parameters (wxLogin.js style) of the website login. */
const EMBED_PARAMS = [
  { name: 'embed', in: 'query', required: false, description: 'The QR is shown in an iframe of the site\'s page (wxLogin.js style): WeChat\'s login_type=jssdk.', schema: { type: 'string', enum: ['1', 'true'] } },
  { name: 'self_redirect', in: 'query', required: false, description: 'true: the login ends inside the iframe; false (default): in the top window.', schema: { type: 'string', enum: ['true', 'false'] } },
  { name: 'style', in: 'query', required: false, description: "The colour of WeChat's text under the QR.", schema: { type: 'string', enum: ['black', 'white'] } },
  { name: 'href', in: 'query', required: false, description: "CSS for WeChat's QR page: a data:text/css;base64 URL, or https on web.publicUrl, web.origins or an origin of web.redirects.", schema: STRING },
  { name: 'stylelite', in: 'query', required: false, description: "1: WeChat's newer QR layout.", schema: { type: 'string', enum: ['1', '0'] } },
];
const REDIRECT = { name: 'redirect', in: 'query', required: false, description: 'Where the browser goes after the login: a path or origin allowed by web.redirects. Default "/".', schema: STRING };
const HTML_ERRORS = 'Errors are a small HTML page for a browser that asks for text/html, JSON otherwise.';

export function webEndpoints(c: DocContext): OwnEndpoints {
  const { web, cookies } = c;
  if (!web || !cookies) return { endpoints: [], prefixes: [] };
  const rows: OwnEndpoint[] = [];
  const flows = [
    ...(web.mp ? [['mp', 'Official Account (公众号) pages inside WeChat: connect/oauth2/authorize'] as const] : []),
    ...(web.open ? [['open', 'website QR login (Open Platform website app): connect/qrconnect'] as const] : []),
  ];
  for (const [provider, what] of flows) {
    const route = `oauth_${provider}`;
    rows.push({
      method: 'GET', path: `/oauth/${provider}/authorize`, route, handler: 'oauthAuthorize', provider, html: true,
      doc: {
        id: `oauth_${provider}_authorize`, tag: 'web', summary: `Start a web login: ${what}`,
        description: `Sends the browser to WeChat with a state bound to this browser (the state cookie). ${HTML_ERRORS}`,
        parameters: [REDIRECT, ...(provider === 'open' ? EMBED_PARAMS : [])],
        responses: {
          '302': {
            description: 'To WeChat\'s authorization page.',
            headers: {
              Location: { description: 'WeChat\'s page, with appid, redirect_uri, response_type, scope, state and #wechat_redirect.', required: true, schema: STRING },
              'Set-Cookie': { description: `The state cookie \`${cookies.state}\` (HttpOnly, SameSite=Lax, web.loginTimeout).`, required: true, schema: STRING },
              'Cache-Control': NO_STORE,
            },
            content: REDIRECT_BODY,
          },
        },
        errors: ['redirect_not_allowed', ...(provider === 'open' ? (['bad_request'] as ErrorCode[]) : []), ...ALWAYS],
      },
    });
    rows.push({
      method: 'GET', path: `/oauth/${provider}/callback`, route, handler: 'oauthCallback', provider, html: true,
      doc: {
        id: `oauth_${provider}_callback`, tag: 'web', summary: 'Where WeChat sends the browser back: the code becomes a session cookie',
        description: `Needs the state cookie of the browser that started the login. The same code again (a repeated redirect, the back button) gets the same session; WeChat is asked once. ${HTML_ERRORS}`,
        parameters: [
          { name: 'code', in: 'query', required: false, description: 'WeChat\'s authorization code; absent when the user said no.', schema: STRING },
          { name: 'state', in: 'query', required: true, description: 'The state sent to WeChat by authorize.', schema: STRING },
        ],
        responses: {
          '200': {
            description: 'Loaded inside an iframe (Sec-Fetch-Dest: iframe; the embedded QR with self_redirect=true): a small page that sends the top window to this same URL, where the login ends; the code is not spent in the frame.',
            headers: { 'Cache-Control': NO_STORE },
            content: { 'text/html': { schema: STRING } },
          },
          '302': {
            description: 'Logged in: to the redirect approved at authorize.',
            headers: {
              Location: { description: 'The redirect given to authorize.', required: true, schema: STRING },
              'Set-Cookie': {
                description: `The session cookie \`${cookies.session}\`${web.cookie.csrf === 'double-submit' ? ` and the CSRF cookie \`${cookies.csrf}\`` : ''}.`,
                required: true,
                schema: STRING,
              },
              'Cache-Control': NO_STORE,
            },
            content: REDIRECT_BODY,
          },
        },
        errors: ['state_invalid', 'state_used', 'bad_request', 'login_denied', 'code_invalid', 'code_used', 'wechat_rate_limited', ...WECHAT_ERRORS, ...ALWAYS],
      },
    });
  }
  // one link for every browser: the OA login inside WeChat, the website QR (or scan page) elsewhere
  rows.push({
    method: 'GET', path: '/oauth/web/authorize', route: 'oauth_web', handler: 'oauthEntry', html: true,
    doc: {
      id: 'oauth_web_authorize', tag: 'web', summary: 'Start a web login with the flow that fits the browser (one "log in with WeChat" link)',
      description: `Inside the WeChat browser (User-Agent with "MicroMessenger") the Official Account login (web.mp); elsewhere the website QR login (web.open, with the embedded-QR parameters), or with scan-to-login alone its page (/scan/demo). 400 web_login_unavailable when nothing configured fits the browser. ${HTML_ERRORS}`,
      parameters: [
        REDIRECT,
        { name: 'User-Agent', in: 'header', required: false, description: 'Decides the flow: "MicroMessenger" in it is the WeChat browser.', schema: STRING },
        ...(web.open ? EMBED_PARAMS : []),
      ],
      responses: {
        '302': {
          description: "To WeChat's authorization page (as /oauth/mp/authorize or /oauth/open/authorize), or to the scan-to-login page.",
          headers: {
            Location: { description: "WeChat's page with the state, or /scan/demo?redirect=….", required: true, schema: STRING },
            'Set-Cookie': { description: `The state cookie \`${cookies.state}\` when the browser goes to WeChat.`, required: false, schema: STRING },
            Vary: { description: 'User-Agent: the answer depends on the browser.', required: true, schema: { type: 'string', const: 'User-Agent' } },
            'Cache-Control': NO_STORE,
          },
          content: REDIRECT_BODY,
        },
      },
      errors: ['redirect_not_allowed', 'web_login_unavailable', ...(web.open ? (['bad_request'] as ErrorCode[]) : []), ...ALWAYS],
    },
  });
  if (web.scan) rows.push(...scanEndpoints(c, web.scan));
  if (web.mpQr) rows.push(...mpQrEndpoints(c, web.mpQr));
  return { endpoints: rows, prefixes: ['/oauth', ...(web.scan ? ['/scan'] : []), ...(web.mpQr ? ['/qr'] : [])] };
}

function scanEndpoints(c: DocContext, scan: NonNullable<NonNullable<DocContext['web']>['scan']>): OwnEndpoint[] {
  const ticketId = { name: 'id', in: 'path', required: true, description: 'The ticket (in the QR code\'s scene).', schema: TICKET_ID };
  const rows = ticketRows(c, {
    prefix: '/scan',
    route: 'scan',
    handlers: ['scanCreate', 'scanWait'],
    ids: ['scanCreateTicket', 'scanWait'],
    summaries: [
      'Scan to log in: a ticket and its mini-program code, for the PC page',
      'The PC page waits for the phone (long poll); once confirmed it gets its own session cookie',
    ],
    description: `The QR code (wxa/getwxacodeunlimit, scene = the ticket) opens the mini-program page \`${scan.page}\`. The secret is for this PC page only: it polls with it (X-Scan-Secret).`,
    ticket: 'ScanTicket',
    idParam: 'The ticket (in the QR code\'s scene).',
    waitParams: [
      { name: 'seen', in: 'query', required: false, description: '"scanned": the page shows the scan already; wait on for the confirmation (without it a scanned ticket answers "scanned" at once).', schema: { type: 'string', enum: ['scanned'] } },
    ],
    waiting: 'Still waiting (pending, or scanned: the phone opened it), or confirmed: then the session cookie is set.',
    waitErrors: ['ticket_not_found', 'ticket_cancelled', 'ticket_used', 'ticket_expired'],
  });
  const settle = [
    ['scanned', 'scanned', 'scanScanned', 'The mini-program page opened from the QR code (optional): the PC page shows "scanned"'],
    ['confirm', 'confirmed', 'scanConfirm', 'The mini-program user logs the PC in as themselves'],
    ['cancel', 'cancelled', 'scanCancel', 'The mini-program user refuses the PC login'],
  ] as const;
  for (const [what, status, handler, summary] of settle) {
    rows.push({
      method: 'POST', path: `/scan/tickets/:id/${what}`, route: 'scan', handler,
      doc: {
        id: `scan_${what}`, tag: 'scan', summary,
        description: `With the token of a session of the mini-program ${scan.app ?? c.miniApps[0]} (web.scan.app). A browser's cookie session cannot answer a ticket (403 \`app_not_allowed\`, or \`csrf_failed\` first for an unsafe request from a page not allowed).`,
        security: [{ bearer: [] }],
        parameters: [ticketId],
        responses: { '200': ok(`The ticket is ${status}.`, jsonSchema(z.strictObject({ status: z.literal(status) }))) },
        errors: ['ticket_not_found', 'unauthorized', ...c.csrf, 'app_not_allowed', 'ticket_already_confirmed', 'ticket_cancelled', 'ticket_expired', ...ALWAYS],
      },
    });
  }
  if (scan.demo) {
    rows.push({
      method: 'GET', path: '/scan/demo', route: 'scan', handler: 'scanDemo', html: true,
      doc: {
        id: 'scanDemo', tag: 'scan', summary: 'A demo PC page for scan to log in',
        responses: { '200': page('The page (no outside resources; a strict CSP with a nonce per answer).') },
        errors: ['internal_error'],
      },
    });
  }
  return rows;
}

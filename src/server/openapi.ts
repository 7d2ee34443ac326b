import { readFileSync } from 'node:fs';
import { mpQrApp, type Config } from '../config/schema.js';
import { WebCookies } from '../request/cookies.js';
import { ERRORS, type ErrorCode } from '../base/errors.js';

/**
 * The OpenAPI 3.1 description of the gateway's own endpoints, as this configuration serves them: the
 * paths come from config.endpoints (and metrics.path, and the web logins' fixed paths when `web` is set),
 * and every operation lists the statuses its handler can answer, each error status with the catalogue's
 * codes it can carry (errors.ts). Routes to upstreams are not described: they are the upstreams' own.
 * Plain objects, no dependencies; nothing secret goes in (no app secrets, no state secret, no admin token,
 * no store address).
 */

type Obj = Record<string, unknown>;

const ALL_CODES = Object.keys(ERRORS) as ErrorCode[];

const STRING = { type: 'string' } as const;
const SECONDS = { type: 'integer', minimum: 0, description: 'Seconds.' } as const;
/** What koa writes as the body of a redirect: "Redirecting to <url>." */
const REDIRECT_BODY = {
  'text/plain': { schema: { type: 'string', description: 'Redirecting to <Location>.' } },
  'text/html': { schema: { type: 'string', description: 'Redirecting to <Location>. (when the client accepts HTML)' } },
} as const;
/** The embedded QR's parameters (wxLogin.js style) of the website login. */
const EMBED_PARAMS = [
  { name: 'embed', in: 'query', required: false, description: 'The QR is shown in an iframe of the site\'s page (wxLogin.js style): WeChat\'s login_type=jssdk.', schema: { type: 'string', enum: ['1', 'true'] } },
  { name: 'self_redirect', in: 'query', required: false, description: 'true: the login ends inside the iframe; false (default): in the top window.', schema: { type: 'string', enum: ['true', 'false'] } },
  { name: 'style', in: 'query', required: false, description: "The colour of WeChat's text under the QR.", schema: { type: 'string', enum: ['black', 'white'] } },
  { name: 'href', in: 'query', required: false, description: "CSS for WeChat's QR page: a data:text/css;base64 URL, or https on web.publicUrl, web.origins or an origin of web.redirects.", schema: STRING },
  { name: 'stylelite', in: 'query', required: false, description: "1: WeChat's newer QR layout.", schema: { type: 'string', enum: ['1', '0'] } },
];

const NO_STORE = { description: 'The answer is never cached.', required: true, schema: { type: 'string', const: 'no-store' } } as const;
/** The request body could not be read as a JSON object of the allowed size. */
const BODY_ERRORS: ErrorCode[] = ['bad_request', 'invalid_json', 'payload_too_large', 'unsupported_media_type'];
/** A WeChat call that failed in a passing or unexpected way. */
const WECHAT_ERRORS: ErrorCode[] = ['wechat_error', 'wechat_unavailable', 'wechat_quota_exceeded', 'wechat_timeout'];
/** Anything that reads or writes the session (or web) store, and anything at all. */
const ALWAYS: ErrorCode[] = ['session_store_unavailable', 'internal_error'];

let version: string | undefined;
/** The package's version (package.json sits two levels up from src/server and from dist/server). */
function packageVersion(): string {
  if (version === undefined) {
    try {
      version = String((JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown }).version ?? '0.0.0');
    } catch {
      version = '0.0.0';
    }
  }
  return version;
}

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: object) => ({ 'application/json': { schema } });

function errorResponse(status: number, codes: ErrorCode[], html: boolean): Obj {
  const headers: Obj = { 'Cache-Control': NO_STORE };
  if (codes.includes('unauthorized')) {
    headers['WWW-Authenticate'] = {
      description: 'With `unauthorized`: `Bearer realm="wxgate"`, and `error="invalid_token"` when a token was given.',
      required: codes.every((c) => c === 'unauthorized'),
      schema: { type: 'string', pattern: '^Bearer realm="wxgate"' },
    };
  }
  if (status === 429 || codes.includes('session_store_unavailable')) {
    headers['Retry-After'] = {
      description: 'Seconds to wait before retrying.',
      required: status === 429,
      schema: { type: 'string', pattern: '^[0-9]+$' },
    };
  }
  const schema = { allOf: [ref('Error'), { properties: { error: { enum: codes } } }] };
  return {
    description: codes.map((c) => `\`${c}\`: ${ERRORS[c].message}`).join('\n\n'),
    headers,
    content: {
      ...json(schema),
      ...(html ? { 'text/html': { schema: { type: 'string', description: 'The same error as a small page, for a browser that navigates here (Accept: text/html).' } } } : {}),
    },
  };
}

/** The error responses of an operation: its codes grouped by the catalogue's status. */
function errorResponses(codes: ErrorCode[], html = false): Obj {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of new Set(codes)) {
    const status = ERRORS[code].status;
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  const out: Obj = {};
  for (const status of [...byStatus.keys()].sort((a, b) => a - b)) out[String(status)] = errorResponse(status, byStatus.get(status)!, html);
  return out;
}

function operation(op: { id: string; tag: string; summary: string; description?: string; security?: object[]; parameters?: object[]; requestBody?: object; responses: Obj; errors: ErrorCode[]; html?: boolean }): Obj {
  return {
    operationId: op.id,
    tags: [op.tag],
    summary: op.summary,
    ...(op.description ? { description: op.description } : {}),
    security: op.security ?? [],
    ...(op.parameters?.length ? { parameters: op.parameters } : {}),
    ...(op.requestBody ? { requestBody: op.requestBody } : {}),
    responses: { ...op.responses, ...errorResponses(op.errors, op.html) },
  };
}

export function openapiDocument(config: Config): object {
  const e = config.endpoints;
  const web = config.web;
  const cookies = web ? new WebCookies(web.publicUrl, web.cookie.name) : undefined;
  const miniApps = config.wechat.apps.map((a) => a.appid);
  const qrApp = mpQrApp(config)?.appid;
  const webApps = [...(web?.mp ? [web.mp.appid] : []), ...(web?.open ? [web.open.appid] : []), ...(qrApp && qrApp !== web?.mp?.appid ? [qrApp] : [])];
  const rateLimited: ErrorCode[] = config.limits.login.perIp > 0 ? ['rate_limited'] : [];
  /** CSRF applies to unsafe requests made with the session cookie, which exists only with web logins. */
  const csrf: ErrorCode[] = web ? ['csrf_failed'] : [];
  /** Web sessions (OAuth logins, scan-to-login) are refused by the mini-program-only endpoints. */
  const webSessions: ErrorCode[] = webApps.length || web?.scan ? ['app_not_allowed'] : [];

  const sessionAuth = [{ bearer: [] }, ...(cookies ? [{ sessionCookie: [] }] : [])];
  const csrfHeader =
    web?.cookie.csrf === 'double-submit'
      ? [
          {
            name: 'X-CSRF-Token',
            in: 'header',
            required: false,
            description: `With the session cookie: the value of the \`${cookies!.csrf}\` cookie (double-submit CSRF defence). Not needed with a Bearer token.`,
            schema: STRING,
          },
        ]
      : [];
  const jsonBody = (schema: object, required = true, description?: string) => ({
    required,
    ...(description ? { description } : {}),
    content: json(schema),
  });
  const ok = (description: string, schema: object, headers: Obj = {}) => ({
    description,
    headers: { 'Cache-Control': NO_STORE, ...headers },
    content: json(schema),
  });

  const paths: Obj = {};
  const add = (path: string, method: string, op: Obj) => {
    paths[path] = { ...(paths[path] as Obj | undefined), [method]: op };
  };

  add(e.login, 'post', operation({
    id: 'login',
    tag: 'session',
    summary: 'Log in with a wx.login() code',
    description:
      'Spends the code at WeChat (jscode2session) once, whatever number of times and replicas it is presented to within its life, and answers an opaque session token; the session_key stays in the gateway. With `encryptedData` and `iv` (and optionally `rawData` and `signature`) the open data is decrypted with this login\'s session_key and answered as `data`; if it does not open, the login fails.',
    parameters: [
      {
        name: 'X-Wx-Appid',
        in: 'header',
        required: false,
        description: 'The mini-program, instead of `appid` in the body (both must agree). Optional when one app is served.',
        schema: { type: 'string', enum: miniApps },
      },
    ],
    requestBody: jsonBody(ref('LoginRequest')),
    responses: { '200': ok('The session.', ref('LoginResponse')) },
    errors: [
      ...BODY_ERRORS,
      'invalid_request',
      'unknown_appid',
      'decrypt_failed',
      'watermark_mismatch',
      'signature_invalid',
      'code_invalid',
      'code_used',
      'session_key_stale',
      'user_blocked',
      'wechat_rate_limited',
      ...rateLimited,
      ...WECHAT_ERRORS,
      ...ALWAYS,
    ],
  }));

  add(e.session, 'get', operation({
    id: 'getSession',
    tag: 'session',
    summary: 'The current session (the server side of wx.checkSession())',
    description: 'With `verify=wechat` (mini-program sessions), WeChat is asked too whether the session_key the gateway holds is still the user\'s (wxa/checksession, answers kept a minute): `401 session_key_stale` when not.',
    security: sessionAuth,
    parameters: [{ name: 'verify', in: 'query', required: false, description: 'Also ask WeChat whether the session_key is still valid.', schema: { type: 'string', enum: ['wechat'] } }],
    responses: { '200': ok('Who the session is, and for how long it lasts if unused.', ref('Session')) },
    errors: ['bad_request', 'unauthorized', 'session_key_stale', ...webSessions, 'app_not_allowed', ...WECHAT_ERRORS, 'wechat_rate_limited', ...ALWAYS].filter((c, i, all) => all.indexOf(c) === i) as ErrorCode[],
  }));

  add(e.logout, 'post', operation({
    id: 'logout',
    tag: 'session',
    summary: 'End the session, or with `{"all": true}` every session of the user',
    description: 'A token that is no longer valid is logged out all the same (idempotent); `all` needs a valid one.',
    security: sessionAuth,
    parameters: csrfHeader,
    requestBody: jsonBody(ref('LogoutRequest'), false, 'Optional.'),
    responses: {
      '204': {
        description: 'Logged out. With the session cookie, the answer deletes it.',
        ...(cookies ? { headers: { 'Set-Cookie': { description: `Deletes \`${cookies.session}\` (Max-Age=0) when it was the credential.`, required: false, schema: STRING } } } : {}),
      },
    },
    errors: [...BODY_ERRORS, 'invalid_request', 'unauthorized', ...csrf, ...ALWAYS],
  }));

  add(e.decrypt, 'post', operation({
    id: 'decrypt',
    tag: 'mini-program',
    summary: 'Decrypt WeChat open data with the session\'s session_key',
    description:
      'wx.getWeRunData, share and group info and the like (not avatar and nickname: wx.getUserProfile has returned no real profile since 2022; use the chooseAvatar / nickname components): `encryptedData` and `iv` (and optionally `rawData` with its `signature`) opened with the user\'s current session_key, which never leaves the gateway. The watermark is checked (this app, with a timestamp) and left out of `data`.',
    security: sessionAuth,
    parameters: csrfHeader,
    requestBody: jsonBody(ref('DecryptRequest')),
    responses: { '200': ok('The decrypted data.', ref('DecryptResponse')) },
    errors: ['unauthorized', 'session_key_stale', ...csrf, ...webSessions, ...BODY_ERRORS, 'invalid_request', 'decrypt_failed', 'watermark_mismatch', 'signature_invalid', ...ALWAYS],
    // (a failed decryption asks WeChat whether the key is still valid; when WeChat cannot say, the decryption error stands)
  }));

  add(e.phone, 'post', operation({
    id: 'phone',
    tag: 'mini-program',
    summary: 'The user\'s phone number from a getPhoneNumber button code',
    description: 'Calls wxa/business/getuserphonenumber with the app\'s access_token and the session\'s openid. The number is kept with the user, for every session of theirs (routes[].forwardPhone sends it upstream as X-Wx-Phone); within limits.phone.window of the grant a new code is answered with it (source: kept) without calling WeChat (each call is paid), unless force is true.',
    security: sessionAuth,
    parameters: csrfHeader,
    requestBody: jsonBody(ref('PhoneRequest')),
    responses: { '200': ok('The phone number, as WeChat gives it.', ref('PhoneNumber')) },
    errors: ['unauthorized', ...csrf, ...webSessions, ...BODY_ERRORS, 'invalid_request', 'phone_code_invalid', 'wechat_rate_limited', ...WECHAT_ERRORS, ...ALWAYS],
  }));

  add(e.healthz, 'get', operation({
    id: 'healthz',
    tag: 'operations',
    summary: 'Liveness: the process answers',
    responses: { '200': ok('Alive.', ref('Health')) },
    errors: ['internal_error'],
  }));

  add(e.readyz, 'get', operation({
    id: 'readyz',
    tag: 'operations',
    summary: 'Readiness: the session store answers',
    responses: { '200': ok('Ready.', ref('Ready')) },
    errors: ['not_ready', 'internal_error'],
  }));

  if (config.metrics.enabled && config.metrics.port === undefined) {
    add(config.metrics.path, 'get', operation({
      id: 'metrics',
      tag: 'operations',
      summary: 'Prometheus metrics',
      responses: {
        '200': {
          description: 'The metrics in the Prometheus text format.',
          content: { 'text/plain': { schema: { type: 'string' } } },
        },
      },
      errors: ['internal_error'],
    }));
  }

  const openapiPath = (e as { openapi?: unknown }).openapi;
  if (typeof openapiPath === 'string') {
    add(openapiPath, 'get', operation({
      id: 'openapi',
      tag: 'operations',
      summary: 'This description of the gateway\'s own endpoints (OpenAPI 3.1)',
      responses: { '200': { description: 'The OpenAPI document.', content: json({ type: 'object', required: ['openapi', 'info', 'paths'] }) } },
      errors: ['internal_error'],
    }));
  }

  if (web && cookies) {
    const flows = [...(web.mp ? [['mp', 'Official Account (公众号) pages inside WeChat: connect/oauth2/authorize'] as const] : []), ...(web.open ? [['open', 'website QR login (Open Platform website app): connect/qrconnect'] as const] : [])];
    for (const [provider, what] of flows) {
      add(`/oauth/${provider}/authorize`, 'get', operation({
        id: `oauth_${provider}_authorize`,
        tag: 'web',
        summary: `Start a web login: ${what}`,
        description: 'Sends the browser to WeChat with a state bound to this browser (the state cookie). Errors are a small HTML page for a browser that asks for text/html, JSON otherwise.',
        parameters: [
          { name: 'redirect', in: 'query', required: false, description: 'Where the browser goes after the login: a path or origin allowed by web.redirects. Default "/".', schema: STRING },
          ...(provider === 'open' ? EMBED_PARAMS : []),
        ],
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
        html: true,
      }));
      add(`/oauth/${provider}/callback`, 'get', operation({
        id: `oauth_${provider}_callback`,
        tag: 'web',
        summary: 'Where WeChat sends the browser back: the code becomes a session cookie',
        description: 'Needs the state cookie of the browser that started the login. The same code again (a repeated redirect, the back button) gets the same session; WeChat is asked once. Errors are a small HTML page for a browser that asks for text/html, JSON otherwise.',
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
        html: true,
      }));
    }

    add('/oauth/web/authorize', 'get', operation({
      id: 'oauth_web_authorize',
      tag: 'web',
      summary: 'Start a web login with the flow that fits the browser (one "log in with WeChat" link)',
      description:
        'Inside the WeChat browser (User-Agent with "MicroMessenger") the Official Account login (web.mp); elsewhere the website QR login (web.open, with the embedded-QR parameters), or with scan-to-login alone its page (/scan/demo). 400 web_login_unavailable when nothing configured fits the browser. Errors are a small HTML page for a browser that asks for text/html, JSON otherwise.',
      parameters: [
        { name: 'redirect', in: 'query', required: false, description: 'Where the browser goes after the login: a path or origin allowed by web.redirects. Default "/".', schema: STRING },
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
      html: true,
    }));

    if (web.scan) {
      const ticketId = { name: 'id', in: 'path', required: true, description: 'The ticket (in the QR code\'s scene).', schema: { type: 'string', pattern: '^[A-Za-z0-9_-]{22}$' } };
      add('/scan/tickets', 'post', operation({
        id: 'scanCreateTicket',
        tag: 'scan',
        summary: 'Scan to log in: a ticket and its mini-program code, for the PC page',
        description: `The QR code (wxa/getwxacodeunlimit, scene = the ticket) opens the mini-program page \`${web.scan.page}\`. The secret is for this PC page only: it polls with it (X-Scan-Secret).`,
        responses: { '201': ok('A new ticket.', ref('ScanTicket')) },
        errors: [...rateLimited, ...WECHAT_ERRORS, ...ALWAYS],
      }));
      add('/scan/tickets/{id}', 'get', operation({
        id: 'scanWait',
        tag: 'scan',
        summary: 'The PC page waits for the phone (long poll); once confirmed it gets its own session cookie',
        parameters: [
          ticketId,
          { name: 'wait', in: 'query', required: false, description: 'Seconds to wait for an answer (0-30).', schema: { type: 'integer', minimum: 0, maximum: 30 } },
          { name: 'seen', in: 'query', required: false, description: '"scanned": the page shows the scan already; wait on for the confirmation (without it a scanned ticket answers "scanned" at once).', schema: { type: 'string', enum: ['scanned'] } },
          { name: 'X-Scan-Secret', in: 'header', required: true, description: 'The ticket\'s secret from POST /scan/tickets.', schema: { type: 'string', pattern: '^[A-Za-z0-9_-]{43}$' } },
        ],
        responses: {
          '200': ok('Still waiting (pending, or scanned: the phone opened it), or confirmed: then the session cookie is set.', ref('ScanWait'), {
            'Set-Cookie': { description: `With status "confirmed": the session cookie \`${cookies.session}\`.`, required: false, schema: STRING },
          }),
        },
        errors: ['ticket_not_found', 'ticket_cancelled', 'ticket_used', 'ticket_expired', ...ALWAYS],
      }));
      const summaries = {
        scanned: 'The mini-program page opened from the QR code (optional): the PC page shows "scanned"',
        confirm: 'The mini-program user logs the PC in as themselves',
        cancel: 'The mini-program user refuses the PC login',
      };
      for (const [what, status] of [['scanned', 'scanned'], ['confirm', 'confirmed'], ['cancel', 'cancelled']] as const) {
        add(`/scan/tickets/{id}/${what}`, 'post', operation({
          id: `scan_${what}`,
          tag: 'scan',
          summary: summaries[what],
          description: `With the token of a session of the mini-program ${web.scan.app ?? miniApps[0]} (web.scan.app). A browser's cookie session cannot answer a ticket (403 \`app_not_allowed\`, or \`csrf_failed\` first for an unsafe request from a page not allowed).`,
          security: [{ bearer: [] }],
          parameters: [ticketId],
          responses: { '200': ok(`The ticket is ${status}.`, { type: 'object', required: ['status'], properties: { status: { const: status } }, additionalProperties: false }) },
          errors: ['ticket_not_found', 'unauthorized', ...csrf, 'app_not_allowed', 'ticket_already_confirmed', 'ticket_cancelled', 'ticket_expired', ...ALWAYS],
        }));
      }
      if (web.scan.demo) {
        add('/scan/demo', 'get', operation({
          id: 'scanDemo',
          tag: 'scan',
          summary: 'A demo PC page for scan to log in',
          responses: {
            '200': {
              description: 'The page (no outside resources; a strict CSP with a nonce per answer).',
              headers: {
                'Cache-Control': NO_STORE,
                'Content-Security-Policy': { required: true, schema: STRING },
                'X-Content-Type-Options': { required: true, schema: { type: 'string', const: 'nosniff' } },
              },
              content: { 'text/html': { schema: { type: 'string' } } },
            },
          },
          errors: ['internal_error'],
        }));
      }
    }
  }

  if (web?.mpQr) mpQrPaths(add, ok, web.mpQr, cookies!.session, rateLimited);

  const openData = { type: 'object', description: 'The decrypted open data, without its watermark.' };
  const schemas: Obj = {
    Error: {
      type: 'object',
      description: 'Every error the gateway answers itself.',
      required: ['error', 'message'],
      properties: {
        error: { type: 'string', enum: ALL_CODES, description: 'A stable code, for programs.' },
        message: { type: 'string', description: 'What happened and what to do, for people.' },
      },
      additionalProperties: false,
    },
    OpenDataFields: {
      type: 'object',
      description: 'WeChat open data as the mini-program got it.',
      properties: {
        encryptedData: { type: 'string', minLength: 1, description: 'Base64.' },
        iv: { type: 'string', minLength: 1, description: 'Base64, 16 bytes.' },
        rawData: { type: 'string', description: 'With `signature`.' },
        signature: { type: 'string', pattern: '^[0-9a-fA-F]{40}$', description: 'SHA-1 of rawData and the session_key, hex; with `rawData`.' },
      },
    },
    LoginRequest: {
      type: 'object',
      required: ['code'],
      properties: {
        code: { type: 'string', pattern: '^[\\x21-\\x7e]{1,128}$', description: 'From wx.login().' },
        appid: { type: 'string', enum: miniApps, description: 'The mini-program; optional when one app is served.' },
        encryptedData: { type: 'string', minLength: 1 },
        iv: { type: 'string', minLength: 1 },
        rawData: { type: 'string' },
        signature: { type: 'string', pattern: '^[0-9a-fA-F]{40}$' },
      },
    },
    LoginResponse: {
      type: 'object',
      required: ['token', 'expires_in'],
      properties: {
        token: ref('Token'),
        expires_in: { ...SECONDS, description: 'Seconds the session lasts if unused (session.ttl); activity extends it up to session.maxAge.' },
        data: openData,
      },
      additionalProperties: false,
    },
    Token: { type: 'string', pattern: '^[A-Za-z0-9_-]{59}$', description: 'Opaque; send it as `Authorization: Bearer <token>`.' },
    Session: {
      type: 'object',
      required: ['openid', 'appid', 'expires_in'],
      properties: {
        openid: { type: 'string', minLength: 1 },
        appid: { type: 'string', enum: [...miniApps, ...webApps] },
        unionid: { type: 'string', minLength: 1 },
        expires_in: SECONDS,
      },
      additionalProperties: false,
    },
    LogoutRequest: {
      type: 'object',
      properties: { all: { type: 'boolean', description: 'End every session of the user (all devices).' } },
    },
    DecryptRequest: { allOf: [ref('OpenDataFields'), { required: ['encryptedData', 'iv'] }] },
    DecryptResponse: { type: 'object', required: ['data'], properties: { data: openData }, additionalProperties: false },
    PhoneRequest: {
      type: 'object',
      required: ['code'],
      properties: {
        code: { type: 'string', pattern: '^[\\x21-\\x7e]{1,128}$', description: 'From the getPhoneNumber button.' },
        force: { type: 'boolean', description: 'Ask WeChat even when the gateway keeps a number the user granted within limits.phone.window.' },
      },
    },
    PhoneNumber: {
      type: 'object',
      required: ['phoneNumber', 'purePhoneNumber', 'countryCode', 'source'],
      properties: {
        phoneNumber: { type: 'string', description: 'With the country code for numbers outside mainland China.' },
        purePhoneNumber: { type: 'string', description: 'Without the country code.' },
        countryCode: { type: 'string' },
        source: { enum: ['wechat', 'kept'], description: 'wechat: WeChat was asked just now; kept: the number the user granted before, WeChat not asked.' },
      },
      additionalProperties: false,
    },
    Health: { type: 'object', required: ['status'], properties: { status: { const: 'ok' } }, additionalProperties: false },
    Ready: {
      type: 'object',
      required: ['status', 'store'],
      properties: { status: { const: 'ok' }, store: { type: 'string', enum: [config.session.store] } },
      additionalProperties: false,
    },
  };
  if (web?.mpQr) {
    schemas.MpQrTicket = ticketSchema(
      'Single use; the QR code\'s scene.',
      'Seconds the QR code and its ticket wait for the follow or scan (web.mpQr.ticketTtl).',
      { pattern: '^https?://[^?]+/cgi-bin/showqrcode\\?ticket=', description: 'The QR code image at WeChat (mp.weixin.qq.com/cgi-bin/showqrcode?ticket=…).' },
    );
  }
  if (web?.scan || web?.mpQr) {
    schemas.ScanWait = {
      oneOf: [
        { type: 'object', required: ['status'], properties: { status: { enum: ['pending', 'scanned'] } }, additionalProperties: false },
        {
          type: 'object',
          required: ['status', 'expires_in'],
          properties: { status: { const: 'confirmed' }, expires_in: SECONDS },
          additionalProperties: false,
        },
      ],
    };
  }
  if (web?.scan) {
    schemas.ScanTicket = ticketSchema(
      'Single use; in the QR code.',
      'Seconds the ticket waits for its scan and confirmation (web.scan.ticketTtl).',
      { pattern: '^data:image/[a-z]+;base64,[A-Za-z0-9+/]+={0,2}$', description: 'The mini-program code as a data: URL.' },
    );
  }

  const securitySchemes: Obj = {
    bearer: { type: 'http', scheme: 'bearer', description: `The token from POST ${e.login}.` },
  };
  if (web && cookies) {
    securitySchemes.sessionCookie = {
      type: 'apiKey',
      in: 'cookie',
      name: cookies.session,
      description:
        `The session cookie of web logins (HttpOnly${cookies.secure ? ', Secure' : ''}, SameSite=Lax). A request that changes something with it must come from an allowed page: ` +
        (web.cookie.csrf === 'double-submit' ? `X-CSRF-Token with the value of the \`${cookies.csrf}\` cookie.` : 'its Origin (or Referer) is web.publicUrl\'s or one of web.origins.') +
        ' A request with an Authorization header is judged by that header alone.',
    };
  }

  return {
    openapi: '3.1.0',
    info: {
      title: 'wxgate',
      version: packageVersion(),
      description:
        'The endpoints wxgate answers itself: logins and sessions for WeChat mini-programs' +
        (web ? ' and web logins' : '') +
        ', health and metrics. Paths match case-insensitively, with or without one trailing slash; GET endpoints answer HEAD too, and any other method answers 405 `method_not_allowed` with an Allow header. Everything else is proxied to the configured routes.',
    },
    ...(web ? { servers: [{ url: web.publicUrl }] } : {}),
    tags: [
      { name: 'session', description: 'Mini-program login and sessions.' },
      { name: 'mini-program', description: 'WeChat open data and phone numbers for a session.' },
      { name: 'operations', description: 'Health, readiness and metrics.' },
      ...(web ? [{ name: 'web', description: 'Browser logins with WeChat OAuth.' }] : []),
      ...(web?.scan ? [{ name: 'scan', description: 'Scan to log in on a PC with the mini-program.' }] : []),
      ...(web?.mpQr ? [{ name: 'mpqr', description: 'Follow the Official Account\'s QR code to log in on a PC, and its server URL for WeChat.' }] : []),
    ],
    paths,
    components: { schemas, securitySchemes },
  };
}

type Add = (path: string, method: string, op: Obj) => void;

/** web.mpQr: the PC page's tickets and long poll, and the server URL WeChat pushes to. */
function mpQrPaths(
  add: Add,
  ok: (description: string, schema: object, headers?: Obj) => Obj,
  q: NonNullable<NonNullable<Config['web']>['mpQr']>,
  sessionCookie: string,
  rateLimited: ErrorCode[],
): void {
  const signed = [
    { name: 'signature', in: 'query', required: true, description: 'sha1 of the sorted web.mpQr.token, timestamp and nonce.', schema: { type: 'string', pattern: '^[0-9a-fA-F]{40}$' } },
    { name: 'timestamp', in: 'query', required: true, description: 'Seconds; at most 5 minutes from the gateway\'s clock.', schema: { type: 'string', pattern: '^[0-9]{1,12}$' } },
    { name: 'nonce', in: 'query', required: true, schema: STRING },
  ];
  const text = (description: string) => ({ description, headers: { 'Cache-Control': NO_STORE }, content: { 'text/plain': { schema: STRING } } });
  add('/qr/tickets', 'post', operation({
    id: 'mpQrCreateTicket',
    tag: 'mpqr',
    summary: 'Follow-QR login: a ticket and its Official Account QR code, for the PC page',
    description: 'A temporary QR code (cgi-bin/qrcode/create, QR_STR_SCENE, scene = the ticket). The user scans it in WeChat and follows the Official Account (or, following already, scans): WeChat tells the gateway, and the page\'s long poll gets the session. The secret is for this PC page only (X-Scan-Secret).',
    responses: { '201': ok('A new ticket.', ref('MpQrTicket')) },
    errors: [...rateLimited, ...WECHAT_ERRORS, ...ALWAYS],
  }));
  add('/qr/tickets/{id}', 'get', operation({
    id: 'mpQrWait',
    tag: 'mpqr',
    summary: 'The PC page waits for the follow or scan (long poll); then it gets its own session cookie',
    parameters: [
      { name: 'id', in: 'path', required: true, description: 'The ticket.', schema: { type: 'string', pattern: '^[A-Za-z0-9_-]{22}$' } },
      { name: 'wait', in: 'query', required: false, description: 'Seconds to wait for an answer (0-30).', schema: { type: 'integer', minimum: 0, maximum: 30 } },
      { name: 'X-Scan-Secret', in: 'header', required: true, description: 'The ticket\'s secret from POST /qr/tickets.', schema: { type: 'string', pattern: '^[A-Za-z0-9_-]{43}$' } },
    ],
    responses: {
      '200': ok('Still waiting, or confirmed: then the session cookie is set.', ref('ScanWait'), {
        'Set-Cookie': { description: `With status "confirmed": the session cookie \`${sessionCookie}\`.`, required: false, schema: STRING },
      }),
    },
    errors: ['ticket_not_found', 'ticket_used', 'ticket_expired', ...ALWAYS],
  }));
  if (q.demo) {
    add('/qr/demo', 'get', operation({
      id: 'mpQrDemo',
      tag: 'mpqr',
      summary: 'A demo PC page for follow-QR login',
      responses: {
        '200': {
          description: 'The page (its only outside resource is the QR image at WeChat; a strict CSP with a nonce per answer).',
          headers: {
            'Cache-Control': NO_STORE,
            'Content-Security-Policy': { required: true, schema: STRING },
            'X-Content-Type-Options': { required: true, schema: { type: 'string', const: 'nosniff' } },
          },
          content: { 'text/html': { schema: { type: 'string' } } },
        },
      },
      errors: ['internal_error'],
    }));
  }
  add(q.eventsPath, 'get', operation({
    id: 'mpEventsVerify',
    tag: 'mpqr',
    summary: 'WeChat checks the server URL (服务器配置): signed, it gets echostr back',
    parameters: [...signed, { name: 'echostr', in: 'query', required: true, schema: STRING }],
    responses: { '200': text('echostr, as it came.') },
    errors: ['bad_request', 'mp_signature_invalid', 'mp_replayed', ...ALWAYS],
  }));
  add(q.eventsPath, 'post', operation({
    id: 'mpEventsPush',
    tag: 'mpqr',
    summary: 'WeChat pushes a message or event of the Official Account (subscribe / SCAN of a follow-QR code log the PC in)',
    description: 'Plaintext, or with encrypt_type=aes and msg_signature the safe mode envelope (web.mpQr.encrypt). Answered at once: "success", or with web.mpQr.reply after a login the text reply (encrypted like the push). A signature is good for one body; an event WeChat resends is acted on once and answered alike.',
    parameters: [
      ...signed,
      { name: 'encrypt_type', in: 'query', required: false, schema: { type: 'string', enum: ['aes', 'raw'] } },
      { name: 'msg_signature', in: 'query', required: false, description: 'With encrypt_type=aes: sha1 of the sorted token, timestamp, nonce and Encrypt.', schema: { type: 'string', pattern: '^[0-9a-fA-F]{40}$' } },
      { name: 'openid', in: 'query', required: false, schema: STRING },
    ],
    requestBody: { required: true, content: { 'text/xml': { schema: { type: 'string', description: 'WeChat\'s flat XML message, at most 64 kB.' } } } },
    responses: {
      '200': {
        description: '"success", or the passive reply XML.',
        headers: { 'Cache-Control': NO_STORE },
        content: { 'text/plain': { schema: { type: 'string', const: 'success' } }, 'application/xml': { schema: { type: 'string', pattern: '^<xml>' } } },
      },
    },
    errors: ['bad_request', 'mp_message_invalid', 'mp_signature_invalid', 'mp_replayed', 'payload_too_large', ...ALWAYS],
  }));
}

/** A PC login ticket's answer (scan-to-login, follow-QR): the same fields, its own descriptions and QR form. */
function ticketSchema(ticket: string, expiresIn: string, qr: { pattern: string; description: string }): Obj {
  return {
    type: 'object',
    required: ['ticket', 'secret', 'expires_in', 'qr'],
    properties: {
      ticket: { type: 'string', pattern: '^[A-Za-z0-9_-]{22}$', description: ticket },
      secret: { type: 'string', pattern: '^[A-Za-z0-9_-]{43}$', description: 'For this page only: send it as X-Scan-Secret.' },
      expires_in: { ...SECONDS, description: expiresIn },
      qr: { type: 'string', ...qr },
    },
    additionalProperties: false,
  };
}

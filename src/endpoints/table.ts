import { z } from 'zod';
import type { Config } from '../config/schema.js';
import type { ErrorCode } from '../base/errors.js';
import { decryptBody, loginBody, logoutBody, phoneBody } from './bodies.js';
import { ALWAYS, BODY_ERRORS, docContext, json, jsonSchema, ok, ref, WECHAT_ERRORS, type DocContext, type Obj } from './docs.js';
import { webEndpoints } from './web.js';

/**
 * The gateway's own endpoints, one row each, as this configuration serves them. The table drives the
 * koa router (server/router.ts binds `handler`), the body validation (`body`), the OpenAPI document
 * (server/openapi.ts, from `doc`), and which paths are never proxied (match.ts, check-route).
 */

/** The handler a row is served by (server/router.ts has one binding for each). */
export type HandlerName =
  | 'login' | 'session' | 'logout' | 'decrypt' | 'phone' | 'healthz' | 'readyz' | 'openapi' | 'metrics'
  | 'oauthEntry' | 'oauthAuthorize' | 'oauthCallback'
  | 'scanCreate' | 'scanWait' | 'scanScanned' | 'scanConfirm' | 'scanCancel' | 'scanDemo'
  | 'mpQrCreate' | 'mpQrWait' | 'mpEventsVerify' | 'mpEventsPush' | 'mpQrDemo';

export interface OperationDoc {
  /** the operationId */
  id: string;
  tag: string;
  summary: string;
  description?: string;
  security?: object[];
  parameters?: object[];
  /** a body that is not JSON (JSON bodies are documented from `body`) */
  requestBody?: object;
  /** the success answers; the errors are made from `errors` */
  responses: Obj;
  /** every code an answer can carry, grouped by status in the document */
  errors: ErrorCode[];
}

export interface OwnEndpoint {
  method: 'GET' | 'POST';
  /** as @koa/router takes it (":id" is one segment); matched case-insensitively, with or without one trailing slash */
  path: string;
  /** the label of its metrics and access-log lines */
  route: string;
  handler: HandlerName;
  /** oauthAuthorize / oauthCallback: which OAuth flow */
  provider?: 'mp' | 'open';
  /** counted against limits.login per client IP, in this budget */
  limit?: 'login' | 'scan' | 'qr';
  /** a page a browser navigates to: errors are a small HTML page for Accept: text/html */
  html?: boolean;
  /** a JSON object body, validated before the handler (after `session` when set); `optional`: no body is {} */
  body?: { name: string; schema: z.ZodType; optional?: boolean; description?: string };
  /** a session is needed before the body is read: a mini-program's (POST /login) session, `what` ends the 403 message */
  session?: { miniProgram: string };
  doc: OperationDoc;
}

export interface OwnEndpoints {
  endpoints: OwnEndpoint[];
  /** path prefixes answered by the gateway whatever follows (the web logins'; no route may be under them) */
  prefixes: string[];
}

/** The table for one configuration. */
export function ownEndpoints(config: Config): OwnEndpoints {
  const c = docContext(config);
  const endpoints = [...sessionEndpoints(c), ...miniProgramEndpoints(c), ...operationsEndpoints(c)];
  const web = webEndpoints(c);
  return { endpoints: [...endpoints, ...web.endpoints], prefixes: web.prefixes };
}

function sessionEndpoints(c: DocContext): OwnEndpoint[] {
  const e = c.config.endpoints;
  return [
    {
      method: 'POST', path: e.login, route: 'login', handler: 'login', limit: 'login',
      body: { name: 'LoginRequest', schema: loginBody(c.miniApps) },
      doc: {
        id: 'login', tag: 'session', summary: 'Log in with a wx.login() code',
        description:
          'Spends the code at WeChat (jscode2session) once, whatever number of times and replicas it is presented to within its life, and answers an opaque session token; the session_key stays in the gateway. With `encryptedData` and `iv` (and optionally `rawData` and `signature`) the open data is decrypted with this login\'s session_key and answered as `data`; if it does not open, the login fails.',
        parameters: [
          {
            name: 'X-Wx-Appid', in: 'header', required: false,
            description: 'The mini-program, instead of `appid` in the body (both must agree). Optional when one app is served.',
            schema: { type: 'string', enum: c.miniApps },
          },
        ],
        responses: { '200': ok('The session.', ref('LoginResponse')) },
        errors: [
          ...BODY_ERRORS, 'invalid_request', 'unknown_appid', 'decrypt_failed', 'watermark_mismatch', 'signature_invalid', 'code_invalid', 'code_used',
          'session_key_stale', 'user_blocked', 'wechat_rate_limited', ...c.rateLimited, ...WECHAT_ERRORS, ...ALWAYS,
        ],
      },
    },
    {
      method: 'GET', path: e.session, route: 'session', handler: 'session',
      doc: {
        id: 'getSession', tag: 'session', summary: 'The current session (the server side of wx.checkSession())',
        description: 'With `verify=wechat` (mini-program sessions), WeChat is asked too whether the session_key the gateway holds is still the user\'s (wxa/checksession, answers kept a minute): `401 session_key_stale` when not.',
        security: c.sessionAuth,
        parameters: [{ name: 'verify', in: 'query', required: false, description: 'Also ask WeChat whether the session_key is still valid.', schema: { type: 'string', enum: ['wechat'] } }],
        responses: { '200': ok('Who the session is, and for how long it lasts if unused.', ref('Session')) },
        errors: ['bad_request', 'unauthorized', 'session_key_stale', 'app_not_allowed', ...WECHAT_ERRORS, 'wechat_rate_limited', ...ALWAYS],
      },
    },
    {
      method: 'POST', path: e.logout, route: 'logout', handler: 'logout',
      body: { name: 'LogoutRequest', schema: logoutBody(), optional: true, description: 'Optional.' },
      doc: {
        id: 'logout', tag: 'session', summary: 'End the session, or with `{"all": true}` every session of the user',
        description: 'A token that is no longer valid is logged out all the same (idempotent); `all` needs a valid one.',
        security: c.sessionAuth,
        parameters: c.csrfHeader,
        responses: {
          '204': {
            description: 'Logged out. With the session cookie, the answer deletes it.',
            ...(c.cookies ? { headers: { 'Set-Cookie': { description: `Deletes \`${c.cookies.session}\` (Max-Age=0) when it was the credential.`, required: false, schema: { type: 'string' } } } } : {}),
          },
        },
        errors: [...BODY_ERRORS, 'invalid_request', 'unauthorized', ...c.csrf, ...ALWAYS],
      },
    },
  ];
}

function miniProgramEndpoints(c: DocContext): OwnEndpoint[] {
  const e = c.config.endpoints;
  return [
    {
      method: 'POST', path: e.decrypt, route: 'decrypt', handler: 'decrypt',
      session: { miniProgram: 'This endpoint decrypts open data' },
      body: { name: 'DecryptRequest', schema: decryptBody() },
      doc: {
        id: 'decrypt', tag: 'mini-program', summary: 'Decrypt WeChat open data with the session\'s session_key',
        description:
          'wx.getWeRunData, share and group info and the like (not avatar and nickname: wx.getUserProfile has returned no real profile since 2022; use the chooseAvatar / nickname components): `encryptedData` and `iv` (and optionally `rawData` with its `signature`) opened with the user\'s current session_key, which never leaves the gateway. The watermark is checked (this app, with a timestamp) and left out of `data`.',
        security: c.sessionAuth,
        parameters: c.csrfHeader,
        responses: { '200': ok('The decrypted data.', ref('DecryptResponse')) },
        // (a failed decryption asks WeChat whether the key is still valid; when WeChat cannot say, the decryption error stands)
        errors: ['unauthorized', 'session_key_stale', ...c.csrf, ...c.webSessions, ...BODY_ERRORS, 'invalid_request', 'decrypt_failed', 'watermark_mismatch', 'signature_invalid', ...ALWAYS],
      },
    },
    {
      method: 'POST', path: e.phone, route: 'phone', handler: 'phone',
      session: { miniProgram: 'This endpoint gets phone numbers' },
      body: { name: 'PhoneRequest', schema: phoneBody() },
      doc: {
        id: 'phone', tag: 'mini-program', summary: 'The user\'s phone number from a getPhoneNumber button code',
        description: 'Calls wxa/business/getuserphonenumber with the app\'s access_token and the session\'s openid. The number is kept with the user, for every session of theirs (routes[].forwardPhone sends it upstream as X-Wx-Phone); within limits.phone.window of the grant a new code is answered with it (source: kept) without calling WeChat (each call is paid), unless force is true.',
        security: c.sessionAuth,
        parameters: c.csrfHeader,
        responses: { '200': ok('The phone number, as WeChat gives it.', ref('PhoneNumber')) },
        errors: ['unauthorized', ...c.csrf, ...c.webSessions, ...BODY_ERRORS, 'invalid_request', 'phone_code_invalid', 'wechat_rate_limited', ...WECHAT_ERRORS, ...ALWAYS],
      },
    },
  ];
}

function operationsEndpoints(c: DocContext): OwnEndpoint[] {
  const { endpoints: e, metrics } = c.config;
  const rows: OwnEndpoint[] = [
    {
      method: 'GET', path: e.healthz, route: 'healthz', handler: 'healthz',
      doc: { id: 'healthz', tag: 'operations', summary: 'Liveness: the process answers', responses: { '200': ok('Alive.', ref('Health')) }, errors: ['internal_error'] },
    },
    {
      method: 'GET', path: e.readyz, route: 'readyz', handler: 'readyz',
      doc: { id: 'readyz', tag: 'operations', summary: 'Readiness: the session store answers', responses: { '200': ok('Ready.', ref('Ready')) }, errors: ['not_ready', 'internal_error'] },
    },
  ];
  if (metrics.enabled && metrics.port === undefined) {
    rows.push({
      method: 'GET', path: metrics.path, route: 'metrics', handler: 'metrics',
      doc: {
        id: 'metrics', tag: 'operations', summary: 'Prometheus metrics',
        responses: { '200': { description: 'The metrics in the Prometheus text format.', content: { 'text/plain': { schema: { type: 'string' } } } } },
        errors: ['internal_error'],
      },
    });
  }
  const document = z.looseObject({ openapi: z.string(), info: z.looseObject({}), paths: z.looseObject({}) });
  rows.push({
    method: 'GET', path: e.openapi, route: 'openapi', handler: 'openapi',
    doc: {
      id: 'openapi', tag: 'operations', summary: 'This description of the gateway\'s own endpoints (OpenAPI 3.1)',
      responses: { '200': { description: 'The OpenAPI document.', content: json(jsonSchema(document)) } },
      errors: ['internal_error'],
    },
  });
  return rows;
}

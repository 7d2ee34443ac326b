import { z } from 'zod';
import { mpQrApp, type Config } from '../config/schema.js';
import type { ErrorCode } from '../base/errors.js';
import { WebCookies } from '../request/cookies.js';

/** The pieces the endpoint table's OpenAPI parts are made of, and what of the configuration they depend on. */

export type Obj = Record<string, unknown>;

export const STRING = { type: 'string' } as const;
export const NO_STORE = { description: 'The answer is never cached.', required: true, schema: { type: 'string', const: 'no-store' } } as const;
/** What koa writes as the body of a redirect: "Redirecting to <url>." */
export const REDIRECT_BODY = {
  'text/plain': { schema: { type: 'string', description: 'Redirecting to <Location>.' } },
  'text/html': { schema: { type: 'string', description: 'Redirecting to <Location>. (when the client accepts HTML)' } },
} as const;

/** The request body could not be read as a JSON object of the allowed size. */
export const BODY_ERRORS: ErrorCode[] = ['bad_request', 'invalid_json', 'payload_too_large', 'unsupported_media_type'];
/** A WeChat call that failed in a passing or unexpected way. */
export const WECHAT_ERRORS: ErrorCode[] = ['wechat_error', 'wechat_unavailable', 'wechat_quota_exceeded', 'wechat_timeout'];
/** Anything that reads or writes the session (or web) store, and anything at all. */
export const ALWAYS: ErrorCode[] = ['session_store_unavailable', 'internal_error'];

export const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
export const json = (schema: object) => ({ 'application/json': { schema } });

/** A zod schema as the JSON Schema of an OpenAPI document (2020-12, without $schema; safe-integer bounds left out). */
export function jsonSchema(schema: z.ZodType): Obj {
  const out = z.toJSONSchema(schema, { io: 'input', target: 'draft-2020-12', override: unbounded }) as Obj;
  delete out.$schema;
  return out;
}

/** z.int()'s implied bounds (±2^53-1) say nothing a reader needs. */
export function unbounded({ jsonSchema: s }: { jsonSchema: Obj }): void {
  if (s.maximum === Number.MAX_SAFE_INTEGER) delete s.maximum;
  if (s.minimum === Number.MIN_SAFE_INTEGER) delete s.minimum;
}

/** The ticket in the path: one segment, as the QR code's scene carries it. */
export const TICKET_ID = { type: 'string', pattern: '^[A-Za-z0-9_-]{22}$' } as const;
/** ?wait= of the long polls. */
export const WAIT = { name: 'wait', in: 'query', required: false, description: 'Seconds to wait for an answer (0-30).', schema: { type: 'integer', minimum: 0, maximum: 30 } };

/** A JSON success answer, never cached. */
export const ok = (description: string, schema: object, headers: Obj = {}) => ({
  description,
  headers: { 'Cache-Control': NO_STORE, ...headers },
  content: json(schema),
});

/** A demo page: HTML with a strict CSP. */
export const page = (description: string) => ({
  description,
  headers: {
    'Cache-Control': NO_STORE,
    'Content-Security-Policy': { required: true, schema: STRING },
    'X-Content-Type-Options': { required: true, schema: { type: 'string', const: 'nosniff' } },
  },
  content: { 'text/html': { schema: { type: 'string' } } },
});

/** What the documentation of the endpoints depends on in one configuration. */
export interface DocContext {
  config: Config;
  web: Config['web'];
  cookies: WebCookies | undefined;
  miniApps: string[];
  /** the web logins' apps (Official Account, website, follow-QR) */
  webApps: string[];
  rateLimited: ErrorCode[];
  /** CSRF applies to unsafe requests made with the session cookie, which exists only with web logins */
  csrf: ErrorCode[];
  /** web sessions (OAuth logins, scan-to-login) are refused by the mini-program-only endpoints */
  webSessions: ErrorCode[];
  sessionAuth: object[];
  csrfHeader: object[];
}

export function docContext(config: Config): DocContext {
  const web = config.web;
  const cookies = web ? new WebCookies(web.publicUrl, web.cookie.name) : undefined;
  const qrApp = mpQrApp(config)?.appid;
  const webApps = [...(web?.mp ? [web.mp.appid] : []), ...(web?.open ? [web.open.appid] : []), ...(qrApp && qrApp !== web?.mp?.appid ? [qrApp] : [])];
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
  return {
    config,
    web,
    cookies,
    miniApps: config.wechat.apps.map((a) => a.appid),
    webApps,
    rateLimited: config.limits.login.perIp > 0 ? ['rate_limited'] : [],
    csrf: web ? ['csrf_failed'] : [],
    webSessions: webApps.length || web?.scan ? ['app_not_allowed'] : [],
    sessionAuth: [{ bearer: [] }, ...(cookies ? [{ sessionCookie: [] }] : [])],
    csrfHeader,
  };
}

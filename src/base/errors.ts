import type { Logger } from './logger.js';

/**
 * The one catalogue of errors the gateway answers with. Handlers throw a GatewayError by code;
 * base/error-answer.ts writes `{ error, message }` with the catalogue's status.
 */
export const ERRORS = {
  bad_request: { status: 400, message: 'The request is malformed.' },
  invalid_json: { status: 400, message: 'The body is not valid JSON.' },
  invalid_request: { status: 400, message: 'The request body is missing a required field or has a wrong one.' },
  unknown_appid: { status: 400, message: 'The "appid" is not one this gateway serves.' },
  bad_path: { status: 400, message: 'The request path is not acceptable.' },
  bad_host: { status: 400, message: 'The Host header must be one host name or address with an optional port (RFC 9112 §3.2).' },
  decrypt_failed: { status: 400, message: 'The data does not decrypt with the session key of this login.' },
  watermark_mismatch: { status: 400, message: 'The decrypted data was not made for this app (watermark).' },
  phone_code_invalid: { status: 400, message: 'WeChat rejected the phone number code (invalid, expired, used, or not this user\'s); ask the user again.' },
  signature_invalid: { status: 400, message: 'The signature does not match rawData and the session key.' },
  state_invalid: { status: 400, message: 'This login link is not valid in this browser (expired, tampered with, or started elsewhere); start the login again.' },
  state_used: { status: 400, message: 'This login link was already used; start the login again.' },
  web_login_unavailable: { status: 400, message: 'No web login configured here fits this browser.' },
  redirect_not_allowed: { status: 400, message: 'The redirect target is not on the gateway\'s allow-list (web.redirects).' },
  mp_message_invalid: { status: 400, message: 'The pushed message is not WeChat\'s XML, does not decrypt with web.mpQr.encodingAESKey, or is not in the mode web.mpQr.encrypt sets.' },
  unauthorized: { status: 401, message: 'A valid session token is required (Authorization: Bearer <token>); log in again.' },
  code_invalid: { status: 401, message: 'WeChat rejected the login code as invalid or expired; call wx.login() again.' },
  code_used: { status: 401, message: 'WeChat says this login code was already used; call wx.login() again.' },
  session_key_stale: { status: 401, message: 'The user logged in again since this session began; this data was made for an older login: log in again.' },
  user_blocked: { status: 403, message: 'WeChat reports this user as high-risk and blocked the login.' },
  app_not_allowed: { status: 403, message: 'This route does not serve the app of this session.' },
  login_denied: { status: 403, message: 'The user did not allow the login in WeChat.' },
  csrf_failed: { status: 403, message: 'A request that changes something with the session cookie must come from an allowed page (Origin, or the CSRF token).' },
  mp_signature_invalid: { status: 403, message: 'This message push does not carry WeChat\'s signature for web.mpQr.token (signature, timestamp, nonce; msg_signature when encrypted).' },
  mp_replayed: { status: 403, message: 'This message push is stale (its timestamp is more than 5 minutes off) or replays a signature already used with another body.' },
  not_found: { status: 404, message: 'No route matches this path.' },
  ticket_not_found: { status: 404, message: 'No such scan-to-login ticket.' },
  method_not_allowed: { status: 405, message: 'This method is not allowed on this endpoint.' },
  ticket_cancelled: { status: 409, message: 'The login was cancelled on the phone; show a new QR code.' },
  ticket_already_confirmed: { status: 409, message: 'This ticket was confirmed already.' },
  ticket_used: { status: 409, message: 'This ticket has already logged a browser in; show a new QR code.' },
  ticket_expired: { status: 410, message: 'The QR code has expired; show a new one.' },
  payload_too_large: { status: 413, message: 'The request body is too large.' },
  unsupported_media_type: { status: 415, message: 'The body must be JSON (Content-Type: application/json).' },
  wechat_rate_limited: { status: 429, message: "WeChat limits how often one user may log in (100 times a minute); retry after the time in Retry-After." },
  rate_limited: { status: 429, message: 'Too many requests from this address; retry after the time in Retry-After.' },
  internal_error: { status: 500, message: 'Internal error.' },
  wechat_error: { status: 502, message: 'WeChat returned an unexpected answer.' },
  upstream_unavailable: { status: 502, message: 'The upstream service could not be reached.' },
  wechat_unavailable: { status: 503, message: 'WeChat is unavailable or busy; retry later.' },
  wechat_quota_exceeded: { status: 503, message: "WeChat's daily API quota for this app is used up; retry later." },
  session_store_unavailable: { status: 503, message: 'The session store is unavailable; retry later (your session is kept).' },
  not_ready: { status: 503, message: 'Not ready.' },
  wechat_timeout: { status: 504, message: 'WeChat did not answer in time; retry later.' },
  upstream_timeout: { status: 504, message: 'The upstream service did not answer in time.' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERRORS;

export class GatewayError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly headers?: Record<string, string>;
  /** Extra detail for the log line only; never sent to the client. */
  readonly detail?: Record<string, unknown>;
  /** A whole HTML page for a browser that navigates (Accept: text/html), instead of the generic error page. */
  readonly page?: string;

  constructor(
    code: ErrorCode,
    opts: { message?: string; headers?: Record<string, string>; detail?: Record<string, unknown>; page?: string; cause?: unknown } = {},
  ) {
    super(opts.message ?? ERRORS[code].message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'GatewayError';
    this.code = code;
    this.status = ERRORS[code].status;
    this.headers = opts.headers;
    this.detail = opts.detail;
    this.page = opts.page;
  }
}

/** 401 unauthorized with its WWW-Authenticate challenge; `error="invalid_token"` when a token was given. */
export function unauthorized(tokenGiven: boolean): GatewayError {
  return new GatewayError('unauthorized', {
    headers: { 'WWW-Authenticate': tokenGiven ? 'Bearer realm="wxgate", error="invalid_token"' : 'Bearer realm="wxgate"' },
  });
}

/**
 * An error of a lower part that knows how the gateway answers it (a store down: 503, a blocked user:
 * 403), so this file needs to know none of them; `warn`: the log line such an answer deserves.
 */
export interface Answerable {
  gatewayError(): GatewayError;
  readonly warn?: string;
}

function answerable(err: unknown): err is Error & Answerable {
  return err instanceof Error && typeof (err as Partial<Answerable>).gatewayError === 'function';
}

/** Anything a handler threw, as the catalogue's error; unexpected ones are logged here. */
export function toGatewayError(err: unknown, log: Logger, route: string | undefined): GatewayError {
  if (err instanceof GatewayError) return err;
  if (answerable(err)) {
    if (err.warn) log.warn({ err: err.message, route }, err.warn);
    return err.gatewayError();
  }
  if ((err as { status?: number }).status === 405) return new GatewayError('method_not_allowed');
  log.error({ err, route }, 'request failed');
  return new GatewayError('internal_error');
}


import type { ErrorCode } from '../base/errors.js';
import { WechatError } from './types.js';

/**
 * The one table of WeChat's errcodes: what each means to the gateway. Everything that reads an errcode
 * (the error answers, the access_token retries, the log hints, the dev simulator's errmsg) reads it here.
 */
export interface Errcode {
  /** WeChat's errmsg for it (what the dev simulator answers, followed by a rid) */
  errmsg: string;
  /** the gateway's answer to a call refused with it, whatever the API */
  error?: ErrorCode;
  /** the answer when it depends on the API (by WechatError.api); others get `error` or wechat_error */
  byApi?: Readonly<Record<string, ErrorCode>>;
  /** a passing failure: the same call may succeed when made again (stable_token is retried) */
  retryable?: true;
  /** the access_token the call carried is not (or no longer) good: get one again, call again */
  tokenInvalid?: true;
  /** what the operator should check, in the log line of the refused call */
  hint?: string;
}

const CODE_INVALID = { jscode2session: 'code_invalid', oauth2_access_token: 'code_invalid', getuserphonenumber: 'phone_code_invalid' } as const;

export const ERRCODES: Readonly<Record<number, Errcode>> = {
  [-1]: { errmsg: 'system error', error: 'wechat_unavailable', retryable: true },
  40001: { errmsg: 'invalid credential, access_token is invalid or not latest', tokenInvalid: true },
  40002: { errmsg: 'invalid grant_type' },
  40003: { errmsg: 'invalid openid' },
  40013: { errmsg: 'invalid appid', hint: 'the appid is not valid: check wechat.apps' },
  40014: { errmsg: 'invalid access_token', tokenInvalid: true },
  40029: { errmsg: 'invalid code', byApi: CODE_INVALID },
  40030: { errmsg: 'invalid refresh_token' },
  40097: { errmsg: 'invalid args' },
  40125: { errmsg: 'invalid appsecret', hint: 'the app secret is wrong: check wechat.apps[].secret' },
  40129: { errmsg: 'invalid scene' },
  40163: { errmsg: 'code been used', byApi: { jscode2session: 'code_used', oauth2_access_token: 'code_used' } },
  40164: { errmsg: 'invalid ip, not in whitelist', hint: "this server's IP is not in the app's IP whitelist" },
  40169: { errmsg: 'invalid length for scene, or the data is not json string' },
  40226: { errmsg: 'invalid user, high-risk user', byApi: { jscode2session: 'user_blocked' } },
  40243: { errmsg: 'AppSecret is frozen', hint: 'the app secret is frozen' },
  41001: { errmsg: 'access_token missing' },
  41002: { errmsg: 'appid missing', hint: 'appid missing' },
  41003: { errmsg: 'refresh_token missing' },
  41004: { errmsg: 'appsecret missing', hint: 'secret missing' },
  41008: { errmsg: 'missing code' },
  41009: { errmsg: 'missing openid' },
  41030: { errmsg: 'invalid page' },
  42001: { errmsg: 'access_token expired', tokenInvalid: true },
  45009: { errmsg: 'reach max api daily quota limit', error: 'wechat_quota_exceeded', hint: "the app's daily quota for this API is spent" },
  // WeChat's per-minute limit (of one user's logins, or of an API): Retry-After is nextMinuteRetryAfter()
  45011: { errmsg: 'api minute-quota reach limit  mustslower  retry next minute', error: 'wechat_rate_limited', hint: 'called too often; retry later' },
  47001: { errmsg: 'data format error' },
  48001: { errmsg: 'api unauthorized' },
  87008: { errmsg: 'invalid sig_method' },
  // checksession / resetusersessionkey: the signature was not made with the user's current session_key
  87009: { errmsg: 'invalid signature' },
};

/** WeChat's errcode for a session_key that is no longer the user's (checksession answers false). */
export const SESSION_KEY_INVALID = 87009;

/** The table's row of a refused call, if it was refused with an errcode. */
function rowOf(err: unknown): Errcode | undefined {
  return err instanceof WechatError && err.kind === 'errcode' && err.errcode !== undefined ? ERRCODES[err.errcode] : undefined;
}

/**
 * How a failed WeChat call is answered: timeouts 504, unreachable 503, an unreadable answer 502; an
 * errcode as the table says (busy -1 503, 45011 429, 45009 503, a spent or invalid code by API), any
 * other errcode 502.
 */
export function wechatErrorFor(err: { kind: string; api?: string; errcode?: number }): ErrorCode {
  if (err.kind === 'timeout') return 'wechat_timeout';
  if (err.kind === 'network') return 'wechat_unavailable';
  if (err.kind === 'bad_response' || err.errcode === undefined) return 'wechat_error';
  const row = ERRCODES[err.errcode];
  return (err.api !== undefined ? row?.byApi?.[err.api] : undefined) ?? row?.error ?? 'wechat_error';
}

/** WeChat refused the access_token the call carried (40001, 40014, 42001). */
export const isTokenError = (err: unknown): boolean => rowOf(err)?.tokenInvalid === true;

/** A failure that may pass: no answer, an unreadable one (HTTP 5xx), or a retryable errcode (-1). */
export const isPassing = (err: unknown): boolean => err instanceof WechatError && (err.kind !== 'errcode' || rowOf(err)?.retryable === true);

/** What the operator should check for this errcode, for the log line. */
export const hintFor = (errcode: number | undefined): string | undefined => (errcode === undefined ? undefined : ERRCODES[errcode]?.hint);

/**
 * Retry-After for WeChat's 45011 ("api minute-quota reach limit, must slower, retry next minute"): the
 * seconds to the next minute boundary (1-60), when WeChat's per-minute count starts again.
 */
export function nextMinuteRetryAfter(now = Date.now()): string {
  return String(Math.ceil((60_000 - (now % 60_000)) / 1000));
}

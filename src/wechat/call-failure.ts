import { GatewayError } from '../base/errors.js';
import { AccessTokenError } from './token-sources.js';
import { nextMinuteRetryAfter, wechatErrorFor } from './errcodes.js';
import { WechatError } from './types.js';

/**
 * How a failed WeChat call that needed an access_token is answered: no valid token, 503 with
 * Retry-After (the token is being fetched or WeChat refuses it); WeChat's own failure mapped by the
 * errcode table, logged once with `what` for the operator. Anything else is not WeChat's: thrown on.
 */
export function wechatCallFailure(err: unknown, appid: string, what: string, log?: { warn(obj: object, msg: string): void }): GatewayError {
  if (err instanceof AccessTokenError) {
    return new GatewayError('wechat_unavailable', {
      message: 'No valid WeChat access_token for this app right now; retry later.',
      headers: { 'Retry-After': '5' },
      detail: { appid, reason: err.message },
    });
  }
  if (!(err instanceof WechatError)) throw err;
  log?.warn({ appid, kind: err.kind, errcode: err.errcode, errmsg: err.errmsg }, what);
  const code = wechatErrorFor(err);
  const detail = { appid, kind: err.kind, errcode: err.errcode };
  if (code === 'wechat_rate_limited') {
    // 45011, WeChat's per-minute limit: its count starts again at the next minute
    return new GatewayError(code, { message: 'WeChat asks to slow down (its per-minute limit); retry after the time in Retry-After.', headers: { 'Retry-After': nextMinuteRetryAfter() }, detail });
  }
  return new GatewayError(code, { detail });
}

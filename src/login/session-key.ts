import { hash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { GatewayError } from '../base/errors.js';
import { wechatCallFailure } from '../wechat/call-failure.js';
import type { AccessTokens } from '../wechat/access-token.js';
import type { WechatClient } from '../wechat/client.js';

/**
 * session_key health at WeChat (issue 16 item 3), through the WeChat client and the app's shared
 * access_token: `wxa/checksession` (is the key the gateway holds still the user's?) and
 * `wxa/resetusersessionkey` (kill it at WeChat). The key itself never leaves the gateway: WeChat gets its
 * login state signature only.
 */
export interface SessionKeys {
  /**
   * True when WeChat still takes the key, false when it no longer does (87009). Throws GatewayError when
   * WeChat cannot say. With `cached`, an answer from the last minute may do (see CHECK_TTL).
   */
  check(appid: string, openid: string, sessionKey: string, opts?: { cached?: boolean }): Promise<boolean>;
  /** Replaces the user's key at WeChat (the old one stops working). Throws GatewayError when that fails. */
  reset(appid: string, openid: string, sessionKey: string): Promise<void>;
}


/**
 * `check` answers are kept for a minute per (user, key) in this process, so a client polling
 * GET /session?verify=wechat costs WeChat one call a minute, not one per request (a key WeChat dropped
 * never comes back; one it takes may be dropped meanwhile, known at the next call after the minute).
 */
const CHECK_TTL = 60_000;

export function sessionKeys(wechat: WechatClient, accessTokens: AccessTokens): SessionKeys {
  const checked = new LRUCache<string, boolean>({ max: 10_000, ttl: CHECK_TTL });
  const id = (appid: string, openid: string, key: string) => hash('sha256', `${appid}\n${openid}\n${key}`, 'base64url');
  return {
    async check(appid, openid, sessionKey, o = {}) {
      const k = id(appid, openid, sessionKey);
      const known = checked.get(k);
      // a key WeChat dropped stays dropped; one it took may have been dropped since
      if (known === false || (known === true && o.cached)) return known;
      try {
        const valid = await accessTokens.withToken(appid, (token) => wechat.checkSessionKey(token, openid, sessionKey));
        checked.set(k, valid);
        return valid;
      } catch (err) {
        throw wechatCallFailure(err, appid, 'a session_key call to WeChat failed');
      }
    },
    async reset(appid, openid, sessionKey) {
      try {
        await accessTokens.withToken(appid, (token) => wechat.resetUserSessionKey(token, openid, sessionKey));
        checked.set(id(appid, openid, sessionKey), false);
      } catch (err) {
        throw wechatCallFailure(err, appid, 'a session_key call to WeChat failed');
      }
    },
  };
}

/** 401 session_key_stale when WeChat no longer takes the key the gateway holds for the session's user. */
export function keyStaleAtWechat(): GatewayError {
  return new GatewayError('session_key_stale', {
    message: "WeChat no longer accepts this login's session_key (the mini-program logged in again elsewhere, or the key expired): log in again.",
  });
}

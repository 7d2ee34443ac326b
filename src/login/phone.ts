import type { Context } from 'koa';
import type { Config } from '../config/schema.js';
import { wechatCallFailure } from '../wechat/call-failure.js';
import type { ActiveSession, Sessions } from '../session/sessions.js';
import type { AccessTokens } from '../wechat/access-token.js';
import type { PhoneNumber, WechatClient } from '../wechat/client.js';
import type { PhoneBody } from '../endpoints/bodies.js';

interface Logger {
  warn(obj: object, msg: string): void;
}

/** The number as the upstream gets it (X-Wx-Phone): E.164, "+" country code and number, digits only. */
export function e164(p: PhoneNumber): string | undefined {
  const n = `+${p.countryCode}${p.purePhoneNumber}`;
  return /^\+[1-9]\d{5,17}$/.test(n) ? n : undefined;
}

/**
 * POST /wx/phone { code, force? } with the session's token (a mini-program's session, and the body,
 * checked before: endpoints/table.ts): the code from the mini-program's
 * getPhoneNumber button → `wxa/business/getuserphonenumber` with the app's access_token and the session's
 * openid (so WeChat checks the code is this user's) → { phoneNumber, purePhoneNumber, countryCode,
 * source: "wechat" }.
 * The number is kept with the user (every session of theirs, on every device, for routes[].forwardPhone).
 * WeChat charges for each call: within limits.phone.window of the user's grant a new code is answered
 * with the kept number ({ …, source: "kept" }) and WeChat is not called, unless `force: true`. A store
 * that cannot keep the number just now does not fail the answer (logged, and the user can be asked
 * again). Nothing of the code, the token or the number is logged.
 */
export function phoneHandler(deps: {
  config: Config;
  sessions: Sessions;
  wechat: WechatClient;
  accessTokens: AccessTokens;
  log: Logger;
  now?: () => number;
}) {
  const { config, sessions, wechat, accessTokens, log } = deps;
  const now = deps.now ?? Date.now;
  return async function phone(ctx: Context): Promise<void> {
    const session = ctx.state.session as ActiveSession;
    const body = ctx.state.body as PhoneBody;
    const code = body.code;
    const window = config.limits.phone.window;
    if (body.force !== true && window > 0) {
      const kept = await sessions.store.getPhone(session.appid, session.openid);
      if (kept && now() - kept.grantedAt < window) {
        ctx.set('Cache-Control', 'no-store');
        ctx.body = { phoneNumber: kept.phoneNumber, purePhoneNumber: kept.purePhoneNumber, countryCode: kept.countryCode, source: 'kept' };
        return;
      }
    }
    try {
      const phone = await accessTokens.withToken(session.appid, (token) => wechat.getPhoneNumber(token, code, session.openid));
      if (e164(phone)) {
        await sessions.setPhone(session, { ...phone, grantedAt: now() }).catch((err: Error) => {
          log.warn({ appid: session.appid, err: err.message }, 'could not keep the phone number with the user');
        });
      }
      ctx.set('Cache-Control', 'no-store');
      ctx.body = { ...phone, source: 'wechat' };
    } catch (err) {
      throw wechatCallFailure(err, session.appid, 'WeChat refused the phone number', log);
    }
  };
}

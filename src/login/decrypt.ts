import type { Context, Next } from 'koa';
import type { Config } from '../config/schema.js';
import { GatewayError } from '../base/errors.js';
import type { ActiveSession, Sessions } from '../session/sessions.js';
import type { DecryptBody, UserDataFields } from '../endpoints/bodies.js';
import { decryptUserData, verifySignature } from '../wechat/userdata.js';
import { keyStaleAtWechat, type SessionKeys } from './session-key.js';

/**
 * WeChat open data (wx.getWeRunData, getPhoneNumber's old form, share info; wx.getUserProfile's is a placeholder since 2022, ...), decrypted with the
 * session user's current session_key, which never leaves the gateway:
 *   POST /wx/decrypt  { encryptedData, iv, rawData?, signature? }  → { data }
 *   POST /login       the same optional fields next to "code"     → { token, expires_in, data }
 * `data` is the decrypted object without its `watermark` (checked here: its appid must be the session's
 * app, and it must carry a timestamp). Nothing of the data, the key or the token is logged.
 */

const invalid = (message: string) => new GatewayError('invalid_request', { message });

/**
 * True when the user has logged in again since this session was made: then the stored session_key is
 * that later login's, and data this session's device got from WeChat before was made with the old key.
 * The user's sessions are listed oldest first; only failed decryptions pay for this read.
 */
async function superseded(sessions: Sessions, session: ActiveSession): Promise<boolean> {
  const list = await sessions.store.list(session.appid, session.openid);
  const at = list.findIndex((s) => s.tokenHash === session.tokenHash);
  if (at >= 0) return at < list.length - 1;
  return list.some((s) => s.record.createdAt > session.createdAt);
}

const stale = () => new GatewayError('session_key_stale');

/**
 * 403 app_not_allowed unless the session was made by the mini-program's own login (POST /login): only
 * those have a session_key and a device WeChat gave a code to. Decided by the session's flow, not its app:
 * a PC's scan-to-login session is of the mini-program's app all the same. `what` ends the message.
 */
export function requireMiniProgram(config: Config, session: ActiveSession, what: string): void {
  if (session.flow !== 'miniprogram' || !config.wechat.apps.some((a) => a.appid === session.appid)) {
    throw new GatewayError('app_not_allowed', { message: `${what} for mini-program sessions (POST /login) only, not web logins (OAuth, scan-to-login).` });
  }
}

/**
 * Verifies and decrypts for `session`'s user. With `staleCheck`, a failure (bad signature or undecryptable
 * data) is answered 401 session_key_stale (log in again) when the session is not the user's newest, or,
 * with `keys`, when WeChat says the key the gateway holds is no longer the user's (wxa/checksession: the
 * mini-program logged in again without the gateway, or the key expired); else it is the data's fault
 * (400). When WeChat cannot say, the data's error stands (logged). Only failures pay for these checks.
 */
export async function openUserData(
  sessions: Sessions,
  session: ActiveSession,
  fields: UserDataFields,
  opts: { staleCheck: boolean; keys?: SessionKeys; log?: { warn(obj: object, msg: string): void } },
): Promise<Record<string, unknown>> {
  const key = await sessions.store.getSessionKey(session.appid, session.openid);
  if (key === undefined) throw stale();

  let failure: GatewayError | undefined;
  if (fields.rawData !== undefined && !verifySignature(fields.rawData, fields.signature!, key)) {
    failure = new GatewayError('signature_invalid');
  } else {
    const result = decryptUserData(key, fields.encryptedData, fields.iv, session.appid);
    if (result.ok) return result.data;
    if (result.reason === 'invalid') throw invalid(result.message);
    if (result.reason === 'watermark') throw new GatewayError('watermark_mismatch', { message: result.message });
    failure = new GatewayError('decrypt_failed', { message: result.message });
  }
  if (opts.staleCheck && (await superseded(sessions, session))) throw stale();
  if (opts.staleCheck && opts.keys) {
    let valid = true;
    try {
      valid = await opts.keys.check(session.appid, session.openid, key);
    } catch (err) {
      opts.log?.warn({ appid: session.appid, error: (err as GatewayError).code }, 'could not ask WeChat whether the session_key is valid; answering the decryption error');
    }
    if (!valid) throw keyStaleAtWechat();
  }
  throw failure;
}

/**
 * At /login: decrypts with the session_key of the login that just happened. A failure fails the login:
 * the new session is revoked at once and the error answered (the code is then spent: call wx.login() again).
 */
export async function openUserDataAtLogin(sessions: Sessions, session: ActiveSession, token: string, fields: UserDataFields): Promise<Record<string, unknown>> {
  try {
    return await openUserData(sessions, session, fields, { staleCheck: false });
  } catch (err) {
    await sessions.revoke(token, 'login_failed').catch(() => {});
    throw err;
  }
}

/**
 * Needs a session of a mini-program's own login before anything else (the endpoint table's
 * `session.miniProgram`): `current` is the login handlers' token check; `what` ends the 403 message.
 */
export function miniProgramSession(config: Config, current: (ctx: Context) => Promise<{ session: ActiveSession }>, what: string) {
  return async function miniProgramSession(ctx: Context, next: Next): Promise<void> {
    const { session } = await current(ctx);
    requireMiniProgram(config, session, what);
    await next();
  };
}

/** POST /wx/decrypt for a mini-program session (miniProgramSession), the body validated (endpoints/bodies.ts). */
export function decryptHandler(deps: {
  sessions: Sessions;
  /** wxa/checksession, to tell a stale key from bad data */
  keys?: SessionKeys;
  log?: { warn(obj: object, msg: string): void };
}) {
  const { sessions, keys, log } = deps;
  return async function decrypt(ctx: Context): Promise<void> {
    const session = ctx.state.session as ActiveSession;
    const fields = ctx.state.body as DecryptBody;
    const data = await openUserData(sessions, session, fields, { staleCheck: true, keys, log });
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { data };
  };
}

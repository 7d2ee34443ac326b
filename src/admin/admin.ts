import { createHash, timingSafeEqual } from 'node:crypto';
import Router from '@koa/router';
import Koa, { type Context, type Next } from 'koa';
import { readJsonObject } from '../login/body.js';
import { GatewayError } from '../base/errors.js';
import { writeError } from '../base/error-answer.js';
import type { Logger } from '../base/logger.js';
import { accountId, isAccountId } from '../session/accounts.js';
import type { AccountControls, AuditEntry, Block, Device } from '../session/controls.js';
import type { Sessions } from '../session/sessions.js';
import type { SessionRecord } from '../session/types.js';
import { sessionKeys } from '../login/session-key.js';
import { AccessTokenError, type AccessTokens } from '../wechat/access-token.js';
import type { WechatClient } from '../wechat/client.js';

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * The admin API, on its own listener (config `admin`), for operators and back-office services:
 *   GET    /users/:appid/:openid                 the user's account controls: blocked or not, how many live sessions
 *   POST   /users/:appid/:openid/block           block ({ reason?, expiresIn? seconds | until? ISO time }):
 *                                                every session ends everywhere, logins are refused (403 user_blocked)
 *   DELETE /users/:appid/:openid/block           unblock (also POST /users/:appid/:openid/unblock)
 *   GET    /users/:appid/:openid/events          the user's audit history, newest first (?limit=N)
 *   GET    /users/:appid/:openid/sessions        a user's live sessions: id, flow, times, last activity, device
 *   DELETE /users/:appid/:openid/sessions        revoke them all, on every replica (admin.resetSessionKey: and the key at WeChat)
 *   GET    /users/:appid/:openid/session_key     { valid }: whether WeChat still takes the key the gateway holds
 *   DELETE /users/:appid/:openid/sessions/:id    revoke one, by the id the list gives
 *   GET    /users/:appid/:openid/account         the person this identity belongs to: as GET /accounts/:id
 *   GET    /accounts/:id                         a person (X-User-Id): their identities and every live session of them
 *   DELETE /accounts/:id/sessions                revoke all of those, on every replica
 *   DELETE /users/:appid/:openid/phone           forget the phone number the user granted (every session, every replica)
 *   GET    /apps/:appid/access_token             the app's WeChat access_token, for upstreams that call WeChat APIs
 * Every call needs `Authorization: Bearer <admin.token>`. Blocks, events and devices are shared by every
 * replica through the session store (Redis).
 */
export function createAdminApp(opts: {
  token: string;
  sessions: Sessions;
  /** account controls (blocks, events, devices); without them those endpoints answer 404 */
  controls?: AccountControls;
  /** the sessions' idle lifetime (session.ttl, ms): a session's last activity is its idle deadline minus it */
  ttl?: number;
  bodyLimit?: number;
  accessTokens?: AccessTokens;
  /** with accessTokens: session_key checks and resets at WeChat */
  wechat?: WechatClient;
  /** admin.resetSessionKey: a user revoke also resets the user's session_key at WeChat */
  resetSessionKey?: boolean;
  log: Logger;
}): Koa {
  const { sessions, controls, accessTokens, log } = opts;
  const ttl = opts.ttl ?? 0;
  const bodyLimit = opts.bodyLimit ?? 4096;
  const keys = opts.wechat && accessTokens ? sessionKeys(opts.wechat, accessTokens) : undefined;
  const expected = digest(`Bearer ${opts.token}`);
  const app = new Koa({ proxy: false });
  app.silent = true;

  app.use(async (ctx: Context, next: Next) => {
    try {
      if (!timingSafeEqual(digest(ctx.get('authorization')), expected)) {
        throw new GatewayError('unauthorized', {
          message: 'The admin API needs Authorization: Bearer <admin token>.',
          headers: { 'WWW-Authenticate': 'Bearer realm="wxgate-admin"' },
        });
      }
      await next();
      if (ctx.status === 404 && ctx.body === undefined) throw new GatewayError('not_found', { message: 'No such admin endpoint.' });
    } catch (err) {
      writeError(ctx, err, log);
    }
  });

  const router = new Router();
  const user = (ctx: Context) => ({ appid: String(ctx.params.appid), openid: String(ctx.params.openid) });
  const iso = (ms: number) => new Date(ms).toISOString();
  const needControls = (): AccountControls => {
    if (!controls) throw new GatewayError('not_found', { message: 'Account controls are not running on this gateway.' });
    return controls;
  };
  const blockView = (b: Block | undefined) =>
    b ? { since: iso(b.since), ...(b.reason ? { reason: b.reason } : {}), ...(b.until !== undefined ? { until: iso(b.until) } : {}) } : null;
  const eventView = (e: AuditEntry) => ({ ...e, at: iso(e.at), ...(e.until !== undefined ? { until: iso(e.until) } : {}) });

  router.get('/users/:appid/:openid', async (ctx) => {
    const who = user(ctx);
    const [block, list] = await Promise.all([controls?.blocked(who), sessions.store.list(who.appid, who.openid)]);
    ctx.body = { ...who, blocked: blockView(block), sessions: list.length };
  });
  const block = async (ctx: Context) => {
    const acc = needControls();
    const who = user(ctx);
    const body = ctx.request.length > 0 || ctx.get('transfer-encoding') !== '' ? await readJsonObject(ctx, bodyLimit) : {};
    const { reason, expiresIn, until } = body;
    if (reason !== undefined && (typeof reason !== 'string' || reason.length > 200)) {
      throw new GatewayError('invalid_request', { message: '"reason" must be a string of up to 200 characters.' });
    }
    if (expiresIn !== undefined && until !== undefined) throw new GatewayError('invalid_request', { message: 'Give "expiresIn" or "until", not both.' });
    let end: number | undefined;
    if (expiresIn !== undefined) {
      if (typeof expiresIn !== 'number' || !Number.isInteger(expiresIn) || expiresIn < 1) {
        throw new GatewayError('invalid_request', { message: '"expiresIn" must be a whole number of seconds (1 or more).' });
      }
      end = Date.now() + expiresIn * 1000;
    } else if (until !== undefined) {
      end = typeof until === 'string' ? Date.parse(until) : Number.NaN;
      if (!Number.isFinite(end) || end <= Date.now()) throw new GatewayError('invalid_request', { message: '"until" must be an ISO 8601 time in the future.' });
    }
    // the block first: a login that races the revocation finds it (Sessions.create checks after writing too)
    const b = await acc.block(who, { ...(reason ? { reason: reason as string } : {}), ...(end !== undefined ? { until: end } : {}) });
    const { revoked } = await revokeUser(who);
    await acc.audit({ event: 'block', ...who, by: 'admin', revoked, ...(b.reason ? { reason: b.reason } : {}), ...(b.until !== undefined ? { until: b.until } : {}) });
    log.info({ appid: who.appid, revoked, until: b.until === undefined ? undefined : iso(b.until) }, 'admin: blocked a user');
    ctx.body = { ...who, blocked: blockView(b), revoked };
  };
  const unblock = async (ctx: Context) => {
    const acc = needControls();
    const who = user(ctx);
    const lifted = await acc.unblock(who);
    if (lifted) await acc.audit({ event: 'unblock', ...who, by: 'admin' });
    log.info({ appid: who.appid, lifted }, 'admin: unblocked a user');
    ctx.body = { ...who, blocked: null, lifted };
  };
  router.post('/users/:appid/:openid/block', block);
  router.delete('/users/:appid/:openid/block', unblock);
  router.post('/users/:appid/:openid/unblock', unblock);
  router.get('/users/:appid/:openid/events', async (ctx) => {
    const acc = needControls();
    const who = user(ctx);
    let limit = acc.opts.history;
    if (ctx.query.limit !== undefined) {
      limit = Number(ctx.query.limit);
      if (!Number.isInteger(limit) || limit < 1) throw new GatewayError('bad_request', { message: '"limit" must be a whole number, 1 or more.' });
    }
    const events = await acc.events(who, limit);
    ctx.body = { ...who, events: events.map(eventView) };
  });

  const sessionView = ({ tokenHash, record }: { tokenHash: string; record: SessionRecord }, devices?: Map<string, Device>) => {
    const device = devices?.get(tokenHash);
    return {
      id: tokenHash,
      flow: record.flow,
      createdAt: iso(record.createdAt),
      // the idle deadline moves at most every session.refreshInterval: last activity to within that
      lastActiveAt: iso(Math.max(record.createdAt, record.idleExpiresAt - ttl)),
      idleExpiresAt: iso(record.idleExpiresAt),
      expiresAt: iso(record.expiresAt),
      ...(device?.ua ? { userAgent: device.ua } : {}),
      ...(device?.ip ? { ip: device.ip } : {}),
    };
  };
  router.get('/users/:appid/:openid/sessions', async (ctx) => {
    const { appid, openid } = user(ctx);
    const list = await sessions.store.list(appid, openid);
    const devices = controls ? await controls.devices({ appid, openid }, list.map((s) => s.tokenHash)) : undefined;
    const unionid = list.at(-1)?.record.unionid;
    ctx.body = {
      appid,
      openid,
      account: accountId({ appid, openid, ...(unionid ? { unionid } : {}) }),
      sessions: list.map((s) => sessionView(s, devices)),
    };
  });

  /** A person: their identities, each with its live sessions (oldest first). 404 when none is known. */
  async function account(id: string) {
    const identities = isAccountId(id) ? await sessions.store.identities(id) : [];
    if (identities.length === 0) throw new GatewayError('not_found', { message: 'No such account (or none of its identities has a session).' });
    const out = [];
    for (const who of identities) {
      const list = await sessions.store.list(who.appid, who.openid);
      out.push({ appid: who.appid, openid: who.openid, ...(who.unionid ? { unionid: who.unionid } : {}), sessions: list.map((s) => sessionView(s)) });
    }
    return { id, ...(identities[0]!.unionid ? { unionid: identities[0]!.unionid } : {}), identities: out };
  }
  router.get('/users/:appid/:openid/account', async (ctx) => {
    const { appid, openid } = user(ctx);
    const unionid = await sessions.store.linkedUnionid(appid, openid);
    ctx.body = await account(accountId({ appid, openid, ...(unionid ? { unionid } : {}) }));
  });
  router.get('/accounts/:id', async (ctx) => {
    ctx.body = await account(String(ctx.params.id));
  });
  router.delete('/accounts/:id/sessions', async (ctx) => {
    const id = String(ctx.params.id);
    const identities = isAccountId(id) ? await sessions.store.identities(id) : [];
    let revoked = 0;
    let resets: number | undefined;
    for (const who of identities) {
      const r = await revokeUser(who);
      revoked += r.revoked;
      if (r.reset !== undefined) resets = (resets ?? 0) + (r.reset ? 1 : 0);
    }
    log.info({ account: id, identities: identities.length, revoked, sessionKeysReset: resets }, 'admin: revoked all sessions of an account');
    // in each identity's own history (the count is the person's)
    for (const who of identities) await controls?.audit({ event: 'revoke', appid: who.appid, openid: who.openid, by: 'admin' });
    ctx.body = { revoked, identities: identities.length, ...(resets !== undefined ? { session_keys_reset: resets } : {}) };
  });
  /**
   * Ends every session of the identity on every replica; with admin.resetSessionKey its session_key
   * (mini-program identities) is reset at WeChat too, after the revocation (which never waits on WeChat
   * to happen): true when WeChat did, false when it failed (logged), undefined when there was none.
   */
  async function revokeUser(who: { appid: string; openid: string }): Promise<{ revoked: number; reset?: boolean }> {
    const key = opts.resetSessionKey && keys ? await sessions.store.getSessionKey(who.appid, who.openid) : undefined;
    const revoked = await sessions.revokeAll(who, 'admin');
    if (key === undefined) return { revoked };
    try {
      await keys!.reset(who.appid, who.openid, key);
      return { revoked, reset: true };
    } catch (err) {
      log.warn({ appid: who.appid, error: (err as GatewayError).code ?? 'internal_error' }, 'admin: could not reset the session_key at WeChat');
      return { revoked, reset: false };
    }
  }
  router.delete('/users/:appid/:openid/sessions', async (ctx) => {
    const who = user(ctx);
    const { revoked, reset } = await revokeUser(who);
    log.info({ appid: who.appid, revoked, sessionKeyReset: reset }, 'admin: revoked all sessions of a user');
    await controls?.audit({ event: 'revoke', ...who, by: 'admin', revoked });
    ctx.body = { revoked, ...(reset !== undefined ? { session_key_reset: reset } : {}) };
  });
  router.get('/users/:appid/:openid/session_key', async (ctx) => {
    const who = user(ctx);
    if (!keys) throw new GatewayError('not_found', { message: 'No WeChat client here.' });
    const key = await sessions.store.getSessionKey(who.appid, who.openid);
    if (key === undefined) throw new GatewayError('not_found', { message: 'The gateway holds no session_key for this user (no mini-program session).' });
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { valid: await keys.check(who.appid, who.openid, key) };
  });
  router.delete('/users/:appid/:openid/sessions/:id', async (ctx) => {
    const who = user(ctx);
    const id = String(ctx.params.id);
    // only a session of this user: the id is checked against the user's own list
    const list = await sessions.store.list(who.appid, who.openid);
    // the id as the list gives it, or its last 22 characters (the audit log lines' `session`)
    const found = list.find((s) => s.tokenHash === id || (id.length === 22 && s.tokenHash.endsWith(id)));
    if (!found || !(await sessions.revokeById(found.tokenHash))) throw new GatewayError('not_found', { message: 'No such live session of this user.' });
    log.info({ appid: who.appid }, 'admin: revoked a session');
    await controls?.audit({ event: 'revoke', ...who, by: 'admin', revoked: 1, session: found.tokenHash, flow: found.record.flow });
    ctx.body = { revoked: 1 };
  });
  router.delete('/users/:appid/:openid/phone', async (ctx) => {
    const who = user(ctx);
    const revoked = await sessions.clearPhone(who);
    log.info({ appid: who.appid, revoked }, "admin: revoked a user's phone number");
    ctx.body = { revoked };
  });
  router.get('/apps/:appid/access_token', async (ctx) => {
    const appid = String(ctx.params.appid);
    if (!accessTokens?.has(appid)) throw new GatewayError('not_found', { message: 'No such app (wechat.apps).' });
    try {
      const t = await accessTokens.get(appid);
      ctx.set('Cache-Control', 'no-store');
      ctx.body = { access_token: t.token, expires_in: Math.max(0, Math.floor((t.expiresAt - Date.now()) / 1000)) };
    } catch (err) {
      if (!(err instanceof AccessTokenError)) throw err;
      throw new GatewayError('wechat_unavailable', { message: 'No valid WeChat access_token for this app right now; retry later.', detail: { appid, reason: err.message } });
    }
  });
  app.use(router.routes());
  app.use(router.allowedMethods({ throw: true }));
  return app;
}

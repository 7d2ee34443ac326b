import { createHash, timingSafeEqual } from 'node:crypto';
import Router from '@koa/router';
import Koa, { type Context, type Next } from 'koa';
import { GatewayError, writeError } from '../server/errors.js';
import type { Logger } from '../server/logger.js';
import { accountId, isAccountId } from '../session/accounts.js';
import type { Sessions } from '../session/sessions.js';
import type { SessionRecord } from '../session/types.js';
import { AccessTokenError, type AccessTokens } from '../wechat/access-token.js';

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * The admin API, on its own listener (config `admin`), for operators and back-office services:
 *   GET    /users/:appid/:openid/sessions   a user's live sessions
 *   DELETE /users/:appid/:openid/sessions   revoke them all, on every replica
 *   GET    /users/:appid/:openid/account    the person this identity belongs to: as GET /accounts/:id
 *   GET    /accounts/:id                    a person (X-User-Id): their identities and every live session of them
 *   DELETE /accounts/:id/sessions           revoke all of those, on every replica
 *   DELETE /users/:appid/:openid/phone      forget the phone number the user granted (every session, every replica)
 *   GET    /apps/:appid/access_token        the app's WeChat access_token, for upstreams that call WeChat APIs
 * Every call needs `Authorization: Bearer <admin.token>`.
 */
export function createAdminApp(opts: { token: string; sessions: Sessions; accessTokens?: AccessTokens; log: Logger }): Koa {
  const { sessions, accessTokens, log } = opts;
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
  const sessionView = ({ tokenHash, record }: { tokenHash: string; record: SessionRecord }) => ({
    id: tokenHash,
    flow: record.flow,
    createdAt: new Date(record.createdAt).toISOString(),
    idleExpiresAt: new Date(record.idleExpiresAt).toISOString(),
    expiresAt: new Date(record.expiresAt).toISOString(),
  });
  router.get('/users/:appid/:openid/sessions', async (ctx) => {
    const { appid, openid } = user(ctx);
    const list = await sessions.store.list(appid, openid);
    const unionid = list.at(-1)?.record.unionid;
    ctx.body = {
      appid,
      openid,
      account: accountId({ appid, openid, ...(unionid ? { unionid } : {}) }),
      sessions: list.map(sessionView),
    };
  });

  /** A person: their identities, each with its live sessions (oldest first). 404 when none is known. */
  async function account(id: string) {
    const identities = isAccountId(id) ? await sessions.store.identities(id) : [];
    if (identities.length === 0) throw new GatewayError('not_found', { message: 'No such account (or none of its identities has a session).' });
    const out = [];
    for (const who of identities) {
      const list = await sessions.store.list(who.appid, who.openid);
      out.push({ appid: who.appid, openid: who.openid, ...(who.unionid ? { unionid: who.unionid } : {}), sessions: list.map(sessionView) });
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
    const { identities, revoked } = isAccountId(id) ? await sessions.revokeAccount(id) : { identities: [], revoked: 0 };
    log.info({ account: id, identities: identities.length, revoked }, 'admin: revoked all sessions of an account');
    ctx.body = { revoked, identities: identities.length };
  });
  router.delete('/users/:appid/:openid/sessions', async (ctx) => {
    const who = user(ctx);
    const revoked = await sessions.revokeAll(who);
    log.info({ appid: who.appid, revoked }, 'admin: revoked all sessions of a user');
    ctx.body = { revoked };
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

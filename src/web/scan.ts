import { randomBytes } from 'node:crypto';
import type { Context } from 'koa';
import proxyaddr from 'proxy-addr';
import type { Config } from '../config/schema.js';
import { GatewayError } from '../base/errors.js';
import { wechatCallFailure } from '../wechat/call-failure.js';
import type { ActiveSession, Sessions } from '../session/sessions.js';
import type { AccessTokens } from '../wechat/access-token.js';
import type { WechatClient } from '../wechat/client.js';
import type { WebContext } from './context.js';
import { KEEP_MS, TICKET, ticketSecretHash, ticketWaiter } from './ticket-wait.js';

interface Logger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}


const secretHash = (secret: string) => ticketSecretHash('scan', secret);

/**
 * Scan to log in on a PC with the mini-program (扫码登录):
 *   POST /scan/tickets                  the PC page: a ticket (single use, web.scan.ticketTtl) and its QR code,
 *                                       a mini-program code (wxa/getwxacodeunlimit, scene = the ticket) that
 *                                       opens web.scan.page; plus a secret only this page holds
 *   POST /scan/tickets/:id/scanned      the mini-program page opened from the QR (optional): the PC page
 *                                       shows "scanned, confirm on the phone"
 *   POST /scan/tickets/:id/confirm      the mini-program, with its user's own token: "log that PC in as me"
 *   POST /scan/tickets/:id/cancel       … or "no"
 *   GET  /scan/tickets/:id?wait=25      the PC page, with X-Scan-Secret: waits (long poll) and, once
 *                                       confirmed, gets its own web session as the session cookie;
 *                                       `scanned` at once when the phone scanned it (unless &seen=scanned);
 *                                       a gateway that starts draining (SIGTERM) answers its long polls at
 *                                       once with the ticket's status (Retry-After: 0, on a connection it
 *                                       closes), so the page polls again, on another replica
 * The ticket id is in the QR code for anyone to see; the session goes only to the holder of the secret.
 * Tickets live in the web store (Redis with the redis store), so any replica answers either side.
 */
export function scanHandlers(deps: {
  config: Config;
  web: WebContext;
  sessions: Sessions;
  wechat: WechatClient;
  accessTokens: AccessTokens;
  current: (ctx: Context) => Promise<{ token: string; via: 'bearer' | 'cookie' | undefined; session: ActiveSession }>;
  log: Logger;
  /** aborted when the gateway drains: a long poll answers its ticket's status at once */
  draining?: AbortSignal;
}) {
  const { config, web, sessions, wechat, accessTokens, current, log, draining } = deps;
  const scan = config.web!.scan!;
  const app = scan.app ?? config.wechat.apps[0]!.appid;
  const trust = proxyaddr.compile([...config.server.trustedProxies]);

  function ticketOf(ctx: Context): string {
    const id = String(ctx.params.id ?? '');
    if (!TICKET.test(id)) throw new GatewayError('ticket_not_found');
    return id;
  }

  async function create(ctx: Context): Promise<void> {
    const id = randomBytes(16).toString('base64url');
    const secret = randomBytes(32).toString('base64url');
    let qr;
    try {
      qr = await accessTokens.withToken(app, (token) =>
        wechat.getwxacodeUnlimit(token, { scene: id, page: scan.page, checkPath: scan.checkPath, envVersion: scan.envVersion }),
      );
    } catch (err) {
      throw wechatCallFailure(err, app, 'WeChat did not make the QR code', log);
    }
    const now = Date.now();
    await web.store.createTicket(id, secretHash(secret), now + scan.ticketTtl, KEEP_MS);
    ctx.set('Cache-Control', 'no-store');
    ctx.status = 201;
    ctx.body = {
      ticket: id,
      secret,
      expires_in: Math.floor(scan.ticketTtl / 1000),
      qr: `data:${qr.contentType};base64,${qr.body.toString('base64')}`,
    };
  }

  async function phoneSession(ctx: Context): Promise<ActiveSession> {
    const { session, via } = await current(ctx);
    // the phone answers with its own token; a browser's cookie session (even one scan-to-login made) cannot
    if (via !== 'bearer') throw new GatewayError('app_not_allowed', { message: 'A scan-to-login ticket is answered by the mini-program, with its token (Authorization: Bearer).' });
    // and only a mini-program login's session: not a web session of the same app (a PC scan-to-login made)
    if (session.appid !== app || session.flow !== 'miniprogram') {
      throw new GatewayError('app_not_allowed', { message: 'Only a session of the mini-program web.scan.app (POST /login) can answer a scan-to-login ticket.' });
    }
    return session;
  }

  function settle(to: 'confirmed' | 'cancelled' | 'scanned') {
    return async function settleTicket(ctx: Context): Promise<void> {
      const id = ticketOf(ctx);
      const session = await phoneSession(ctx);
      const who = { appid: session.appid, openid: session.openid, ...(session.unionid ? { unionid: session.unionid } : {}) };
      const answer =
        to === 'scanned' ? await web.store.markScanned(id, Date.now()) : await web.store.settleTicket(id, to, to === 'confirmed' ? who : undefined, Date.now());
      ctx.set('Cache-Control', 'no-store');
      switch (answer) {
        case 'ok':
          if (to === 'confirmed') log.info({ appid: app }, 'scan-to-login confirmed');
          ctx.body = { status: to };
          return;
        case 'confirmed':
        case 'used':
          throw new GatewayError('ticket_already_confirmed');
        case 'cancelled':
          throw new GatewayError('ticket_cancelled');
        case 'expired':
          throw new GatewayError('ticket_expired');
        default:
          throw new GatewayError('ticket_not_found');
      }
    };
  }

  const waitFor = ticketWaiter({ web, sessions, log, trust, draining, flow: 'scan', loggedIn: 'scan-to-login: browser logged in' });
  const wait = (ctx: Context) => waitFor(ctx, ticketOf(ctx));

  return { create, scanned: settle('scanned'), confirm: settle('confirmed'), cancel: settle('cancelled'), wait };
}

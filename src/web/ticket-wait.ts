import { hash } from 'node:crypto';
import type { Context } from 'koa';
import { deviceOf } from '../session/controls.js';
import { GatewayError } from '../base/errors.js';
import type { Sessions } from '../session/sessions.js';
import type { Flow, Identity } from '../session/types.js';
import type { WebContext } from './context.js';

/**
 * The PC page's side of the ticket logins (scan-to-login, scan.ts; Official Account follow-QR, mp-qr.ts):
 * the ticket, its secret, and the long poll that turns a confirmed ticket into the page's own session.
 */

/** Ticket ids: 22 base64url characters, within WeChat's `scene` (<= 32 characters of its allowed set). */
export const TICKET = /^[A-Za-z0-9_-]{22}$/;
/** How long a finished or expired ticket is remembered, to tell "expired" or "used" from "unknown". */
export const KEEP_MS = 10 * 60_000;
const SECRET = /^[A-Za-z0-9_-]{43}$/;
const POLL_MS = 250;
const MAX_WAIT_S = 30;

/** What the store keeps of a ticket's secret (`purpose` keeps one flow's secrets from fitting the other's). */
export const ticketSecretHash = (purpose: string, secret: string) => hash('sha256', `wxgate-${purpose}\n${secret}`, 'base64url');

/** Waits `ms`, or less if `signal` is aborted meanwhile. */
const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });

interface Logger {
  info(obj: object, msg: string): void;
}

/**
 * `GET …/tickets/:id?wait=25` with `X-Scan-Secret`: waits (long poll, at most 30 s) and, once the ticket
 * is confirmed, makes the page's own session (`flow`) and sets it as the session cookie. `scanned` is
 * answered at once when the phone marked the ticket scanned (unless `&seen=scanned`: the page showed it
 * already). A page that went away while it waited does not claim the ticket (the session would go to a
 * closed connection and the page's next poll would find the ticket used). A gateway that starts
 * draining (SIGTERM) answers at once with the ticket's status, `Retry-After: 0` on a connection it
 * closes, so the page polls again, on another replica.
 */
export function ticketWaiter(deps: {
  web: WebContext;
  sessions: Sessions;
  log: Logger;
  trust: (addr: string, i: number) => boolean;
  draining?: AbortSignal;
  /** the flow of the sessions it makes, and the purpose its secrets are hashed for */
  flow: Extract<Flow, 'scan' | 'mpqr'>;
  /** what the log says when a page logs in */
  loggedIn: string;
  /** the identity the session is made for (say, with a unionid looked up); default: the ticket's */
  identity?: (who: Identity) => Promise<Identity>;
}) {
  const { web, sessions, log, trust, draining, flow } = deps;
  return async function wait(ctx: Context, id: string): Promise<void> {
    if (!TICKET.test(id)) throw new GatewayError('ticket_not_found');
    const secret = ctx.get('x-scan-secret');
    if (!SECRET.test(secret)) throw new GatewayError('ticket_not_found', { message: 'No such ticket for this secret (X-Scan-Secret).' });
    const waitS = Math.min(MAX_WAIT_S, Math.max(0, Number.parseInt(String(ctx.query.wait ?? '0'), 10) || 0));
    const seenScanned = ctx.query.seen === 'scanned';
    const deadline = Date.now() + waitS * 1000;
    const h = ticketSecretHash(flow, secret);
    ctx.set('Cache-Control', 'no-store');
    let closed = false;
    ctx.res.once('close', () => (closed = true));
    const gone = () => closed || ctx.req.socket.destroyed;
    for (;;) {
      if (gone()) {
        ctx.body = { status: 'pending' };
        return;
      }
      const answer = await web.store.claimTicket(id, h, Date.now());
      switch (answer.status) {
        case 'confirmed': {
          const who = deps.identity ? await deps.identity(answer.who) : answer.who;
          const { token, session } = await sessions.create(who, undefined, flow, deviceOf(ctx.req, trust));
          web.setSession(ctx, token);
          log.info({ appid: answer.who.appid }, deps.loggedIn);
          ctx.body = { status: 'confirmed', expires_in: sessions.expiresIn(session) };
          return;
        }
        case 'pending': {
          const status = answer.scanned ? 'scanned' : 'pending';
          if (draining?.aborted) {
            ctx.set('Retry-After', '0');
            ctx.body = { status };
            return;
          }
          if ((answer.scanned && !seenScanned) || Date.now() + POLL_MS > deadline || gone()) {
            ctx.body = { status };
            return;
          }
          await sleep(POLL_MS, draining);
          continue;
        }
        case 'cancelled':
          throw new GatewayError('ticket_cancelled');
        case 'used':
          throw new GatewayError('ticket_used');
        case 'expired':
          throw new GatewayError('ticket_expired');
        default:
          throw new GatewayError('ticket_not_found', { message: 'No such ticket for this secret (X-Scan-Secret).' });
      }
    }
  };
}

import { hash, randomBytes } from 'node:crypto';
import type { Context } from 'koa';
import proxyaddr from 'proxy-addr';
import getRawBody from 'raw-body';
import { mpQrApp, type Config } from '../config/schema.js';
import { GatewayError } from '../base/errors.js';
import { wechatCallFailure } from '../wechat/call-failure.js';
import type { Metrics } from '../metrics/metrics.js';
import type { Sessions } from '../session/sessions.js';
import type { Identity } from '../session/types.js';
import { AccessTokenError, type AccessTokens } from '../wechat/access-token.js';
import type { WechatClient } from '../wechat/client.js';
import { MpCrypto, MpCryptoError, flatXml, mpSignature, parseFlatXml, signatureMatches } from '../wechat/mp-crypto.js';
import { WechatError } from '../wechat/types.js';
import type { WebContext } from './context.js';
import type { DemoFlow } from './demo.js';
import { KEEP_MS, TICKET, ticketSecretHash, ticketWaiter } from './ticket-wait.js';

interface Logger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

/** How far a push's timestamp may be from the gateway's clock (either way). */
export const REPLAY_WINDOW_MS = 5 * 60_000;
/** How long a push's signature, and an event, are remembered (beyond the window's two sides). */
const MARK_MS = 2 * REPLAY_WINDOW_MS;
/** Largest message push read: WeChat's are a few kB (a long text message, encrypted). */
export const EVENTS_BODY_LIMIT = 64 * 1024;
const OPENID = /^[A-Za-z0-9_-]{1,64}$/;

const secretHash = (secret: string) => ticketSecretHash('mpqr', secret);
/** What a follow-QR ticket is bound to in the store: its WeChat ticket, hashed. */
const bindOf = (wechatTicket: string) => `mpqr:${hash('sha256', wechatTicket, 'base64url')}`;
const mark = (...parts: string[]) => hash('sha256', parts.join('\n'), 'base64url').slice(0, 32);

/**
 * Follow the Official Account's QR code to log in on a PC (扫码关注公众号登录):
 *   POST /qr/tickets             the PC page: a ticket (single use, web.mpQr.ticketTtl), the URL of its QR
 *                                code (a temporary QR_STR_SCENE code of the OA, scene = the ticket) and a
 *                                secret only this page holds
 *   GET  /qr/tickets/:id?wait=25 the PC page, with X-Scan-Secret: waits (long poll) and, once the user
 *                                followed or scanned, gets its own web session as the session cookie;
 *                                a draining gateway answers it at once (pending, Retry-After: 0)
 *   GET  web.mpQr.eventsPath     WeChat's server URL check (signature → echostr)
 *   POST web.mpQr.eventsPath     WeChat's message push: a `subscribe` (EventKey qrscene_<ticket>) or `SCAN`
 *                                (EventKey <ticket>) event with the QR code's Ticket confirms the ticket
 *                                for the user (FromUserName, the openid in the OA)
 * The statuses, the store's transitions and the one-use claim are the scan-to-login tickets' (store.ts);
 * a follow-QR ticket is bound to its WeChat ticket, so only that code's event settles it (and the
 * mini-program's confirm cannot). Pushes are checked (signature, a 5-minute timestamp window, a signature
 * used once with one body), decrypted in safe mode, answered at once ("success", or the passive reply
 * web.mpQr.reply), and an event WeChat resends (MsgId, or FromUserName + CreateTime) is acted on once and
 * answered alike.
 */
export function mpQrHandlers(deps: {
  config: Config;
  web: WebContext;
  sessions: Sessions;
  wechat: WechatClient;
  accessTokens: AccessTokens;
  log: Logger;
  metrics: Metrics;
  /** aborted when the gateway drains: a long poll answers its ticket's status at once (as scan.ts's) */
  draining?: AbortSignal;
  /** where showqrcode is served (the simulator in dev mode); default config.wechat.mpBase */
  mpBase?: string;
}) {
  const { config, web, sessions, wechat, accessTokens, log, metrics, draining } = deps;
  const q = config.web!.mpQr!;
  const app = mpQrApp(config)!.appid;
  const crypto = q.encodingAESKey ? new MpCrypto(q.encodingAESKey, app) : undefined;
  const trust = proxyaddr.compile([...config.server.trustedProxies]);
  const showqrcode = `${(deps.mpBase ?? config.wechat.mpBase).replace(/\/+$/, '')}/cgi-bin/showqrcode`;

  async function create(ctx: Context): Promise<void> {
    const id = randomBytes(16).toString('base64url');
    const secret = randomBytes(32).toString('base64url');
    const expireSeconds = Math.floor(q.ticketTtl / 1000);
    let qr;
    try {
      qr = await accessTokens.withToken(app, (token) => wechat.qrcodeCreate(token, { sceneStr: id, expireSeconds }));
    } catch (err) {
      throw wechatCallFailure(err, app, 'WeChat did not make the Official Account QR code', log);
    }
    // the ticket ends with the shorter of our life and WeChat's
    const ttl = Math.min(q.ticketTtl, qr.expireSeconds * 1000);
    await web.store.createTicket(id, secretHash(secret), Date.now() + ttl, KEEP_MS, bindOf(qr.ticket));
    ctx.set('Cache-Control', 'no-store');
    ctx.status = 201;
    ctx.body = {
      ticket: id,
      secret,
      expires_in: Math.floor(ttl / 1000),
      qr: `${showqrcode}?${new URLSearchParams({ ticket: qr.ticket })}`,
    };
  }

  /**
   * WeChat's events carry the openid only: the unionid (the same person in the account's other apps,
   * X-User-Id) comes from cgi-bin/user/info. Without it (not bound to an Open Platform account, or WeChat
   * failing) the login goes on with the openid alone.
   */
  async function withUnionid(who: Identity): Promise<Identity> {
    if (who.unionid) return who;
    try {
      const info = await accessTokens.withToken(app, (token) => wechat.mpUserInfo(token, who.openid));
      return info.unionid ? { ...who, unionid: info.unionid } : who;
    } catch (err) {
      if (!(err instanceof WechatError) && !(err instanceof AccessTokenError)) throw err;
      log.warn({ appid: app, err: err.message }, 'cgi-bin/user/info failed; the follow-QR session has no unionid');
      return who;
    }
  }

  const waitFor = ticketWaiter({ web, sessions, log, trust, draining, flow: 'mpqr', loggedIn: 'follow-QR login: browser logged in', identity: withUnionid });
  const wait = (ctx: Context) => waitFor(ctx, String(ctx.params.id ?? ''));

  /** A refused push: logged (the reason and the peer, nothing secret), answered 403 / 400. */
  function refuse(ctx: Context, code: 'mp_signature_invalid' | 'mp_replayed' | 'mp_message_invalid', reason: string): never {
    // the peer, or the address server.trustedProxies vouch for (a load balancer in front)
    log.warn({ reason, ip: proxyaddr(ctx.req, trust) }, 'Official Account message push refused');
    metrics.mpPushes.inc({ outcome: code });
    throw new GatewayError(code);
  }

  /** signature and the timestamp window, for the URL check and every push. */
  function checkSigned(ctx: Context): { timestamp: string; nonce: string; signature: string } {
    const { signature, timestamp, nonce } = ctx.query;
    if (typeof signature !== 'string' || typeof timestamp !== 'string' || typeof nonce !== 'string' || !/^\d{1,12}$/.test(timestamp) || !/^[\x21-\x7e]{1,64}$/.test(nonce)) {
      refuse(ctx, 'mp_signature_invalid', 'signature, timestamp or nonce missing or malformed');
    }
    if (!signatureMatches(signature, mpSignature(q.token, timestamp, nonce))) refuse(ctx, 'mp_signature_invalid', 'signature does not match');
    if (Math.abs(Date.now() - Number(timestamp) * 1000) > REPLAY_WINDOW_MS) refuse(ctx, 'mp_replayed', 'timestamp outside the 5-minute window');
    return { timestamp, nonce, signature };
  }

  /**
   * One signature, one body: in plaintext mode the signature does not cover the body, so a signature seen
   * before (WeChat's resend of the same push is fine) may not carry another message. Remembered in the
   * store, for every replica, as long as its timestamp can pass the window.
   */
  async function oneBody(ctx: Context, signed: { timestamp: string; nonce: string; signature: string }, body: string): Promise<void> {
    const bodyMark = mark(body);
    const earlier = await web.store.once(`mpn:${mark(signed.signature, signed.timestamp, signed.nonce)}`, bodyMark, MARK_MS);
    if (earlier !== undefined && earlier !== bodyMark) refuse(ctx, 'mp_replayed', 'a signature used before with another body');
  }

  /** GET: WeChat checks the server URL (服务器配置) and wants echostr back. */
  async function verifyUrl(ctx: Context): Promise<void> {
    const signed = checkSigned(ctx);
    const echostr = ctx.query.echostr;
    if (typeof echostr !== 'string' || !/^[A-Za-z0-9_-]{1,128}$/.test(echostr)) throw new GatewayError('bad_request', { message: 'No echostr to answer.' });
    // the check's signature is spent too: seen here (in a log, say), it cannot carry a push
    await oneBody(ctx, signed, `GET\n${echostr}`);
    ctx.set('Cache-Control', 'no-store');
    ctx.type = 'text/plain; charset=utf-8';
    ctx.body = echostr;
  }

  async function push(ctx: Context): Promise<void> {
    const signed = checkSigned(ctx);
    let body: string;
    try {
      body = await getRawBody(ctx.req, { limit: EVENTS_BODY_LIMIT, length: ctx.request.headers['content-length'], encoding: 'utf8' });
    } catch (err) {
      if ((err as { type?: string }).type === 'entity.too.large') throw new GatewayError('payload_too_large', { message: `The message is larger than ${EVENTS_BODY_LIMIT} bytes.` });
      throw new GatewayError('bad_request', { message: 'The message could not be read.', cause: err });
    }
    const outer = parseFlatXml(body);
    if (!outer) refuse(ctx, 'mp_message_invalid', 'not a flat WeChat XML message');
    const aes = ctx.query.encrypt_type === 'aes';
    let msg: Record<string, string> = outer;
    let encrypted = false;
    if (aes) {
      if (!crypto || q.encrypt === 'plaintext') refuse(ctx, 'mp_message_invalid', 'an encrypted message, but web.mpQr.encrypt is plaintext');
      const enc = outer.Encrypt;
      if (enc === undefined) refuse(ctx, 'mp_message_invalid', 'encrypt_type=aes without an Encrypt element');
      if (!signatureMatches(ctx.query.msg_signature, mpSignature(q.token, signed.timestamp, signed.nonce, enc))) refuse(ctx, 'mp_signature_invalid', 'msg_signature does not match');
      let inner: Record<string, string> | undefined;
      try {
        inner = parseFlatXml(crypto.decrypt(enc));
      } catch (err) {
        if (!(err instanceof MpCryptoError)) throw err;
        refuse(ctx, 'mp_message_invalid', err.message);
      }
      if (!inner) refuse(ctx, 'mp_message_invalid', 'the decrypted message is not a flat WeChat XML message');
      msg = inner;
      encrypted = true;
    } else if (q.encrypt === 'safe') {
      refuse(ctx, 'mp_message_invalid', 'a plaintext message, but web.mpQr.encrypt is safe');
    }
    await oneBody(ctx, signed, `POST\n${body}`);

    const outcome = await handle(msg);
    const reply = outcome === 'login' && q.reply ? passiveReply(msg, q.reply, encrypted ? signed.nonce : undefined) : undefined;
    ctx.set('Cache-Control', 'no-store');
    if (reply) {
      ctx.type = 'application/xml; charset=utf-8';
      ctx.body = reply;
    } else {
      ctx.type = 'text/plain; charset=utf-8';
      ctx.body = 'success';
    }
  }

  /**
   * A follow or scan of one of our QR codes confirms its ticket for the user; anything else is ignored.
   * An event WeChat resends is acted on once: its outcome is remembered and answered again.
   */
  async function handle(msg: Record<string, string>): Promise<'login' | 'none'> {
    const ignored = () => (metrics.mpPushes.inc({ outcome: 'ignored' }), 'none' as const);
    const { MsgType, Event, EventKey = '', Ticket, FromUserName = '', CreateTime = '', MsgId } = msg;
    if (MsgType !== 'event' || (Event !== 'subscribe' && Event !== 'SCAN')) return ignored();
    const scene = Event === 'subscribe' ? (EventKey.startsWith('qrscene_') ? EventKey.slice(8) : undefined) : EventKey;
    // a follow from a search or a shared card has no scene: not ours
    if (scene === undefined || !TICKET.test(scene) || !Ticket) return ignored();
    if (!OPENID.test(FromUserName)) {
      log.warn({ appid: app, event: Event }, 'Official Account event without a usable FromUserName');
      return ignored();
    }
    const eventKey = `mpe:${mark(app, MsgId ?? `${FromUserName}\n${CreateTime}\n${Event}\n${EventKey}`)}`;
    const answer = await web.store.settleTicket(scene, 'confirmed', { appid: app, openid: FromUserName }, Date.now(), bindOf(Ticket));
    const outcome = answer === 'ok' ? 'login' : 'none';
    // the outcome is remembered: a resent event whose first delivery confirmed the ticket is answered alike
    const earlier = (await web.store.once(eventKey, outcome, MARK_MS)) as 'login' | 'none' | undefined;
    if (answer === 'ok') {
      log.info({ appid: app, event: Event }, 'follow-QR login confirmed');
      metrics.mpPushes.inc({ outcome: 'login' });
      return 'login';
    }
    if (earlier !== undefined) {
      log.debug({ appid: app, event: Event }, 'follow-QR event resent by WeChat');
      metrics.mpPushes.inc({ outcome: 'resent' });
      return earlier;
    }
    log.debug({ appid: app, event: Event, answer }, 'follow-QR event for no pending ticket');
    return ignored();
  }

  /** The text reply to the user (被动回复), encrypted like the push when it was. */
  function passiveReply(msg: Record<string, string>, text: string, nonce: string | undefined): string {
    const now = Math.floor(Date.now() / 1000);
    const plain = flatXml([
      ['ToUserName', msg.FromUserName!],
      ['FromUserName', msg.ToUserName ?? ''],
      ['CreateTime', now],
      ['MsgType', 'text'],
      ['Content', text],
    ]);
    if (nonce === undefined || !crypto) return plain;
    const enc = crypto.encrypt(plain);
    const ts = String(now);
    return flatXml([
      ['Encrypt', enc],
      ['MsgSignature', mpSignature(q.token, ts, nonce, enc)],
      ['TimeStamp', now],
      ['Nonce', nonce],
    ]);
  }

  return { create, wait, verifyUrl, push };
}

/** The demo page's flow (web.mpQr.demo → GET /qr/demo): the QR image comes from WeChat's showqrcode. */
export function mpQrDemoFlow(mpBase: string): DemoFlow {
  return {
    id: 'mpqr',
    ticketEndpoint: '/qr/tickets',
    waitEndpoint: '/qr/tickets',
    sessionEndpoint: '/session',
    imgSrc: [mpBase],
    texts: {
      en: { title: 'wxgate — follow to log in', heading: 'Follow to log in', hint: 'Scan the code with WeChat and follow the Official Account to log in.' },
      zh: { title: 'wxgate — 扫码关注公众号登录', heading: '扫码关注登录', hint: '请用微信扫描二维码，关注公众号后即可登录。' },
    },
  };
}

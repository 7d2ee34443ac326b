import { createHash, randomBytes } from 'node:crypto';
import type http from 'node:http';
import { MpCrypto, flatXml, mpSignature, parseFlatXml } from '../wechat/mp-crypto.js';
import { readJson } from './read-body.js';
import { answers, esc, failCode, html, router, send, USER } from './simulator-http.js';
import { simulatedOpenid, simulatedUnionid } from './simulator-ids.js';
import { wxacodePng } from './simulator-png.js';

/**
 * The simulator's Official Account follow-QR APIs (dev only, like the whole simulator):
 *   POST /cgi-bin/qrcode/create?access_token=…  { expire_seconds, action_name, action_info: { scene: { scene_str | scene_id } } }
 *        → { ticket, expire_seconds, url }; the app's access_token is checked like getwxacodeunlimit's
 *        (41001, 40001; 48001 for a token of another app than the Official Account when one is set);
 *        40097 a bad action_name, scene or expire_seconds (QR_SCENE / QR_STR_SCENE: 60 s to 30 days,
 *        default 60 s); scene_str "fail-<errcode>" answers that errcode.
 *   GET /cgi-bin/showqrcode?ticket=…  the code as a PNG (mp.weixin.qq.com at WeChat); 404 for an unknown or
 *        expired ticket.
 *   GET /cgi-bin/user/info?access_token=…&openid=…  { subscribe: 1, openid, nickname, subscribe_time,
 *        unionid? } for a user who followed here ("union*" users have the unionid of the mini-program user
 *        of that name); 40003 for an openid that never followed; the token checked as for qrcode/create.
 * Pages standing in for the phone (not WeChat APIs):
 *   GET /dev/mp/scan?ticket=…[&user=]  "you scanned the code": a page with a user name and a "Follow and
 *        log in" button, which submits
 *   GET /dev/mp/follow?ticket=…&user=…[&repeat=n]  the user follows (or, following already, scans): the
 *        event WeChat would push (subscribe with EventKey qrscene_<scene>, or SCAN with EventKey <scene>;
 *        Ticket, FromUserName = the user's openid in the OA, CreateTime), signed with the OA's Token and,
 *        per its encrypt mode, encrypted with its EncodingAESKey, is POSTed to the gateway's server URL
 *        (`repeat`: the same request that many times, as WeChat resends one it got no answer to). The
 *        page (or JSON with Accept: application/json) shows the gateway's status and its reply, decrypted.
 *        A user follows from their first follow on (the next one is a SCAN).
 */
export interface MpPushOptions {
  /** the Official Account */
  appid: string;
  /** 服务器配置 Token */
  token: string;
  encodingAESKey?: string;
  encrypt: 'plaintext' | 'compatible' | 'safe';
  /** the gateway's server URL, asked at each push (known once the gateway listens) */
  url: () => string | undefined;
}

export interface MpQrApiOptions {
  checkToken(token: string | null | undefined): { appid: string } | { errcode: number };
  push?: MpPushOptions;
}

const BODY_LIMIT = 16 * 1024;
const MAX_EXPIRE = 2_592_000;
const STORE_MAX = 100_000;

/** The Official Account's original id (原始ID, the ToUserName of its pushes): "gh_" and 12 hex digits. */
export function simulatedOriginalId(appid: string): string {
  return `gh_${createHash('sha256').update(`gh:${appid}`).digest('hex').slice(0, 12)}`;
}

interface PushResult {
  status: number;
  event: 'subscribe' | 'SCAN';
  pushes: number;
  /** the gateway's answer, decrypted when it was encrypted */
  body: string;
  /** the text message the gateway replied, if any */
  reply?: string;
  error?: string;
}

export function createMpQrApis(opts: MpQrApiOptions) {
  /** ticket → its app, scene and deadline */
  const tickets = new Map<string, { appid: string; scene: string; expiresAt: number }>();
  /** "appid:openid" of users who follow → their user name and when they followed */
  const followers = new Map<string, { user: string; since: number }>();
  const { json, error } = answers('simq', 'application/json; charset=utf-8');

  function live(ticket: string | null) {
    const t = ticket ? tickets.get(ticket) : undefined;
    return t && t.expiresAt > Date.now() ? t : undefined;
  }

  /** The Official Account a token from here belongs to, or the errcode (48001 another app's, when one is set). */
  function appOf(q: URLSearchParams): { appid: string } | { errcode: number } {
    const app = opts.checkToken(q.get('access_token'));
    return 'errcode' in app || !opts.push || app.appid === opts.push.appid ? app : { errcode: 48001 };
  }

  function create(req: http.IncomingMessage, res: http.ServerResponse, q: URLSearchParams): void {
    readJson(req, BODY_LIMIT, (b) => {
      const app = appOf(q);
      if ('errcode' in app) return error(res, app.errcode);
      if (!b) return error(res, 40097);
      const action = b.action_name;
      const scene = ((b.action_info as Record<string, unknown> | undefined)?.scene ?? {}) as Record<string, unknown>;
      let sceneText: string;
      if (action === 'QR_STR_SCENE' || action === 'QR_LIMIT_STR_SCENE') {
        if (typeof scene.scene_str !== 'string' || scene.scene_str.length < 1 || scene.scene_str.length > 64) return error(res, 40097);
        sceneText = scene.scene_str;
      } else if (action === 'QR_SCENE' || action === 'QR_LIMIT_SCENE') {
        if (typeof scene.scene_id !== 'number' || !Number.isInteger(scene.scene_id) || scene.scene_id <= 0) return error(res, 40097);
        sceneText = String(scene.scene_id);
      } else return error(res, 40097);
      const fail = failCode(sceneText);
      if (fail !== undefined) return error(res, fail);
      const limited = action.startsWith('QR_LIMIT');
      const expire = b.expire_seconds === undefined ? 60 : Number(b.expire_seconds);
      if (!limited && (!Number.isInteger(expire) || expire < 60 || expire > MAX_EXPIRE)) return error(res, 40097);
      const now = Date.now();
      for (const [k, v] of tickets) {
        if (v.expiresAt > now && tickets.size < STORE_MAX) break;
        tickets.delete(k);
      }
      const ticket = `gQ${randomBytes(36).toString('base64')}`;
      tickets.set(ticket, { appid: app.appid, scene: sceneText, expiresAt: limited ? Number.MAX_SAFE_INTEGER : now + expire * 1000 });
      json(res, { ticket, ...(limited ? {} : { expire_seconds: expire }), url: `http://weixin.qq.com/q/sim${randomBytes(12).toString('base64url')}` });
    });
  }

  function showqrcode(_req: http.IncomingMessage, res: http.ServerResponse, q: URLSearchParams): void {
    const ticket = q.get('ticket');
    if (!live(ticket)) return send(res, 404, 'text/plain', 'no such QR code');
    send(res, 200, 'image/png', wxacodePng(`showqrcode:${ticket}`, 430), { 'cache-control': 'no-store' });
  }

  function scanPage(_req: http.IncomingMessage, res: http.ServerResponse, q: URLSearchParams): void {
    const ticket = q.get('ticket') ?? '';
    const t = live(ticket);
    if (!t) return html(res, 400, 'QR code', '<h1>QR code</h1><p id="error">This QR code has expired or is unknown.</p>');
    const user = USER.test(q.get('user') ?? '') ? q.get('user')! : 'mpuser';
    const following = followers.has(`${t.appid}:${simulatedOpenid(t.appid, user)}`);
    html(res, 200, 'Official Account (simulator)', `
<h1>Official Account <code id="oa">${esc(simulatedOriginalId(t.appid))}</code> (WeChat simulator)</h1>
<p>You scanned its QR code${following ? ' (you follow it already)' : ''}.</p>
<form id="follow" method="get" action="/dev/mp/follow"><input type="hidden" name="ticket" value="${esc(ticket)}">
<label>User <input id="user" name="user" value="${esc(user)}" pattern="[A-Za-z0-9_\\-]{1,64}" required></label>
<button id="follow-button" type="submit">Follow and log in</button>
</form>`);
  }

  async function follow(req: http.IncomingMessage, res: http.ServerResponse, q: URLSearchParams): Promise<void> {
    const wantsJson = (req.headers.accept ?? '').includes('application/json');
    const problem = (message: string) =>
      wantsJson ? send(res, 400, 'application/json', JSON.stringify({ error: message })) : html(res, 400, 'Follow', `<h1>Follow</h1><p id="error">${esc(message)}</p>`);
    const ticket = q.get('ticket') ?? '';
    const t = live(ticket);
    if (!t) return void problem('This QR code has expired or is unknown.');
    const user = q.get('user') ?? 'mpuser';
    if (!USER.test(user)) return void problem('user must be 1 to 64 letters, digits, "_" or "-"');
    const push = opts.push;
    const target = push?.url();
    if (!push || !target || push.appid !== t.appid) return void problem('No server URL for this Official Account (the simulator was started without web.mpQr).');
    const repeat = Math.min(4, Math.max(1, Number.parseInt(q.get('repeat') ?? '1', 10) || 1));
    let result: PushResult;
    try {
      result = await pushEvent(push, target, t, user, ticket, repeat);
    } catch (err) {
      return void problem(`The push to the gateway failed: ${errorCode(err)}`);
    }
    if (wantsJson) return json(res, result);
    html(res, 200, 'Follow (simulator)', `<h1>${result.event === 'subscribe' ? 'Followed' : 'Scanned'}</h1>
<p>The gateway answered <code id="status">${result.status}</code>.</p>
${result.reply !== undefined ? `<p>Official Account: <span id="reply">${esc(result.reply)}</span></p>` : ''}`);
  }

  async function pushEvent(push: MpPushOptions, target: string, t: { appid: string; scene: string }, user: string, ticket: string, repeat: number): Promise<PushResult> {
    const openid = simulatedOpenid(t.appid, user);
    const key = `${t.appid}:${openid}`;
    const event = followers.has(key) ? 'SCAN' : 'subscribe';
    const now = Math.floor(Date.now() / 1000);
    const fields: Array<[string, string | number]> = [
      ['ToUserName', simulatedOriginalId(t.appid)],
      ['FromUserName', openid],
      ['CreateTime', now],
      ['MsgType', 'event'],
      ['Event', event],
      ['EventKey', event === 'subscribe' ? `qrscene_${t.scene}` : t.scene],
      ['Ticket', ticket],
    ];
    const timestamp = String(now);
    const nonce = String(randomBytes(4).readUInt32BE());
    const query = new URLSearchParams({ signature: mpSignature(push.token, timestamp, nonce), timestamp, nonce, openid });
    let body = flatXml(fields);
    const crypto = push.encrypt !== 'plaintext' && push.encodingAESKey ? new MpCrypto(push.encodingAESKey, t.appid) : undefined;
    if (crypto) {
      const enc = crypto.encrypt(body);
      query.set('encrypt_type', 'aes');
      query.set('msg_signature', mpSignature(push.token, timestamp, nonce, enc));
      // compatible mode sends the plaintext fields too; safe mode only the envelope
      body = flatXml([...(push.encrypt === 'compatible' ? fields : [fields[0]!]), ['Encrypt', enc]]);
    }
    const url = `${target}${target.includes('?') ? '&' : '?'}${query}`;
    // the user follows before WeChat tells the server (cgi-bin/user/info knows them from then on)
    if (!followers.has(key)) followers.set(key, { user, since: now });
    let last: { status: number; text: string } | undefined;
    for (let i = 0; i < repeat; i++) last = await post(url, body);
    const { status, text } = last!;
    const result: PushResult = { status, event, pushes: repeat, body: text };
    if (status === 200 && text !== 'success' && text !== '') {
      let reply = parseFlatXml(text);
      if (reply && crypto && reply.Encrypt !== undefined) {
        const good = reply.MsgSignature === mpSignature(push.token, reply.TimeStamp ?? '', reply.Nonce ?? '', reply.Encrypt);
        try {
          reply = good ? parseFlatXml(crypto.decrypt(reply.Encrypt)) : undefined;
        } catch {
          reply = undefined;
        }
        if (!reply) result.error = 'the encrypted reply does not verify or decrypt';
      }
      if (reply) {
        result.body = flatXml(Object.entries(reply));
        if (reply.MsgType === 'text' && reply.ToUserName === openid) result.reply = reply.Content;
        else result.error = 'the reply is not a text message to this user';
      } else result.error ??= 'the reply is not WeChat XML';
    }
    return result;
  }

  function userInfo(_req: http.IncomingMessage, res: http.ServerResponse, q: URLSearchParams): void {
    const app = appOf(q);
    if ('errcode' in app) return error(res, app.errcode);
    const openid = q.get('openid') ?? '';
    const f = followers.get(`${app.appid}:${openid}`);
    if (!f) return error(res, 40003);
    json(res, {
      subscribe: 1,
      openid,
      nickname: f.user,
      language: 'zh_CN',
      subscribe_time: f.since,
      ...(f.user.startsWith('union') ? { unionid: simulatedUnionid(f.user) } : {}),
      subscribe_scene: 'ADD_SCENE_QR_CODE',
    });
  }

  return {
    handle: router({
      'GET /cgi-bin/user/info': userInfo,
      'POST /cgi-bin/qrcode/create': create,
      'GET /cgi-bin/showqrcode': showqrcode,
      'GET /dev/mp/scan': scanPage,
      'GET /dev/mp/follow': (req, res, q) => void follow(req, res, q),
    }),
  };
}

/** POSTs an XML body as WeChat does (text/xml), with a deadline of 5 s, like WeChat's. */
async function post(url: string, body: string): Promise<{ status: number; text: string }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'text/xml', 'user-agent': 'Mozilla/4.0' }, body, signal: AbortSignal.timeout(5000) });
  return { status: res.status, text: await res.text() };
}

/** A failed push's error code (ECONNREFUSED, ...; TimeoutError after 5 s), never its message. */
function errorCode(err: unknown): string {
  const e = err as { name?: string; code?: unknown; cause?: { code?: unknown } };
  if (e?.name === 'TimeoutError') return 'ETIMEDOUT';
  const code = e?.code ?? e?.cause?.code;
  return typeof code === 'string' ? code : 'error';
}

import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { MpCrypto, flatXml, mpSignature, parseFlatXml } from '../wechat/mp-crypto.js';
import { simulatedOpenid, simulatedUnionid } from './simulator-ids.js';
import { wxacodePng } from './simulator-web.js';
import { readBody } from './read-body.js';

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

const ERRMSG: Record<number, string> = {
  [-1]: 'system error',
  40001: 'invalid credential, access_token is invalid or not latest',
  40003: 'invalid openid',
  40097: 'invalid args',
  41001: 'access_token missing',
  48001: 'api unauthorized',
};
const BODY_LIMIT = 16 * 1024;
const USER = /^[A-Za-z0-9_-]{1,64}$/;
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
  let rid = 0;

  function json(res: http.ServerResponse, body: object): void {
    const text = JSON.stringify(body);
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }
  const error = (res: http.ServerResponse, errcode: number) =>
    json(res, { errcode, errmsg: `${ERRMSG[errcode] ?? 'simulated error'}, rid: simq-${(++rid).toString(16)}` });

  function html(res: http.ServerResponse, status: number, title: string, body: string): void {
    const page = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<meta name="viewport" content="width=device-width,initial-scale=1"></head><body>${body}</body></html>`;
    res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(page), 'cache-control': 'no-store' });
    res.end(page);
  }

  function live(ticket: string | null) {
    const t = ticket ? tickets.get(ticket) : undefined;
    return t && t.expiresAt > Date.now() ? t : undefined;
  }

  function create(req: http.IncomingMessage, q: URLSearchParams, res: http.ServerResponse): void {
    readBody(req, BODY_LIMIT, (raw, tooLarge) => {
      const app = opts.checkToken(q.get('access_token'));
      if ('errcode' in app) return error(res, app.errcode);
      if (opts.push && app.appid !== opts.push.appid) return error(res, 48001);
      let b: Record<string, unknown>;
      try {
        b = JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
      } catch {
        return error(res, 40097);
      }
      if (tooLarge || !b || typeof b !== 'object') return error(res, 40097);
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
      const fail = /^fail-(-?\d+)$/.exec(sceneText);
      if (fail) return error(res, Number(fail[1]));
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

  function showqrcode(q: URLSearchParams, res: http.ServerResponse): void {
    const ticket = q.get('ticket');
    if (!live(ticket)) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('no such QR code');
      return;
    }
    const png = wxacodePng(`showqrcode:${ticket}`, 430);
    res.writeHead(200, { 'content-type': 'image/png', 'content-length': png.length, 'cache-control': 'no-store' });
    res.end(png);
  }

  function scanPage(q: URLSearchParams, res: http.ServerResponse): void {
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

  async function follow(req: http.IncomingMessage, q: URLSearchParams, res: http.ServerResponse): Promise<void> {
    const wantsJson = (req.headers.accept ?? '').includes('application/json');
    const problem = (message: string) =>
      wantsJson ? (res.writeHead(400, { 'content-type': 'application/json' }), res.end(JSON.stringify({ error: message }))) : html(res, 400, 'Follow', `<h1>Follow</h1><p id="error">${esc(message)}</p>`);
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
      return void problem(`The push to the gateway failed: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
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

  function userInfo(q: URLSearchParams, res: http.ServerResponse): void {
    const app = opts.checkToken(q.get('access_token'));
    if ('errcode' in app) return error(res, app.errcode);
    if (opts.push && app.appid !== opts.push.appid) return error(res, 48001);
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

  function handle(req: http.IncomingMessage, res: http.ServerResponse, url: URL): boolean {
    const q = url.searchParams;
    switch (`${req.method} ${url.pathname}`) {
      case 'GET /cgi-bin/user/info':
        userInfo(q, res);
        return true;
      case 'POST /cgi-bin/qrcode/create':
        create(req, q, res);
        return true;
      case 'GET /cgi-bin/showqrcode':
        showqrcode(q, res);
        return true;
      case 'GET /dev/mp/scan':
        scanPage(q, res);
        return true;
      case 'GET /dev/mp/follow':
        void follow(req, q, res);
        return true;
      default:
        return false;
    }
  }
  return { handle };
}

/** POSTs an XML body as WeChat does (text/xml), with a deadline of 5 s, like WeChat's. */
function post(url: string, body: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers: { 'content-type': 'text/xml', 'content-length': Buffer.byteLength(body), 'user-agent': 'Mozilla/4.0' }, timeout: 5000 });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.end(body);
  });
}

function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

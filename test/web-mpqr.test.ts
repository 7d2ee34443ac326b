import test from 'ava';
import { Redis } from 'ioredis';
import { buildConfig, ConfigError } from '../src/config/load.js';
import { userId } from '../src/session/tokens.js';
import { MpCrypto, flatXml, mpSignature, parseFlatXml } from '../src/wechat/mp-crypto.js';
import { simulatedOpenid, simulatedUnionid, startSimulator } from '../src/dev/simulator.js';
import { simulatedOriginalId } from '../src/dev/simulator-mpqr.js';
import { APPID, SECRET, login, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { Browser, setCookies, type SetCookie } from './helpers/browser.js';
import { request, type Reply } from './helpers/http.js';
import { sleep } from './helpers/wait.js';
import { metricValue, scrape } from './helpers/metrics.js';
import { startRedis, type RedisServer } from './helpers/redis.js';
import { startUpstream, type Upstream } from './helpers/upstream.js';

/**
 * Official Account follow-QR login (issue 16 item 1), end to end: the simulator plays WeChat
 * (stable_token, qrcode/create, showqrcode, and the phone that scans and follows, which pushes the signed
 * event to the gateway's server URL), real redis-server, a real upstream, two replicas: the PC page gets
 * its ticket from A, WeChat pushes the event to B, the page's long poll on A gets the session cookie.
 * A and B run in safe mode (encrypted pushes and replies) with a text reply; P in plaintext mode, C in
 * compatible mode. Pushes the simulator would not make (forged, stale, replayed) are built here.
 */
const MP = 'wx11112222333344aa';
const MP_SECRET = 'mp-secret-0123456789';
const TOKEN = 'mpToken2026';
const AES_KEY = 'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG';
const PUBLIC = 'https://pc.example.com';
const SESSION = '__Host-wxgate_session';
const REPLY = '已登录 wxgate';
const EVENTS = '/wx/mp/events';

let redis: RedisServer;
let admin: Redis;
let up: Upstream;
let simSafe: Awaited<ReturnType<typeof startSimulator>>;
let simPlain: Awaited<ReturnType<typeof startSimulator>>;
let simCompat: Awaited<ReturnType<typeof startSimulator>>;
let a: TestGateway;
let b: TestGateway;
let p: TestGateway;
let c: TestGateway;
let users = 0;
/** every ticket secret and session token handed out, to look for in the logs */
const credentials: string[] = [];
const targets: Record<string, string | undefined> = {};

function config(sim: { url: string }, prefix: string, mpQr: Record<string, unknown>) {
  return testConfig({
    apiBase: sim.url,
    wechat: { apiBase: sim.url, oauthBase: sim.url, mpBase: sim.url, timeout: '1s', apps: [{ appid: APPID, secret: SECRET }] },
    session: { store: 'redis', redis: { url: redis.url, keyPrefix: prefix } },
    routes: [{ path: '/shop', upstream: up.url }],
    web: {
      publicUrl: PUBLIC,
      mp: { appid: MP, secret: MP_SECRET },
      scan: { checkPath: false },
      mpQr: { token: TOKEN, ...mpQr },
    },
  });
}

const pushOptions = (name: string, encrypt: 'plaintext' | 'compatible' | 'safe') => ({
  appid: MP,
  token: TOKEN,
  encodingAESKey: AES_KEY,
  encrypt,
  url: () => targets[name],
});

test.before(async () => {
  redis = await startRedis();
  admin = new Redis(redis.url);
  up = await startUpstream();
  const apps = { [APPID]: SECRET, [MP]: MP_SECRET };
  [simSafe, simPlain, simCompat] = await Promise.all([
    startSimulator(0, '127.0.0.1', { apps, mp: pushOptions('safe', 'safe') }),
    startSimulator(0, '127.0.0.1', { apps, mp: pushOptions('plain', 'plaintext') }),
    startSimulator(0, '127.0.0.1', { apps, mp: pushOptions('compat', 'compatible') }),
  ]);
  const safe = { encodingAESKey: AES_KEY, encrypt: 'safe', reply: REPLY };
  [a, b, p, c] = await Promise.all([
    startTestGateway(config(simSafe, 'mpq:', safe)),
    startTestGateway(config(simSafe, 'mpq:', safe)),
    startTestGateway(config(simPlain, 'mpp:', { ticketTtl: '1m' })),
    startTestGateway(config(simCompat, 'mpc:', { encodingAESKey: AES_KEY, encrypt: 'compatible' })),
  ]);
  // WeChat pushes to B; the PC pages talk to A
  targets.safe = `${b.url}${EVENTS}`;
  targets.plain = `${p.url}${EVENTS}`;
  targets.compat = `${c.url}${EVENTS}`;
});
test.after.always(async () => {
  await Promise.all([a?.close(), b?.close(), p?.close(), c?.close()]);
  admin?.disconnect();
  await up?.close();
  await Promise.all([simSafe?.close(), simPlain?.close(), simCompat?.close()]);
  await redis?.close();
});

interface Ticket {
  ticket: string;
  secret: string;
  expires_in: number;
  qr: string;
}

async function newTicket(gw: { url: string }): Promise<Ticket> {
  const res = await request(gw.url, { method: 'POST', path: '/qr/tickets', headers: { accept: 'application/json' } });
  if (res.status !== 201) throw new Error(`POST /qr/tickets: ${res.status} ${res.text}`);
  credentials.push((res.json as Ticket).secret);
  return res.json as Ticket;
}

/** WeChat's ticket of the QR code the page shows. */
const wechatTicket = (t: Ticket) => new URL(t.qr).searchParams.get('ticket')!;

/** The phone: scans the code shown and follows, in the simulator; it pushes the event to the gateway. */
async function follow(sim: { url: string }, t: Ticket, user: string, repeat = 1) {
  const q = new URLSearchParams({ ticket: wechatTicket(t), user, repeat: String(repeat) });
  const res = await request(sim.url, { path: `/dev/mp/follow?${q}`, headers: { accept: 'application/json' } });
  if (res.status !== 200) throw new Error(`follow: ${res.status} ${res.text}`);
  return res.json as { status: number; event: string; pushes: number; body: string; reply?: string; error?: string };
}

function poll(pc: Browser, t: { ticket: string; secret?: string }, wait = 0): Promise<Reply> {
  return pc.go(`/qr/tickets/${t.ticket}${wait ? `?wait=${wait}` : ''}`, { headers: t.secret === undefined ? {} : { 'x-scan-secret': t.secret } });
}

const sessionCookie = (res: Reply): SetCookie | undefined => setCookies(res).find((x) => x.name === SESSION);

function isError(t: import('ava').ExecutionContext, res: Reply, status: number, error: string, what = error): void {
  t.is(res.status, status, `${what}: ${res.text}`);
  t.is(res.json?.error, error, what);
  t.is(typeof res.json?.message, 'string', `${what}: a message`);
  t.is(sessionCookie(res), undefined, `${what}: no session cookie`);
}

/** A push as WeChat signs it (plaintext), to send by hand. */
function signed(query: Record<string, string> = {}, at = Math.floor(Date.now() / 1000), nonce = String(Math.floor(Math.random() * 1e9))) {
  const timestamp = String(at);
  return new URLSearchParams({ signature: mpSignature(TOKEN, timestamp, nonce), timestamp, nonce, ...query });
}

function eventXml(f: { openid: string; event: 'subscribe' | 'SCAN'; scene: string; ticket: string; createTime?: number }): string {
  return flatXml([
    ['ToUserName', simulatedOriginalId(MP)],
    ['FromUserName', f.openid],
    ['CreateTime', f.createTime ?? Math.floor(Date.now() / 1000)],
    ['MsgType', 'event'],
    ['Event', f.event],
    ['EventKey', f.event === 'subscribe' ? `qrscene_${f.scene}` : f.scene],
    ['Ticket', f.ticket],
  ]);
}

function push(gw: { url: string }, query: URLSearchParams, body: string): Promise<Reply> {
  return request(gw.url, { method: 'POST', path: `${EVENTS}?${query}`, headers: { 'content-type': 'text/xml' }, body });
}

test.serial('POST /qr/tickets: a ticket, its secret, and the URL of a temporary QR_STR_SCENE code of the Official Account', async (t) => {
  const res = await request(a.url, { method: 'POST', path: '/qr/tickets' });
  t.is(res.status, 201, res.text);
  t.is(res.headers['cache-control'], 'no-store');
  t.deepEqual(Object.keys(res.json).sort(), ['expires_in', 'qr', 'secret', 'ticket']);
  const tk = res.json as Ticket;
  t.regex(tk.ticket, /^[A-Za-z0-9_-]{22}$/);
  t.regex(tk.secret, /^[A-Za-z0-9_-]{43}$/);
  t.is(tk.expires_in, 120, 'web.mpQr.ticketTtl, default 2m');
  const qr = new URL(tk.qr);
  t.is(`${qr.origin}${qr.pathname}`, `${simSafe.url}/cgi-bin/showqrcode`, 'showqrcode (the simulator standing in for mp.weixin.qq.com)');
  // the code is a real image at WeChat (here the simulator)
  const img = await fetch(tk.qr);
  t.is(img.status, 200);
  t.is(img.headers.get('content-type'), 'image/png');
  t.true(Buffer.from(await img.arrayBuffer()).subarray(1, 4).equals(Buffer.from('PNG')));
  // the ticket is in Redis, bound to WeChat's ticket, only a hash of the secret
  const stored = await admin.hgetall(`mpq:scan:${tk.ticket}`);
  t.is(stored.s, 'pending');
  t.truthy(stored.b);
  t.false(Object.values(stored).includes(tk.secret));
  t.false(Object.values(stored).includes(wechatTicket(tk)), 'WeChat\'s ticket only as a hash');
  const pending = await poll(new Browser(b.url), tk);
  t.deepEqual(pending.json, { status: 'pending' });
  t.is(sessionCookie(pending), undefined);
  // P's ticketTtl is 1m: expire_seconds 60
  t.is((await newTicket(p)).expires_in, 60);
});

test.serial('safe mode, two replicas: ticket on A, the encrypted event pushed to B, A\'s long poll gets the session, one use; the reply is encrypted', async (t) => {
  const tk = await newTicket(a);
  const pc = new Browser(a.url);
  const waiting = poll(pc, tk, 10);
  const user = `follower${++users}`;
  const pushed = await follow(simSafe, tk, user);
  t.is(pushed.status, 200, pushed.body);
  t.is(pushed.event, 'subscribe', 'a new follower: subscribe with qrscene_');
  t.is(pushed.error, undefined);
  t.is(pushed.reply, REPLY, 'the passive reply, decrypted and its MsgSignature checked by the simulator');
  const res = await waiting;
  t.is(res.status, 200, res.text);
  t.is(res.json.status, 'confirmed');
  t.true(res.json.expires_in > 0);
  const cookie = sessionCookie(res)!;
  t.truthy(cookie);
  credentials.push(cookie.value);
  t.true('httponly' in cookie.attrs && 'secure' in cookie.attrs);
  // the session is the Official Account user's: upstreams see the OA's appid and the user's openid there
  const openid = simulatedOpenid(MP, user);
  const session = await pc.go('/session', { base: b.url });
  t.is(session.status, 200, session.text);
  t.is(session.json.appid, MP);
  t.is(session.json.openid, openid);
  const shop = await pc.go('/shop/x');
  t.is(shop.status, 200);
  const seen = up.seen.at(-1)!;
  t.is(seen.headers['x-openid'], openid);
  t.is(seen.headers['x-appid'], MP);
  // the session is recorded as made by this flow (mpqr: "Q" at the end of its field in the user's hash)
  const fields = Object.entries(await admin.hgetall(`mpq:u:${userId(MP, openid)}`)).filter(([k]) => k.length === 22).map(([, v]) => v);
  t.is(fields.length, 1, 'one session');
  t.regex(fields[0]!, /\tQ$/);
  // a web session (flow mpqr): the mini-program-only endpoints refuse it
  const phone = await pc.go('/wx/phone', { method: 'POST', headers: { origin: PUBLIC, 'content-type': 'application/json' }, body: '{"code":"phone-13800138000"}' });
  isError(t, phone, 403, 'app_not_allowed', 'a follow-QR session asks for a phone number');
  // one use: the next poll (any replica) finds the ticket used, and gets no cookie
  isError(t, await poll(new Browser(b.url), tk), 409, 'ticket_used');
  // the secret is the page's: without it, or with another, the ticket is not found
  isError(t, await poll(new Browser(a.url), { ticket: tk.ticket }), 404, 'ticket_not_found');
});

test.serial('a replica that drains (SIGTERM) answers the page\'s long poll at once (pending, Retry-After: 0); the page polls A again and logs in', async (t) => {
  const d = await startTestGateway(config(simSafe, 'mpq:', { encodingAESKey: AES_KEY, encrypt: 'safe' }));
  const tk = await newTicket(d);
  const started = Date.now();
  const waiting = poll(new Browser(d.url), tk, 25);
  await sleep(400); // the long poll reaches the gateway and waits: nothing outside the gateway shows when
  const closing = d.close();
  const res = await waiting;
  t.true(Date.now() - started < 10_000, `answered ${Date.now() - started} ms after it began, not at the end of its 25 s`);
  t.is(res.status, 200, res.text);
  t.deepEqual(res.json, { status: 'pending' });
  t.is(res.headers['retry-after'], '0');
  await closing;
  // WeChat pushes to B, the page's next poll (on A) gets the session
  t.is((await follow(simSafe, tk, `follower${++users}`)).status, 200);
  const again = await poll(new Browser(a.url), tk, 5);
  t.is(again.json.status, 'confirmed', again.text);
  t.truthy(sessionCookie(again));
});

test.serial('one person across apps: a follow-QR login gets the unionid from cgi-bin/user/info, so X-User-Id is the one of the same user\'s mini-program login', async (t) => {
  const user = `union${++users}`;
  const tk = await newTicket(a);
  t.is((await follow(simSafe, tk, user)).status, 200);
  const pc = new Browser(a.url);
  t.is((await poll(pc, tk)).json.status, 'confirmed');
  const session = await pc.go('/session');
  t.is(session.json.unionid, simulatedUnionid(user), 'the unionid WeChat gave for the follower');
  t.is((await pc.go('/shop/pc')).status, 200);
  const fromPc = up.seen.at(-1)!.headers;
  // the same person logs in with the mini-program
  const token = await login(a.url, `${user}.1`);
  credentials.push(token);
  t.is((await request(a.url, { path: '/shop/phone', headers: { authorization: `Bearer ${token}` } })).status, 200);
  const fromPhone = up.seen.at(-1)!.headers;
  t.not(fromPc['x-appid'], fromPhone['x-appid'], 'two apps');
  t.not(fromPc['x-openid'], fromPhone['x-openid'], 'two openids');
  t.truthy(fromPc['x-user-id']);
  t.is(fromPc['x-user-id'], fromPhone['x-user-id'], 'one person');
  t.is(fromPc['x-unionid'], simulatedUnionid(user));
});

test.serial('a follower scans again: SCAN with the bare scene logs in too', async (t) => {
  const user = `follower${++users}`;
  const first = await newTicket(a);
  t.is((await follow(simSafe, first, user)).event, 'subscribe');
  t.is((await poll(new Browser(a.url), first)).json.status, 'confirmed');
  const again = await newTicket(a);
  const pushed = await follow(simSafe, again, user);
  t.is(pushed.event, 'SCAN');
  t.is(pushed.status, 200);
  const res = await poll(new Browser(a.url), again);
  t.is(res.json.status, 'confirmed', res.text);
  t.truthy(sessionCookie(res));
});

test.serial('WeChat resends an event (same push 3 more times): one login, every answer alike', async (t) => {
  const tk = await newTicket(a);
  const pushes = async (outcome: string) => metricValue(await scrape(b.url), 'wxgate_mp_pushes_total', { outcome });
  const [loginsBefore, resentBefore] = [await pushes('login'), await pushes('resent')];
  const pushed = await follow(simSafe, tk, `follower${++users}`, 4);
  t.is((await pushes('login')) - loginsBefore, 1, 'one login on B, the replica WeChat pushes to');
  t.is((await pushes('resent')) - resentBefore, 3, 'three resends');
  t.is(pushed.pushes, 4);
  t.is(pushed.status, 200);
  t.is(pushed.reply, REPLY, 'the last resend gets the same reply as the first');
  const res = await poll(new Browser(a.url), tk);
  t.is(res.json.status, 'confirmed');
  isError(t, await poll(new Browser(a.url), tk), 409, 'ticket_used', 'still one login');
});

test.serial('plaintext mode: the event logs in; no reply configured → "success"; the URL check answers echostr', async (t) => {
  const tk = await newTicket(p);
  const pushed = await follow(simPlain, tk, `plain${++users}`);
  t.is(pushed.status, 200);
  t.is(pushed.body, 'success');
  t.is(pushed.reply, undefined);
  const res = await poll(new Browser(p.url), tk);
  t.is(res.json.status, 'confirmed', res.text);
  // 服务器配置: WeChat checks the URL with a signed GET and wants echostr back, as it is
  const check = await request(p.url, { path: `${EVENTS}?${signed({ echostr: '5837397520913127001' })}` });
  t.is(check.status, 200);
  t.is(check.text, '5837397520913127001');
  t.regex(String(check.headers['content-type']), /^text\/plain/);
  const bad = new URLSearchParams(signed({ echostr: '1' }));
  bad.set('signature', '0'.repeat(40));
  isError(t, await request(p.url, { path: `${EVENTS}?${bad}` }), 403, 'mp_signature_invalid', 'a URL check with a bad signature');
});

test.serial('compatible mode: the encrypted copy is the one read; an encrypted push with a plaintext copy that differs still logs in the encrypted user', async (t) => {
  const tk = await newTicket(c);
  const pushed = await follow(simCompat, tk, `compat${++users}`);
  t.is(pushed.status, 200, pushed.body);
  t.is((await poll(new Browser(c.url), tk)).json.status, 'confirmed');
  // a plaintext push is taken too in compatible mode
  const tk2 = await newTicket(c);
  const user = simulatedOpenid(MP, `compat${++users}`);
  const res = await push(c, signed(), eventXml({ openid: user, event: 'subscribe', scene: tk2.ticket, ticket: wechatTicket(tk2) }));
  t.is(res.status, 200, res.text);
  t.is(res.text, 'success');
  const polled = await poll(new Browser(c.url), tk2);
  t.is(polled.json.status, 'confirmed');
});

test.serial('forged and replayed pushes are refused (403) and logged, and log in nobody', async (t) => {
  const tk = await newTicket(p);
  const ev = eventXml({ openid: simulatedOpenid(MP, 'mallory'), event: 'subscribe', scene: tk.ticket, ticket: wechatTicket(tk) });
  const logsBefore = p.logs.length;
  const refusedBefore = metricValue(await scrape(p.url), 'wxgate_mp_pushes_total', { outcome: 'mp_replayed' });
  // no signature, a wrong one, one made with another token
  isError(t, await push(p, new URLSearchParams(), ev), 403, 'mp_signature_invalid', 'unsigned');
  const wrong = signed();
  wrong.set('signature', mpSignature('otherToken', wrong.get('timestamp')!, wrong.get('nonce')!));
  isError(t, await push(p, wrong, ev), 403, 'mp_signature_invalid', 'another token');
  // stale: signed correctly, 6 minutes ago (or ahead)
  isError(t, await push(p, signed({}, Math.floor(Date.now() / 1000) - 360), ev), 403, 'mp_replayed', 'stale');
  isError(t, await push(p, signed({}, Math.floor(Date.now() / 1000) + 360), ev), 403, 'mp_replayed', 'from the future');
  // a signature WeChat used for one push carries another body: refused (plaintext signatures do not cover the body)
  const used = signed();
  const harmless = flatXml([['ToUserName', simulatedOriginalId(MP)], ['FromUserName', 'oSomeone'], ['CreateTime', 1], ['MsgType', 'text'], ['Content', 'hi'], ['MsgId', '1']]);
  t.is((await push(p, used, harmless)).text, 'success', 'the first push with it');
  t.is((await push(p, used, harmless)).text, 'success', 'the same push again (a retry) is fine');
  isError(t, await push(p, used, ev), 403, 'mp_replayed', 'its signature with another body');
  // nor can the signature of a URL check (GET with echostr) carry a push
  const checked = signed({ echostr: '42' });
  t.is((await request(p.url, { path: `${EVENTS}?${checked}` })).text, '42');
  checked.delete('echostr');
  isError(t, await push(p, checked, ev), 403, 'mp_replayed', 'a URL check\'s signature with a body');
  // the event of another QR code (its Ticket) does not settle this ticket, nor a scan-to-login confirm
  const other = await newTicket(p);
  const mixed = await push(p, signed(), eventXml({ openid: simulatedOpenid(MP, 'mallory'), event: 'subscribe', scene: tk.ticket, ticket: wechatTicket(other) }));
  t.is(mixed.text, 'success', 'answered, ignored');
  const phone = await login(p.url, 'mallory.1');
  const confirm = await request(p.url, { method: 'POST', path: `/scan/tickets/${tk.ticket}/confirm`, headers: { authorization: `Bearer ${phone}` } });
  isError(t, confirm, 404, 'ticket_not_found', 'the mini-program cannot confirm a follow-QR ticket');
  t.deepEqual((await poll(new Browser(p.url), tk)).json, { status: 'pending' }, 'nobody logged in');
  const refused = p.logs.slice(logsBefore).map((l) => JSON.parse(l) as { msg: string; reason?: string }).filter((l) => l.msg === 'Official Account message push refused');
  t.is(metricValue(await scrape(p.url), 'wxgate_mp_pushes_total', { outcome: 'mp_replayed' }) - refusedBefore, 4, 'counted by outcome');
  t.deepEqual(refused.map((l) => l.reason), [
    'signature, timestamp or nonce missing or malformed',
    'signature does not match',
    'timestamp outside the 5-minute window',
    'timestamp outside the 5-minute window',
    'a signature used before with another body',
    'a signature used before with another body',
  ]);
});

test.serial('safe mode refuses plaintext pushes, a bad msg_signature, and a message encrypted for another appid', async (t) => {
  const tk = await newTicket(a);
  const ev = eventXml({ openid: simulatedOpenid(MP, 'mallory'), event: 'subscribe', scene: tk.ticket, ticket: wechatTicket(tk) });
  isError(t, await push(b, signed(), ev), 400, 'mp_message_invalid', 'plaintext in safe mode');
  const enc = new MpCrypto(AES_KEY, MP).encrypt(ev);
  const q = signed({ encrypt_type: 'aes' });
  q.set('msg_signature', mpSignature(TOKEN, q.get('timestamp')!, q.get('nonce')!, `${enc}x`));
  isError(t, await push(b, q, flatXml([['ToUserName', 'gh_x'], ['Encrypt', enc]])), 403, 'mp_signature_invalid', 'msg_signature of another Encrypt');
  const foreign = new MpCrypto(AES_KEY, 'wx9999888877776666').encrypt(ev);
  const q2 = signed({ encrypt_type: 'aes' });
  q2.set('msg_signature', mpSignature(TOKEN, q2.get('timestamp')!, q2.get('nonce')!, foreign));
  isError(t, await push(b, q2, flatXml([['ToUserName', 'gh_x'], ['Encrypt', foreign]])), 400, 'mp_message_invalid', 'made for another appid');
  t.deepEqual((await poll(new Browser(a.url), tk)).json, { status: 'pending' });
});

test.serial('bad pushes: not WeChat XML → 400, too large → 413; other messages and plain follows → "success", nothing happens', async (t) => {
  isError(t, await push(p, signed(), '<xml><a><b>nested</b></a></xml>'), 400, 'mp_message_invalid', 'nested XML');
  isError(t, await push(p, signed(), '<!DOCTYPE x [<!ENTITY e "x">]><xml><A>&e;</A></xml>'), 400, 'mp_message_invalid', 'a DOCTYPE');
  const big = await push(p, signed(), `<xml><Content><![CDATA[${'x'.repeat(70 * 1024)}]]></Content></xml>`);
  t.is(big.status, 413);
  // a follow from a search (no scene), a text message: answered success, ignored
  const plainFollow = flatXml([['ToUserName', 'gh_x'], ['FromUserName', 'oUser1'], ['CreateTime', 1], ['MsgType', 'event'], ['Event', 'subscribe'], ['EventKey', '']]);
  t.is((await push(p, signed(), plainFollow)).text, 'success');
  t.is((await request(p.url, { method: 'PUT', path: EVENTS })).status, 405);
});

test.serial('an expired ticket is not confirmed by a late event', async (t) => {
  const tk = await newTicket(p);
  // expire it in the store (as if ticketTtl had passed)
  await admin.hset(`mpp:scan:${tk.ticket}`, 'e', String(Date.now() - 1));
  const res = await push(p, signed(), eventXml({ openid: simulatedOpenid(MP, 'late'), event: 'SCAN', scene: tk.ticket, ticket: wechatTicket(tk) }));
  t.is(res.text, 'success');
  isError(t, await poll(new Browser(p.url), tk), 410, 'ticket_expired');
});

test.serial('/qr/: other paths are 404 not_found, other methods 405 with Allow', async (t) => {
  isError(t, await request(a.url, { method: 'POST', path: '/qr/ticketsx' }), 404, 'not_found', 'an unknown /qr path');
  const wrongMethod = await request(a.url, { method: 'GET', path: '/qr/tickets' });
  t.is(wrongMethod.status, 405);
  t.is(wrongMethod.headers.allow, 'POST');
  t.is((await request(a.url, { method: 'DELETE', path: '/qr/tickets/AAAAAAAAAAAAAAAAAAAAAA' })).status, 405);
});

test.serial('config: web.mpQr checks its keys and names them', (t) => {
  const base = (mpQr: Record<string, unknown>, web: Record<string, unknown> = {}) => ({
    wechat: { apps: [{ appid: APPID, secret: SECRET }] },
    web: { publicUrl: PUBLIC, mpQr, ...web },
  });
  const problems = (raw: object) => {
    try {
      buildConfig(raw, 'test');
      return [];
    } catch (err) {
      return (err as ConfigError).message.split('\n').slice(1).map((l) => l.trim().replace(/^- /, ''));
    }
  };
  t.deepEqual(problems(base({ token: TOKEN })), ['web.mpQr.appid: is required (or configure web.mp: the same Official Account is used then)']);
  t.deepEqual(problems(base({ token: TOKEN, appid: MP })), ['web.mpQr.secret: is required (use ${ENV_NAME} to read it from the environment)']);
  t.deepEqual(problems(base({ token: TOKEN, appid: APPID, secret: 'x' })), [`web.mpQr.appid: "${APPID}" is a mini-program of wechat.apps; an Official Account has its own appid`]);
  t.deepEqual(problems(base({ token: 'a b', encrypt: 'safe' }, { mp: { appid: MP, secret: MP_SECRET } })), [
    'web.mpQr.token: must be 3 to 32 letters or digits (the Token of the OA console)',
    'web.mpQr.encodingAESKey: is required with encrypt: safe',
  ]);
  t.deepEqual(problems(base({ token: TOKEN, encodingAESKey: 'short', ticketTtl: '31d' }, { mp: { appid: MP, secret: MP_SECRET } })), [
    'web.mpQr.encodingAESKey: must be 43 letters or digits (the EncodingAESKey of the OA console)',
    "web.mpQr.ticketTtl: must be at most 30d (WeChat's limit)",
  ]);
  t.deepEqual(problems({ ...base({ token: TOKEN }, { mp: { appid: MP, secret: MP_SECRET } }), routes: [{ path: '/qr/x', upstream: 'http://127.0.0.1:1' }, { path: '/wx/mp/events', upstream: 'http://127.0.0.1:1' }] }), [
    'routes.0.path: is under /qr/, which the gateway answers itself for web logins',
    'routes.1.path: is under /wx/mp/events/, which the gateway answers itself for web logins',
  ].map((l) => l.replace(/^routes\.(\d)/, 'routes[$1]')));
  // with web.mp, the same Official Account and its secret
  t.deepEqual(problems(base({ token: TOKEN }, { mp: { appid: MP, secret: MP_SECRET } })), []);
});

test.serial('nothing secret in the logs: no Token, no EncodingAESKey, no ticket secret, no session token, no access_token', (t) => {
  const all = [...a.logs, ...b.logs, ...p.logs, ...c.logs].join('\n');
  t.true(all.includes('follow-QR login confirmed'), 'the logs were captured');
  for (const s of [TOKEN, AES_KEY, MP_SECRET, ...credentials]) t.false(all.includes(s), `${s.slice(0, 6)}… in a log line`);
  t.false(/simtok_/.test(all), 'no access_token');
});

test('parseFlatXml reads WeChat\'s flat messages and nothing else', (t) => {
  t.deepEqual(
    { ...parseFlatXml('<xml><ToUserName><![CDATA[gh_1]]></ToUserName>\n<CreateTime>12</CreateTime><Content><![CDATA[a]]]]><![CDATA[>b]]></Content><E>&lt;&#x4e2d;&amp;</E></xml>') },
    { ToUserName: 'gh_1', CreateTime: '12', Content: 'a]]>b', E: '<中&' },
  );
  for (const bad of ['<xml><A>1</A><A>2</A></xml>', '<xml><A x="1">1</A></xml>', '<xml><A>&foo;</A></xml>', '<xml><A>1</B></xml>', '<x/>', '<xml><A><![CDATA[1]]></xml>']) {
    t.is(parseFlatXml(bad), undefined, bad);
  }
});

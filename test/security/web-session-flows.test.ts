import test from 'ava';
import { simulatedOpenid, simulatedSessionKey, startSimulator } from '../../src/dev/simulator.js';
import { createCipheriv } from 'node:crypto';
import { APPID, SECRET, login, startTestGateway, testConfig, type TestGateway } from '../helpers/gateway.js';
import { Browser } from '../helpers/browser.js';
import { request, type Reply } from '../helpers/http.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';

/**
 * Issue 19 item 3: the endpoints that need a mini-program login (/wx/decrypt, /wx/phone, answering a
 * scan-to-login ticket) refuse web sessions by how the session was made (its flow), not by its app. A PC's
 * scan-to-login session is of the mini-program's own app, so an app check let it through (/wx/phone 200).
 * Two replicas on a real redis-server, the simulator as WeChat (jscode2session, getwxacodeunlimit, the
 * Official Account OAuth pages, getuserphonenumber).
 */
const MP = 'wx11112222333344aa';
const MP_SECRET = 'mp-secret-0123456789';
const PUBLIC = 'https://pc.example.com';
const SESSION = '__Host-wxgate_session';

let redis: RedisServer;
let sim: Awaited<ReturnType<typeof startSimulator>>;
let a: TestGateway;
let b: TestGateway;
let users = 0;

test.before(async () => {
  redis = await startRedis();
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET, [MP]: MP_SECRET } });
  const config = () =>
    testConfig({
      apiBase: sim.url,
      wechat: { apiBase: sim.url, oauthBase: sim.url, timeout: '1s', apps: [{ appid: APPID, secret: SECRET }] },
      session: { store: 'redis', redis: { url: redis.url, keyPrefix: 'flows:' } },
      web: {
        publicUrl: PUBLIC,
        redirects: ['/'],
        mp: { appid: MP, secret: MP_SECRET },
        scan: { page: 'pages/scan/index', checkPath: false, envVersion: 'develop' },
      },
    });
  [a, b] = await Promise.all([startTestGateway(config()), startTestGateway(config())]);
});
test.after.always(async () => {
  await Promise.all([a?.close(), b?.close()]);
  await sim?.close();
  await redis?.close();
});

const json = { accept: 'application/json', 'content-type': 'application/json' };

/** A mini-program user logged in with POST /login: code, openid, Bearer token. */
async function miniUser(gw: { url: string }) {
  const code = `flows${++users}.1`;
  return { code, openid: simulatedOpenid(APPID, `flows${users}`), token: await login(gw.url, code) };
}

/** The PC logged in by scanning: a ticket on A, confirmed by the phone on B, the long poll on A. */
async function scanLogin(phoneToken: string): Promise<Browser> {
  const created = await request(a.url, { method: 'POST', path: '/scan/tickets', headers: { accept: 'application/json' } });
  if (created.status !== 201) throw new Error(`tickets: ${created.status} ${created.text}`);
  const { ticket, secret } = created.json as { ticket: string; secret: string };
  const ok = await request(b.url, { method: 'POST', path: `/scan/tickets/${ticket}/confirm`, headers: { ...json, authorization: `Bearer ${phoneToken}` } });
  if (ok.status !== 200) throw new Error(`confirm: ${ok.status} ${ok.text}`);
  const pc = new Browser(a.url);
  const polled = await pc.go(`/scan/tickets/${ticket}`, { headers: { 'x-scan-secret': secret } });
  if (polled.status !== 200 || !pc.jar.get(SESSION)) throw new Error(`poll: ${polled.status} ${polled.text}`);
  return pc;
}

/** A browser logged in through the Official Account's OAuth (simulator's approval page). */
async function oauthLogin(user: string): Promise<Browser> {
  const pc = new Browser(a.url);
  const start = await pc.go('/oauth/mp/authorize?redirect=/');
  const q = new URL(start.headers.location!).searchParams;
  q.set('user', user);
  const approved = await request(sim.url, { path: `/connect/approve?${q}` });
  const back = new URL(approved.headers.location!);
  const done = await pc.go(back.pathname + back.search);
  if (done.status !== 302 || !pc.jar.get(SESSION)) throw new Error(`callback: ${done.status} ${done.text}`);
  return pc;
}

/** Open data made with the session_key of the login with `code` (the simulator's keys are deterministic). */
function openData(code: string, data: object) {
  const iv = Buffer.alloc(16, 7);
  const c = createCipheriv('aes-128-cbc', Buffer.from(simulatedSessionKey(APPID, code), 'base64'), iv);
  const plain = JSON.stringify({ ...data, watermark: { appid: APPID, timestamp: 1_700_000_000 } });
  return { encryptedData: Buffer.concat([c.update(plain), c.final()]).toString('base64'), iv: iv.toString('base64') };
}

function refused(t: import('ava').ExecutionContext, res: Reply, what: string): void {
  t.is(res.status, 403, `${what}: ${res.text}`);
  t.is(res.json?.error, 'app_not_allowed', what);
  t.regex(String(res.json?.message), /mini-program sessions/, what);
  t.false(res.text.includes('+86') || res.text.includes('13800138000'), `${what}: no phone number`);
}

/** The same call with the cookie (from an allowed page) and with the cookie's token as a Bearer token. */
async function bothWays(pc: Browser, gw: TestGateway, method: string, path: string, body: object): Promise<Array<[string, Reply]>> {
  const token = pc.jar.get(SESSION)!;
  return [
    ['cookie', await pc.go(path, { method, base: gw.url, headers: { ...json, origin: PUBLIC }, body: JSON.stringify(body) })],
    ['bearer', await request(gw.url, { method, path, headers: { ...json, authorization: `Bearer ${token}` }, body: JSON.stringify(body) })],
  ];
}

test.serial("a PC's scan-to-login session (the mini-program's own app) gets 403 app_not_allowed from /wx/phone and /wx/decrypt, on both replicas", async (t) => {
  const phone = await miniUser(b);
  const pc = await scanLogin(phone.token);
  const me = await pc.go('/session');
  t.is(me.json.appid, APPID, "the PC's session is of the mini-program's app");
  t.is(me.json.openid, phone.openid);
  for (const gw of [a, b]) {
    for (const [via, res] of await bothWays(pc, gw, 'POST', '/wx/phone', { code: 'phone-13800138000' })) refused(t, res, `/wx/phone by ${via}`);
    for (const [via, res] of await bothWays(pc, gw, 'POST', '/wx/decrypt', openData(phone.code, { secret: 'theirs' }))) {
      refused(t, res, `/wx/decrypt by ${via}`);
      t.false(res.text.includes('theirs'), 'the data stays closed');
    }
  }
  // the phone's own session goes on working, with its own session_key
  const mine = await request(a.url, { method: 'POST', path: '/wx/decrypt', headers: { ...json, authorization: `Bearer ${phone.token}` }, body: JSON.stringify(openData(phone.code, { n: 1 })) });
  t.is(mine.status, 200, mine.text);
  t.deepEqual(mine.json, { data: { n: 1 } });
  const number = await request(b.url, { method: 'POST', path: '/wx/phone', headers: { ...json, authorization: `Bearer ${phone.token}` }, body: JSON.stringify({ code: 'phone-13800138000' }) });
  t.is(number.status, 200, number.text);
  t.is(number.json.purePhoneNumber, '13800138000');
});

test.serial("a scan-to-login session cannot answer another ticket, even with its token as a Bearer token (a PC logging in more PCs)", async (t) => {
  const phone = await miniUser(a);
  const pc = await scanLogin(phone.token);
  const created = await request(a.url, { method: 'POST', path: '/scan/tickets', headers: { accept: 'application/json' } });
  const { ticket, secret } = created.json as { ticket: string; secret: string };
  for (const [via, res] of await bothWays(pc, b, 'POST', `/scan/tickets/${ticket}/confirm`, {})) {
    t.is(res.status, 403, `${via}: ${res.text}`);
    t.is(res.json.error, 'app_not_allowed', via);
  }
  const still = await new Browser(a.url).go(`/scan/tickets/${ticket}`, { headers: { 'x-scan-secret': secret } });
  t.deepEqual(still.json, { status: 'pending' }, 'the ticket was not confirmed');
  // the mini-program's token still can
  const ok = await request(b.url, { method: 'POST', path: `/scan/tickets/${ticket}/confirm`, headers: { ...json, authorization: `Bearer ${phone.token}` } });
  t.is(ok.status, 200, ok.text);
});

test.serial('an Official Account OAuth session gets 403 app_not_allowed from /wx/phone and /wx/decrypt', async (t) => {
  const pc = await oauthLogin('flows-oauth');
  t.is((await pc.go('/session')).json.appid, MP);
  for (const [via, res] of await bothWays(pc, b, 'POST', '/wx/phone', { code: 'phone-13800138000' })) refused(t, res, `/wx/phone by ${via}`);
  for (const [via, res] of await bothWays(pc, b, 'POST', '/wx/decrypt', openData('x.1', {}))) refused(t, res, `/wx/decrypt by ${via}`);
});

import test from 'ava';
import { loginStateSignature } from '../src/wechat/client.js';
import { simulatedOpenid, simulatedSessionKey, startSimulator } from '../src/dev/simulator.js';
import { APPID, SECRET, login, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { Browser } from './helpers/browser.js';
import { request } from './helpers/http.js';
import { startRedis, type RedisServer } from './helpers/redis.js';

/**
 * session_key health end to end (issue 16 item 3): two replicas on a real redis-server, the simulator as
 * WeChat (jscode2session, wxa/checksession, wxa/resetusersessionkey, /dev/encrypt). A (admin with
 * resetSessionKey) and B (admin without) share sessions. "The mini-program logged in again without the
 * gateway" is a jscode2session call made straight at the simulator: WeChat's key moves on, the gateway's
 * goes stale.
 */
const MP = 'wx11112222333344aa';
const MP_SECRET = 'mp-secret-0123456789';
const ADMIN = 'admin-token-for-session-keys-0123456789';

let redis: RedisServer;
let sim: Awaited<ReturnType<typeof startSimulator>>;
let a: TestGateway;
let b: TestGateway;
let n = 0;

function config(resetSessionKey: boolean) {
  return testConfig({
    apiBase: sim.url,
    wechat: { apiBase: sim.url, oauthBase: sim.url, timeout: '1s', apps: [{ appid: APPID, secret: SECRET }] },
    session: { store: 'redis', redis: { url: redis.url, keyPrefix: 'sk:' } },
    web: { publicUrl: 'https://m.example.com', redirects: ['/'], mp: { appid: MP, secret: MP_SECRET } },
    admin: { port: 0, token: ADMIN, resetSessionKey },
  });
}

test.before(async () => {
  redis = await startRedis();
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET, [MP]: MP_SECRET } });
  [a, b] = await Promise.all([startTestGateway(config(true)), startTestGateway(config(false))]);
});
test.after.always(async () => {
  await Promise.all([a?.close(), b?.close()]);
  await sim?.close();
  await redis?.close();
});

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const session = (gw: TestGateway, token: string, q = '?verify=wechat') => request(gw.url, { path: `/session${q}`, headers: bearer(token) });
const admin = (gw: TestGateway, path: string, method = 'GET') => request(gw.adminUrl!, { method, path, headers: { authorization: `Bearer ${ADMIN}` } });

/** A mini-program user logged in through the gateway: their code, openid and token. */
async function user(gw: TestGateway) {
  const name = `sk${++n}`;
  const code = `${name}.1`;
  return { name, code, openid: simulatedOpenid(APPID, name), token: await login(gw.url, code) };
}

/** The mini-program logs in again, straight at WeChat (the code never reaches the gateway). */
async function loginElsewhere(name: string): Promise<void> {
  const q = new URLSearchParams({ appid: APPID, secret: SECRET, js_code: `${name}.elsewhere`, grant_type: 'authorization_code' });
  const res = await request(sim.url, { path: `/sns/jscode2session?${q}` });
  if (res.status !== 200 || !res.json.session_key) throw new Error(`jscode2session: ${res.text}`);
}

/** What WeChat (the simulator) says of a key, asked directly. */
async function wechatTakes(openid: string, key: string): Promise<boolean> {
  const q = new URLSearchParams({ grant_type: 'client_credential', appid: APPID, secret: SECRET });
  const token = (await request(sim.url, { path: `/cgi-bin/token?${q}` })).json.access_token as string;
  const check = new URLSearchParams({ access_token: token, openid, signature: loginStateSignature(key), sig_method: 'hmac_sha256' });
  return (await request(sim.url, { path: `/wxa/checksession?${check}` })).json.errcode === 0;
}

async function encrypt(body: object) {
  const res = await request(sim.url, { method: 'POST', path: '/dev/encrypt', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (res.status !== 200) throw new Error(`dev/encrypt: ${res.text}`);
  return res.json as { encryptedData: string; iv: string };
}

const decrypt = (gw: TestGateway, token: string, body: object) =>
  request(gw.url, { method: 'POST', path: '/wx/decrypt', headers: { ...bearer(token), 'content-type': 'application/json' }, body: JSON.stringify(body) });

test.serial('GET /session?verify=wechat: 200 while WeChat takes the key; 401 session_key_stale once the mini-program logged in elsewhere', async (t) => {
  const u = await user(a);
  const ok = await session(a, u.token);
  t.is(ok.status, 200, ok.text);
  t.is(ok.json.openid, u.openid);
  await loginElsewhere(u.name);
  // B has never asked: WeChat says no
  const stale = await session(b, u.token);
  t.is(stale.status, 401, stale.text);
  t.is(stale.json.error, 'session_key_stale');
  t.regex(stale.json.message, /log in again/);
  // A asked a moment ago and keeps that answer for a minute (one WeChat call a minute per key, not per request)
  t.is((await session(a, u.token)).status, 200);
  // the session itself is still good (the token was not the problem); a new login makes the key good again
  t.is((await session(b, u.token, '')).status, 200);
  const again = await login(b.url, `${u.name}.2`);
  t.is((await session(b, again)).status, 200);
  for (const [q, status] of [['?verify=yes', 400], ['?verify=', 400]] as const) t.is((await session(a, u.token, q)).status, status, q);
});

test.serial('GET /session?verify=wechat with a web session: 403 app_not_allowed (it has no session_key)', async (t) => {
  const pc = new Browser(a.url);
  const start = await pc.go('/oauth/mp/authorize?redirect=/');
  const q = new URL(start.headers.location!).searchParams;
  q.set('user', 'sk-web');
  const back = new URL((await request(sim.url, { path: `/connect/approve?${q}` })).headers.location!);
  t.is((await pc.go(back.pathname + back.search)).status, 302);
  const res = await pc.go('/session?verify=wechat');
  t.is(res.status, 403, res.text);
  t.is(res.json.error, 'app_not_allowed');
  t.is((await pc.go('/session')).status, 200);
});

test.serial('/wx/decrypt: data the gateway cannot open is 401 session_key_stale when WeChat dropped the key, 400 decrypt_failed when it did not', async (t) => {
  const u = await user(b);
  // bad data, key still good at WeChat: the data's fault
  const good = await encrypt({ appid: APPID, code: u.code, data: { n: 1 } });
  t.is((await decrypt(a, u.token, good)).status, 200);
  const tampered = { ...good, encryptedData: Buffer.from('x'.repeat(32)).toString('base64') };
  const bad = await decrypt(a, u.token, tampered);
  t.is(bad.status, 400, bad.text);
  t.is(bad.json.error, 'decrypt_failed');
  // the mini-program logged in again without the gateway and sends data made with the new key
  await loginElsewhere(u.name);
  const newer = await encrypt({ appid: APPID, openid: u.openid, data: { n: 2 } });
  for (const gw of [a, b]) {
    const res = await decrypt(gw, u.token, newer);
    t.is(res.status, 401, res.text);
    t.is(res.json.error, 'session_key_stale');
  }
});

test.serial('admin: whether WeChat takes a user\'s key; with admin.resetSessionKey a user revoke resets it at WeChat too, without it not', async (t) => {
  const u = await user(a);
  const key = simulatedSessionKey(APPID, u.code);
  t.deepEqual((await admin(b, `/users/${APPID}/${u.openid}/session_key`)).json, { valid: true });
  t.is((await admin(b, `/users/${APPID}/o-nobody/session_key`)).status, 404);

  // B: admin.resetSessionKey off: sessions end, the key stays good at WeChat
  const del = await admin(b, `/users/${APPID}/${u.openid}/sessions`, 'DELETE');
  t.deepEqual(del.json, { revoked: 1 });
  t.true(await wechatTakes(u.openid, key));

  // A: on: the key is reset at WeChat, after the sessions ended on every replica
  const v = await user(a);
  const vKey = simulatedSessionKey(APPID, v.code);
  t.true(await wechatTakes(v.openid, vKey));
  const reset = await admin(a, `/users/${APPID}/${v.openid}/sessions`, 'DELETE');
  t.deepEqual(reset.json, { revoked: 1, session_key_reset: true });
  t.false(await wechatTakes(v.openid, vKey), 'WeChat no longer takes the old key');
  t.is((await session(b, v.token, '')).status, 401);
  t.false(reset.text.includes(vKey), 'no key in the answer');
  for (const line of [...a.logs, ...b.logs]) t.false(line.includes(vKey) || line.includes(loginStateSignature(vKey)), 'no key or signature in a log line');
});

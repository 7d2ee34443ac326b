import test from 'ava';
import { buildConfig, ConfigError } from '../src/config/load.js';
import { simulatedOpenid, simulatedSessionKey, startSimulator } from '../src/dev/simulator.js';
import { encryptUserData } from '../src/wechat/userdata.js';
import { login, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { request } from './helpers/http.js';
import { startUpstream, type Upstream } from './helpers/upstream.js';

const A = 'wxaaaaaaaaaaaaaaaa';
const B = 'wxbbbbbbbbbbbbbbbb';
const APPS = [
  { appid: A, secret: 'secret-a', name: 'shop' },
  { appid: B, secret: 'secret-b', name: 'games' },
];

let sim: Awaited<ReturnType<typeof startSimulator>>;
let up: Upstream;
let gw: TestGateway;

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [A]: 'secret-a', [B]: 'secret-b' } });
  up = await startUpstream();
  gw = await startTestGateway(
    testConfig({
      apiBase: sim.url,
      wechat: { apiBase: sim.url, timeout: '1s', apps: APPS },
      routes: [
        { path: '/shop', upstream: up.url, apps: [A] },
        { path: '/both', upstream: up.url, apps: [A, B] },
        { path: '/any', upstream: up.url },
      ],
    }),
  );
});
test.after.always(async () => {
  await gw?.close();
  await up?.close();
  await sim?.close();
});

const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
  request(gw.url, { method: 'POST', path, headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
const get = (path: string, token: string, headers: Record<string, string> = {}) =>
  request(gw.url, { path, headers: { authorization: `Bearer ${token}`, ...headers } });

test('with several apps, /login needs the app: body "appid" or the X-Wx-Appid header', async (t) => {
  t.like(await post('/login', { code: 'nobody.1' }), { status: 400, json: { error: 'invalid_request' } });

  const viaHeader = await post('/login', { code: 'hdr.1' }, { 'x-wx-appid': B });
  t.is(viaHeader.status, 200, viaHeader.text);
  const s = await get('/session', viaHeader.json.token);
  t.like(s.json, { appid: B, openid: simulatedOpenid(B, 'hdr') });

  const viaBody = await post('/login', { code: 'hdr.2', appid: A });
  t.like((await get('/session', viaBody.json.token)).json, { appid: A, openid: simulatedOpenid(A, 'hdr') });

  const same = await post('/login', { code: 'hdr.3', appid: A }, { 'x-wx-appid': A });
  t.is(same.status, 200);

  const differ = await post('/login', { code: 'hdr.4', appid: A }, { 'x-wx-appid': B });
  t.is(differ.status, 400);
  t.is(differ.json.error, 'invalid_request');
  t.regex(differ.json.message, /X-Wx-Appid/);
  t.like(await post('/login', { code: 'hdr.4' }, { 'x-wx-appid': 'wx0000000000000000' }), { status: 400, json: { error: 'unknown_appid' } });
  t.is((await post('/login', { code: 'hdr.4' }, { 'x-wx-appid': A })).status, 200, 'the refused attempts did not spend the code');
});

test('a route limited to app A: 200 with X-Appid for A, 403 app_not_allowed for B (the upstream never sees it)', async (t) => {
  const a = await login(gw.url, 'pat.1', { appid: A });
  const b = await login(gw.url, 'pat.1', { appid: B });

  const okA = await get('/shop/cart', a);
  t.is(okA.status, 200, okA.text);
  const seenA = up.seen.find((s) => s.url === '/shop/cart');
  t.is(seenA?.headers['x-appid'], A);
  t.is(seenA?.headers['x-openid'], simulatedOpenid(A, 'pat'));

  const before = up.seen.length;
  for (const headers of [{}, { 'x-appid': A }, { 'x-wx-appid': A }] as Record<string, string>[]) {
    const denied = await get('/shop/cart?b=1', b, headers);
    t.is(denied.status, 403);
    t.deepEqual(Object.keys(denied.json).sort(), ['error', 'message']);
    t.is(denied.json.error, 'app_not_allowed');
    t.regex(String(denied.headers['content-type']), /application\/json/);
  }
  t.is(up.seen.length, before, 'refused requests do not reach the upstream');

  for (const [token, appid] of [[a, A], [b, B]] as const) {
    for (const path of ['/both/x', '/any/x']) {
      const res = await get(path, token, { 'x-appid': 'wxspoofedspoofed00' });
      t.is(res.status, 200, `${path} ${appid}`);
      t.is(up.seen.at(-1)?.headers['x-appid'], appid, 'X-Appid always names the session\'s app');
    }
  }
  t.like(await get('/shop/x', 'n'.repeat(59)), { status: 401, json: { error: 'unauthorized' } }, 'no session is still 401 first');
});

test('decryption checks the watermark against the session\'s own app', async (t) => {
  const token = await login(gw.url, 'quinn.1', { appid: B });
  const key = simulatedSessionKey(B, 'quinn.1');
  const forB = encryptUserData(key, B, { n: 1 });
  const forA = encryptUserData(key, A, { n: 1 });
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${token}` };
  const ok = await request(gw.url, { method: 'POST', path: '/wx/decrypt', headers, body: JSON.stringify(forB) });
  t.deepEqual(ok.json, { data: { n: 1 } });
  const other = await request(gw.url, { method: 'POST', path: '/wx/decrypt', headers, body: JSON.stringify(forA) });
  t.like(other, { status: 400, json: { error: 'watermark_mismatch' } });
});

test('routes[].apps must name configured apps and needs auth: required', (t) => {
  const problems = (routes: object[]) => {
    try {
      buildConfig({ wechat: { apps: APPS }, routes }, 'test', {});
    } catch (err) {
      if (err instanceof ConfigError) return err.problems;
      throw err;
    }
    return [];
  };
  t.deepEqual(problems([{ path: '/x', upstream: 'http://u', apps: [A, B] }]), []);
  t.true(problems([{ path: '/x', upstream: 'http://u', apps: [A, 'wx0000000000000000'] }]).some((p) => /^routes\[0\]\.apps\[1\]: .*not one of wechat\.apps/.test(p)));
  t.true(problems([{ path: '/x', upstream: 'http://u', apps: ['nope'] }]).some((p) => p.startsWith('routes[0].apps[0]:')));
  t.true(problems([{ path: '/x', upstream: 'http://u', apps: [] }]).some((p) => p.startsWith('routes[0].apps:')));
  t.true(problems([{ path: '/x', upstream: 'http://u', auth: 'none', apps: [A] }]).some((p) => p.startsWith('routes[0].apps: needs auth: required')));
});

import test from 'ava';
import { startSimulator } from '../src/dev/simulator.js';
import { APPID, SECRET, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { Browser, setCookies } from './helpers/browser.js';
import { request } from './helpers/http.js';
import { freePort } from './helpers/ports.js';

/**
 * A browser on `localhost:PORT` while web.publicUrl is `http://127.0.0.1:PORT` (issue 17, item 4): the
 * state cookie would be set on localhost and the callback (WeChat sends it to publicUrl) would never see
 * it. authorize sends such a browser to publicUrl's origin first; a callback without its state cookie on
 * another origin says so.
 */
const MP = 'wx11112222333344aa';
const MP_SECRET = 'mp-secret-0123456789';

let sim: Awaited<ReturnType<typeof startSimulator>>;
let gw: TestGateway;
let port: number;
let publicUrl: string;

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET, [MP]: MP_SECRET } });
  port = await freePort();
  publicUrl = `http://127.0.0.1:${port}`;
  gw = await startTestGateway({
    ...testConfig({ apiBase: sim.url, wechat: { apiBase: sim.url, oauthBase: sim.url, timeout: '1s', apps: [{ appid: APPID, secret: SECRET }] } }),
    server: { host: '127.0.0.1', port },
    web: { publicUrl, mp: { appid: MP, secret: MP_SECRET } },
  });
});
test.after.always(async () => {
  await gw?.close();
  await sim?.close();
});

test.serial('authorize on localhost sends the browser to publicUrl (127.0.0.1) first, same path and query, no state cookie on localhost', async (t) => {
  const res = await request(gw.url, { path: '/oauth/mp/authorize?redirect=%2Fapi%2Fhello&x=1', headers: { host: `localhost:${port}` } });
  t.is(res.status, 302, res.text);
  t.is(res.headers.location, `${publicUrl}/oauth/mp/authorize?redirect=%2Fapi%2Fhello&x=1`);
  t.deepEqual(setCookies(res), [], 'nothing set on the wrong origin');
  t.is(res.headers['cache-control'], 'no-store');
});

test.serial('the whole login from localhost ends logged in on publicUrl', async (t) => {
  const b = new Browser(gw.url);
  const first = await b.go('/oauth/mp/authorize?redirect=/api/hello', { headers: { host: `localhost:${port}` } });
  t.is(first.status, 302);
  const moved = new URL(first.headers.location!);
  t.is(moved.origin, publicUrl);
  const start = await b.go(moved.pathname + moved.search, { headers: { host: `127.0.0.1:${port}` } });
  t.is(start.status, 302);
  const q = new URLSearchParams(new URL(start.headers.location!).search);
  t.is(q.get('redirect_uri'), `${publicUrl}/oauth/mp/callback`);
  q.set('user', 'local-dev');
  const back = new URL((await request(sim.url, { path: `/connect/approve?${q}` })).headers.location!);
  const done = await b.go(back.pathname + back.search, { headers: { host: back.host } });
  t.is(done.status, 302, done.text);
  t.is(done.headers.location, '/api/hello');
});

test.serial("a callback without its state cookie on another origin says that the browser's origin differs from web.publicUrl", async (t) => {
  // as the browser would be after a login started on localhost by a gateway that did not move it
  const b = new Browser(gw.url);
  const start = await b.go('/oauth/mp/authorize?redirect=/', { headers: { host: `127.0.0.1:${port}` } });
  const state = new URL(start.headers.location!).searchParams.get('state')!;
  const stranger = new Browser(gw.url); // no state cookie
  for (const host of [`localhost:${port}`, 'wxgate.internal:8080']) {
    const res = await stranger.go(`/oauth/mp/callback?code=abc&state=${encodeURIComponent(state)}`, { headers: { host } });
    t.is(res.status, 400);
    t.is(res.json.error, 'state_invalid');
    t.regex(res.json.message, /origin differs from web\.publicUrl/);
    t.true(res.json.message.includes(publicUrl), res.json.message);
    t.true(res.json.message.includes(host), res.json.message);
  }
  // on publicUrl's own origin, a missing cookie is the plain state_invalid
  const same = await stranger.go(`/oauth/mp/callback?code=abc&state=${encodeURIComponent(state)}`, { headers: { host: `127.0.0.1:${port}` } });
  t.is(same.json.error, 'state_invalid');
  t.notRegex(same.json.message, /differs from web\.publicUrl/);
});

test.serial('behind a proxy (another port or name) authorize never moves the browser: no loop', async (t) => {
  const cases: Array<Record<string, string>> = [{ host: `localhost:${port + 1}` }, { host: 'wxgate.internal:8080' }, { host: `localhost:${port}`, 'x-forwarded-host': 'm.example.com' }];
  for (const headers of cases) {
    const res = await request(gw.url, { path: '/oauth/mp/authorize?redirect=/', headers });
    t.is(res.status, 302);
    t.is(new URL(res.headers.location!).origin, sim.url, JSON.stringify(headers));
  }
});

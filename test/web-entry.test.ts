import test from 'ava';
import { startSimulator } from '../src/dev/simulator.js';
import { APPID, SECRET, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { Browser, setCookies } from './helpers/browser.js';
import { request } from './helpers/http.js';

/**
 * One browser entry (issue 18, item 6): `GET /oauth/web/authorize?redirect=…` picks the login that fits
 * the browser: inside WeChat (User-Agent with MicroMessenger) the Official Account login, elsewhere the
 * website QR login, or the scan-to-login page when that is all there is; a clear JSON error when nothing
 * configured fits. And the embedded QR (wxLogin.js style): the QR page inside the site's own iframe.
 */
const MP = 'wx11112222333344aa';
const MP_SECRET = 'mp-secret-0123456789';
const OPEN = 'wx55556666777788bb';
const OPEN_SECRET = 'open-secret-0123456789';
const PUBLIC = 'https://m.example.com';
const SESSION = '__Host-wxgate_session';
const STATE = '__Host-wxgate_session_state';
const WECHAT_UA = 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN';
const CHROME_UA = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36';
const CSS = `data:text/css;base64,${Buffer.from('.impowerBox .qrcode {width: 200px;}').toString('base64')}`;

let sim: Awaited<ReturnType<typeof startSimulator>>;
const gateways: TestGateway[] = [];

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET, [MP]: MP_SECRET, [OPEN]: OPEN_SECRET } });
});
test.after.always(async () => {
  for (const g of gateways) await g.close();
  await sim?.close();
});

async function gateway(web: Record<string, unknown>): Promise<TestGateway> {
  const g = await startTestGateway(
    testConfig({
      apiBase: sim.url,
      wechat: { apiBase: sim.url, oauthBase: sim.url, timeout: '1s', apps: [{ appid: APPID, secret: SECRET }] },
      web: { publicUrl: PUBLIC, redirects: ['/shop', 'https://shop.example.com'], origins: ['https://www.example.com'], ...web },
    }),
  );
  gateways.push(g);
  return g;
}

const mp = { mp: { appid: MP, secret: MP_SECRET } };
const open = { open: { appid: OPEN, secret: OPEN_SECRET } };
const scan = (demo: boolean) => ({ scan: { checkPath: false, envVersion: 'develop', demo } });

const entry = (g: TestGateway, query: string, ua?: string, headers: Record<string, string> = {}) =>
  request(g.url, { path: `/oauth/web/authorize?${query}`, headers: { accept: 'application/json', ...(ua ? { 'user-agent': ua } : {}), ...headers } });

test('mp and open: inside WeChat the Official Account login, elsewhere the website QR; each ends in a session', async (t) => {
  const g = await gateway({ ...mp, ...open });
  for (const [ua, page, appid, provider] of [
    [WECHAT_UA, '/connect/oauth2/authorize', MP, 'mp'],
    [CHROME_UA, '/connect/qrconnect', OPEN, 'open'],
    [undefined, '/connect/qrconnect', OPEN, 'open'],
  ] as const) {
    const b = new Browser(g.url);
    const start = await b.go('/oauth/web/authorize?redirect=/shop/cart', { headers: ua ? { 'user-agent': ua } : {} });
    t.is(start.status, 302, start.text);
    const wechat = new URL(start.headers.location!);
    t.is(wechat.pathname, page, String(ua));
    t.is(wechat.searchParams.get('appid'), appid);
    t.is(wechat.searchParams.get('redirect_uri'), `${PUBLIC}/oauth/${provider}/callback`);
    t.is(start.headers.vary, 'User-Agent');
    t.is(start.headers['cache-control'], 'no-store');
    t.truthy(setCookies(start).find((c) => c.name === STATE), 'the state cookie');
    const q = new URLSearchParams(wechat.search);
    q.set('user', `entry-${provider}`);
    const back = new URL((await request(sim.url, { path: `/connect/approve?${q}` })).headers.location!);
    const done = await b.go(back.pathname + back.search);
    t.is(done.status, 302, done.text);
    t.is(done.headers.location, '/shop/cart');
    t.truthy(b.jar.get(SESSION));
    t.is((await b.go('/session')).json.appid, appid);
  }
});

test('the redirect is checked first, by the same rule as everywhere: 400 redirect_not_allowed, no state', async (t) => {
  const g = await gateway({ ...mp, ...open });
  for (const target of ['https://evil.example/', '/.//evil.example', '/admin']) {
    for (const ua of [WECHAT_UA, CHROME_UA]) {
      const res = await entry(g, `redirect=${encodeURIComponent(target)}`, ua);
      t.is(res.status, 400, target);
      t.is(res.json.error, 'redirect_not_allowed');
      t.is(res.headers['set-cookie'], undefined);
    }
  }
});

test('only the Official Account: elsewhere than WeChat a clear 400 web_login_unavailable (JSON, or a page for a browser)', async (t) => {
  const g = await gateway(mp);
  t.is((await entry(g, 'redirect=/shop', WECHAT_UA)).status, 302);
  const res = await entry(g, 'redirect=/shop', CHROME_UA);
  t.is(res.status, 400);
  t.is(res.json.error, 'web_login_unavailable');
  t.regex(res.json.message, /inside WeChat only/);
  t.is(res.headers['set-cookie'], undefined);
  const page = await entry(g, 'redirect=/shop', CHROME_UA, { accept: 'text/html' });
  t.is(page.status, 400);
  t.regex(String(page.headers['content-type']), /^text\/html/);
});

test('only the website QR: inside WeChat a clear 400 web_login_unavailable; elsewhere qrconnect', async (t) => {
  const g = await gateway(open);
  const res = await entry(g, 'redirect=/shop', WECHAT_UA);
  t.is(res.status, 400);
  t.is(res.json.error, 'web_login_unavailable');
  t.regex(res.json.message, /outside WeChat/);
  t.is(new URL((await entry(g, 'redirect=/shop', CHROME_UA)).headers.location!).pathname, '/connect/qrconnect');
});

test('only scan-to-login: its page with the approved redirect; without the page a clear error', async (t) => {
  const withPage = await gateway(scan(true));
  const res = await entry(withPage, `redirect=${encodeURIComponent('/shop/x?y=1')}`, CHROME_UA);
  t.is(res.status, 302, res.text);
  t.is(res.headers.location, `/scan/demo?redirect=${encodeURIComponent('/shop/x?y=1')}`);
  t.is((await request(withPage.url, { path: res.headers.location! })).status, 200, 'the page is there');
  const noPage = await gateway(scan(false));
  const refused = await entry(noPage, 'redirect=/shop', CHROME_UA);
  t.is(refused.status, 400);
  t.is(refused.json.error, 'web_login_unavailable');
  t.regex(refused.json.message, /POST \/scan\/tickets/);
  // /oauth is the gateway's even with scan-to-login alone
  await t.throwsAsync(startTestGateway(testConfig({ apiBase: sim.url, routes: [{ path: '/oauth/x', upstream: 'http://127.0.0.1:2' }], web: { publicUrl: PUBLIC, ...scan(false) } })), {
    message: /routes\[0\]\.path.*\/oauth\//s,
  });
});

test('embedded QR (wxLogin.js style): login_type=jssdk, self_redirect, style, href and stylelite go to qrconnect; both entries', async (t) => {
  const g = await gateway({ ...mp, ...open });
  for (const path of ['/oauth/open/authorize', '/oauth/web/authorize']) {
    const b = new Browser(g.url);
    const start = await b.go(`${path}?redirect=/shop&embed=1&self_redirect=true&style=white&stylelite=1&href=${encodeURIComponent(CSS)}`, { headers: { 'user-agent': CHROME_UA } });
    t.is(start.status, 302, start.text);
    const wechat = new URL(start.headers.location!);
    t.is(wechat.pathname, '/connect/qrconnect');
    t.deepEqual([...wechat.searchParams.keys()], ['appid', 'redirect_uri', 'response_type', 'scope', 'state', 'login_type', 'self_redirect', 'style', 'href', 'stylelite']);
    t.is(wechat.searchParams.get('login_type'), 'jssdk');
    t.is(wechat.searchParams.get('self_redirect'), 'true');
    t.is(wechat.searchParams.get('style'), 'white');
    t.is(wechat.searchParams.get('href'), CSS);
    // the login inside the iframe ends as any other
    const q = new URLSearchParams(wechat.search);
    q.set('user', 'embedded');
    const back = new URL((await request(sim.url, { path: `/connect/approve?${q}` })).headers.location!);
    const done = await b.go(back.pathname + back.search);
    t.is(done.status, 302, done.text);
    t.is(done.headers.location, '/shop');
  }
  const plain = new URL((await request(g.url, { path: '/oauth/open/authorize?redirect=/shop&embed=1' })).headers.location!);
  t.is(plain.searchParams.get('self_redirect'), 'default', "WeChat's default: the top window");
  t.is(new URL((await request(g.url, { path: '/oauth/open/authorize?redirect=/shop' })).headers.location!).searchParams.get('login_type'), null, 'not embedded: none of it');
  const css = new URL((await request(g.url, { path: `/oauth/open/authorize?redirect=/shop&href=${encodeURIComponent('https://www.example.com/qr.css')}` })).headers.location!);
  t.is(css.searchParams.get('href'), 'https://www.example.com/qr.css', 'CSS on one of web.origins');
});

test('embedded QR: bad parameters are 400 bad_request, and no state is issued', async (t) => {
  const g = await gateway({ ...mp, ...open });
  for (const q of [
    'style=red',
    'self_redirect=yes',
    'embed=2',
    'stylelite=x',
    `href=${encodeURIComponent('https://evil.example/qr.css')}`,
    `href=${encodeURIComponent('http://www.example.com/qr.css')}`,
    `href=${encodeURIComponent('javascript:alert(1)')}`,
    `href=${encodeURIComponent('data:text/html;base64,PHNjcmlwdD4=')}`,
    'style=black&style=white',
  ]) {
    const res = await request(g.url, { path: `/oauth/open/authorize?redirect=/shop&${q}`, headers: { accept: 'application/json' } });
    t.is(res.status, 400, q);
    t.is(res.json.error, 'bad_request', q);
    t.is(res.headers['set-cookie'], undefined);
  }
});

test('the callback inside an iframe spends nothing and sends the top window to the same URL, escaped for script and attribute', async (t) => {
  const g = await gateway({ ...open });
  const path = `/oauth/open/callback?code=abc&state=x&q="</script><b>&r='`;
  const res = await request(g.url, { path, headers: { 'sec-fetch-dest': 'iframe', accept: 'text/html' } });
  t.is(res.status, 200);
  t.regex(String(res.headers['content-type']), /^text\/html/);
  t.is(res.headers['referrer-policy'], 'no-referrer');
  t.regex(String(res.headers['content-security-policy']), /script-src 'nonce-[A-Za-z0-9+/=]+'/);
  t.false(/<\/script><b>|"<\/script/.test(res.text.replace(/<\/script>\s*<\/body>/, '')), 'nothing breaks out');
  const href = /href="([^"]*)"/.exec(res.text)![1]!.replace(/&#(\d+);/g, (_, n) => String.fromCharCode(Number(n)));
  t.is(href, path);
  const js = JSON.parse(/replace\(("(?:[^"\\]|\\.)*")\)/.exec(res.text)![1]!);
  t.is(js, path);
  t.is(res.headers['set-cookie'], undefined, 'no session, nothing spent');
});

import { existsSync } from 'node:fs';
import test from 'ava';
import { chromium, type Browser, type Frame, type Page } from 'playwright-core';
import { startSimulator } from '../src/dev/simulator.js';
import { APPID, SECRET, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { request } from './helpers/http.js';
import { freePort } from './helpers/ports.js';
import { startUpstream, type Upstream } from './helpers/upstream.js';

/**
 * The embedded QR (wxLogin.js style, issue 18 item 6) in headless Chromium: the site's page (on the
 * gateway's origin) shows WeChat's QR page in an iframe; WeChat (the simulator, on a host of its own,
 * `wechat.test`, so another site as open.weixin.qq.com is) approves; the login ends in the top window
 * (self_redirect false, the default) or inside the iframe (self_redirect=true), with the session
 * cookie set either way (the state cookie is SameSite=Lax: a browser decides whether it is sent).
 */
const CHROMIUM = '/usr/bin/chromium';
const OPEN = 'wx55556666777788bb';
const OPEN_SECRET = 'open-secret-0123456789';

let sim: Awaited<ReturnType<typeof startSimulator>>;
let gw: TestGateway;
let browser: Browser;
let publicUrl: string;
let up: Upstream;

test.before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: this test needs Debian's chromium (apt-get install -y --no-install-recommends chromium)`);
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET, [OPEN]: OPEN_SECRET } });
  up = await startUpstream();
  const simPort = new URL(sim.url).port;
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    publicUrl = `http://127.0.0.1:${port}`;
    try {
      gw = await startTestGateway(
        testConfig({
          apiBase: sim.url,
          server: { host: '127.0.0.1', port },
          wechat: { apiBase: sim.url, oauthBase: `http://wechat.test:${simPort}`, timeout: '1s', apps: [{ appid: APPID, secret: SECRET }] },
          // the site's page after the login: an upstream route of the gateway
          routes: [{ path: '/welcome', upstream: up.url, auth: 'none' }],
          web: { publicUrl, open: { appid: OPEN, secret: OPEN_SECRET } },
        }),
      );
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 5) throw err;
    }
  }
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--host-resolver-rules=MAP wechat.test 127.0.0.1', '--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessChecks,BlockInsecurePrivateNetworkRequests'],
  });
});
test.after.always(async () => {
  await browser?.close();
  await gw?.close();
  await up?.close();
  await sim?.close();
});

/** A fresh profile on the site's login page (served on the gateway's origin), the QR iframe in it. */
async function sitePage(iframeSrc: string): Promise<{ page: Page; close: () => Promise<void>; cookies: () => Promise<Array<{ name: string; value: string }>> }> {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.route(`${publicUrl}/login.html`, (route) =>
    route.fulfill({ contentType: 'text/html', body: `<!doctype html><title>site</title><h1>Log in</h1><iframe id="qr" src="${iframeSrc}" width="300" height="400"></iframe>` }),
  );
  await page.goto(`${publicUrl}/login.html`);
  return { page, close: () => context.close(), cookies: () => context.cookies(publicUrl) };
}

async function qrFrame(page: Page): Promise<Frame> {
  for (let i = 0; i < 100; i++) {
    const f = page.frames().find((x) => x.url().includes('wechat.test') && x.url().includes('/connect/qrconnect'));
    if (f) {
      await f.waitForSelector('#approve-button');
      return f;
    }
    await page.waitForTimeout(50);
  }
  throw new Error(`no QR frame: ${page.frames().map((f) => f.url()).join(', ')}`);
}

async function sessionOf(cookies: Array<{ name: string; value: string }>) {
  const session = cookies.find((c) => c.name === 'wxgate_session');
  if (!session) return undefined;
  return (await request(gw.url, { path: '/session', headers: { cookie: `wxgate_session=${session.value}` } })).json;
}

test.serial('self_redirect false (the default): the phone confirms, the top window goes through the callback to redirect, logged in', async (t) => {
  const { page, close, cookies } = await sitePage('/oauth/open/authorize?redirect=/welcome&embed=1&style=black');
  try {
    const frame = await qrFrame(page);
    await frame.fill('#user', 'embed-top');
    await frame.click('#approve-button');
    await page.waitForURL(`${publicUrl}/welcome`, { timeout: 10_000 });
    const me = await sessionOf(await cookies());
    t.is(me?.appid, OPEN, JSON.stringify(await cookies()));
  } finally {
    await close();
  }
});

test.serial('self_redirect=true: WeChat sends the iframe to the callback, where no SameSite=Lax cookie comes along; the gateway moves the login to the top window, which ends at redirect, logged in', async (t) => {
  const { page, close, cookies } = await sitePage('/oauth/open/authorize?redirect=/welcome&embed=1&self_redirect=true');
  try {
    const frame = await qrFrame(page);
    await frame.fill('#user', 'embed-frame');
    await frame.click('#approve-button');
    await page.waitForURL(`${publicUrl}/welcome`, { timeout: 10_000 });
    const me = await sessionOf(await cookies());
    t.is(me?.appid, OPEN, JSON.stringify(await cookies()));
    // the upstream's page got no Referer carrying the code
    const seen = up.seen.at(-1)!;
    t.is(seen.headers.referer, undefined, String(seen.headers.referer));
  } finally {
    await close();
  }
});

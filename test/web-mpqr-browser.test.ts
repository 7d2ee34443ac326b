import { existsSync } from 'node:fs';
import test from 'ava';
import { chromium, type Browser, type Page } from 'playwright-core';
import { simulatedOpenid, startSimulator } from '../src/dev/simulator.js';
import { APPID, SECRET, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { freePort } from './helpers/ports.js';

/**
 * The follow-QR demo page (web.mpQr.demo → /qr/demo) in headless Chromium (Debian's, driven by
 * playwright-core), with the simulator playing WeChat and the phone: the page shows the Official
 * Account's QR code (an image from the simulator's showqrcode, allowed by the page's CSP), the "phone"
 * opens the simulator's scan page in a tab of its own and presses "Follow and log in", the simulator
 * pushes the encrypted, signed subscribe event to the gateway's server URL, and the page ends up logged
 * in with the HttpOnly session cookie, showing the Official Account user's openid.
 */
const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const MP = 'wx11112222333344aa';
const MP_SECRET = 'mp-secret-0123456789';
const TOKEN = 'browserToken1';
const AES_KEY = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq';
const REPLY = '已登录';

let sim: Awaited<ReturnType<typeof startSimulator>>;
let gw: TestGateway;
let browser: Browser;
let publicUrl: string;
let eventsUrl: string | undefined;

test.before(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: this test needs Debian's chromium (apt-get install -y --no-install-recommends chromium; .ci/run does it)`);
  }
  sim = await startSimulator(0, '127.0.0.1', {
    apps: { [APPID]: SECRET, [MP]: MP_SECRET },
    mp: { appid: MP, token: TOKEN, encodingAESKey: AES_KEY, encrypt: 'safe', url: () => eventsUrl },
  });
  // web.publicUrl is the gateway's own http URL, so its port is chosen up front
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    publicUrl = `http://127.0.0.1:${port}`;
    try {
      gw = await startTestGateway(
        testConfig({
          apiBase: sim.url,
          server: { host: '127.0.0.1', port },
          wechat: { apiBase: sim.url, mpBase: sim.url, timeout: '1s', apps: [{ appid: APPID, secret: SECRET }] },
          web: {
            publicUrl,
            mp: { appid: MP, secret: MP_SECRET },
            mpQr: { token: TOKEN, encodingAESKey: AES_KEY, encrypt: 'safe', reply: REPLY, demo: true },
          },
        }),
      );
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 5) throw err;
    }
  }
  eventsUrl = `${gw.url}/wx/mp/events`;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
});
test.after.always(async () => {
  await browser?.close();
  await gw?.close();
  await sim?.close();
});

const inState = (page: Page, state: string) => page.waitForFunction((s) => document.body.dataset.state === s, state, { timeout: 10_000 });

for (const [locale, heading, confirmed] of [
  ['zh-CN', '扫码关注登录', '登录成功'],
  ['en-US', 'Follow to log in', 'Logged in as'],
] as const) {
  test.serial(`demo page (${locale}): the OA's QR code from showqrcode; the phone follows in WeChat; the page is logged in with the HttpOnly cookie`, async (t) => {
    const context = await browser.newContext({ viewport: { width: 800, height: 700 }, locale });
    try {
      const page = await context.newPage();
      const problems: string[] = [];
      page.on('console', (m) => m.type() === 'error' && problems.push(m.text()));
      page.on('pageerror', (e) => problems.push(String(e)));
      const res = await page.goto(`${publicUrl}/qr/demo`);
      t.is(res?.status(), 200);
      t.regex(res!.headers()['content-security-policy']!, new RegExp(`img-src data: ${sim.url.replace(/[.]/g, '\\.')};`), 'the QR image may come from WeChat (here the simulator), nothing else');
      await inState(page, 'waiting');
      t.is(await page.textContent('#heading'), heading);
      t.is(await page.getAttribute('body', 'data-flow'), 'mpqr');
      // the image is WeChat's showqrcode, and the browser could load and decode it
      await page.waitForFunction(() => {
        const img = document.getElementById('qr') as HTMLImageElement;
        return img.complete && img.naturalWidth > 0;
      });
      const src = (await page.getAttribute('#qr', 'src'))!;
      t.true(src.startsWith(`${sim.url}/cgi-bin/showqrcode?ticket=`), src);
      t.true((await page.$eval('#qr', (el) => (el as HTMLImageElement).naturalWidth)) >= 280);

      // the phone: WeChat "scans" the code (the simulator's page for its ticket) and the user follows
      const phone = await context.newPage();
      const user = `browser${locale.slice(0, 2)}`;
      await phone.goto(`${sim.url}/dev/mp/scan?${new URLSearchParams({ ticket: new URL(src).searchParams.get('ticket')! })}`);
      await phone.fill('#user', user);
      await Promise.all([phone.waitForURL(/\/dev\/mp\/follow/), phone.click('#follow-button')]);
      t.is(await phone.textContent('#status'), '200', 'the gateway answered WeChat 200');
      t.is(await phone.textContent('#reply'), REPLY, 'and the OA replied in the chat (encrypted, decrypted by WeChat)');

      await inState(page, 'confirmed');
      const openid = simulatedOpenid(MP, user);
      t.is(await page.getAttribute('body', 'data-openid'), openid);
      t.true((await page.textContent('#status'))!.startsWith(confirmed));
      t.true(await page.$eval('#qr', (el) => (el as HTMLImageElement).hidden), 'the QR code is gone');
      const cookie = (await context.cookies(publicUrl)).find((c) => c.name === 'wxgate_session');
      t.truthy(cookie, 'the session cookie');
      t.true(cookie!.httpOnly, 'HttpOnly: page scripts cannot read it');
      t.false(await page.evaluate(() => document.cookie.includes('wxgate_session')));
      t.deepEqual(problems, [], 'no console errors (CSP violations would show here)');
    } finally {
      await context.close();
    }
  });
}

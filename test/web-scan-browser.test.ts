import { existsSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { simulatedOpenid, startSimulator } from '../src/wechat/simulator.js';
import { APPID, SECRET, login, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { request } from './helpers/http.js';
import { freePort } from './helpers/ports.js';

/**
 * The scan-to-login demo page (web.scan.demo) in headless Chromium (Debian's, driven by playwright-core):
 * the page gets a ticket and shows its QR code, the "phone" (a mini-program user over HTTP) confirms, and
 * the page ends up logged in with the HttpOnly session cookie. The gateway listens on a port chosen up
 * front, because web.publicUrl (its own http URL) must be known before it listens.
 */
const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let sim: Awaited<ReturnType<typeof startSimulator>>;
let gw: TestGateway;
let browser: Browser;
let publicUrl: string;
const shots = mkdtempSync(join(tmpdir(), 'wxgate-scan-shots-'));

async function gatewayOnFixedPort(): Promise<TestGateway> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    publicUrl = `http://127.0.0.1:${port}`;
    try {
      return await startTestGateway(
        testConfig({
          apiBase: sim.url,
          server: { host: '127.0.0.1', port },
          web: { publicUrl, scan: { demo: true, checkPath: false, envVersion: 'develop' } },
        }),
      );
    } catch (err) {
      // the port was free a moment ago; someone may have taken it since
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 5) throw err;
    }
  }
}

test.before(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: this test needs Debian's chromium (apt-get install -y --no-install-recommends chromium; .ci/run does it)`);
  }
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
  gw = await gatewayOnFixedPort();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
});
test.after.always(async () => {
  await browser?.close();
  await gw?.close();
  await sim?.close();
});

/** A fresh browser profile on the demo page, collecting console errors and page errors (CSP violations show there). */
async function openDemo(): Promise<{ context: BrowserContext; page: Page; problems: string[] }> {
  const context = await browser.newContext({ viewport: { width: 800, height: 700 } });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(String(e)));
  const res = await page.goto(`${publicUrl}/scan/demo`);
  if (!res || res.status() !== 200) throw new Error(`/scan/demo answered ${res?.status()}`);
  return { context, page, problems };
}

/** Waits for the page's QR code and ticket id; checks the image is a PNG the browser could decode. */
async function shownTicket(page: Page): Promise<string> {
  await page.waitForSelector('#ticket[data-ticket]', { timeout: 10_000 });
  const ticket = (await page.getAttribute('#ticket', 'data-ticket'))!;
  await page.waitForFunction(() => {
    const img = document.getElementById('qr') as HTMLImageElement;
    return img.complete && img.naturalWidth > 0;
  });
  const img = await page.$eval('#qr', (el) => {
    const i = el as HTMLImageElement;
    return { src: i.src, w: i.naturalWidth, h: i.naturalHeight };
  });
  if (!img.src.startsWith('data:image/png;base64,') || img.w < 280 || img.h < 280) throw new Error(`QR image: ${img.src.slice(0, 40)} ${img.w}x${img.h}`);
  return ticket;
}

test.serial('demo page: QR code shown, the phone confirms, the page is logged in with the HttpOnly session cookie', async (t) => {
  const { context, page, problems } = await openDemo();
  try {
    t.is(await page.title(), 'wxgate — scan to log in');
    const ticket = await shownTicket(page);
    t.regex(ticket, /^[A-Za-z0-9_-]{22}$/);
    t.is(await page.textContent('#ticket'), ticket);
    t.is(await page.textContent('#status'), 'Waiting for the phone…');
    await page.screenshot({ path: join(shots, 'scan-demo-waiting.png') });

    // the phone: a mini-program user logs in and confirms the ticket it scanned
    const token = await login(gw.url, 'demo-phone.1');
    const openid = simulatedOpenid(APPID, 'demo-phone');
    const confirmed = await request(gw.url, { method: 'POST', path: `/scan/tickets/${ticket}/confirm`, headers: { authorization: `Bearer ${token}` } });
    t.is(confirmed.status, 200, confirmed.text);

    await page.waitForFunction(() => document.body.dataset.openid !== undefined, undefined, { timeout: 10_000 });
    t.is(await page.evaluate(() => document.body.dataset.openid), openid);
    t.is(await page.textContent('#status'), `Logged in as ${openid}`);

    const cookies = await context.cookies(publicUrl);
    const session = cookies.find((c) => c.name === 'wxgate_session');
    t.truthy(session, `the session cookie (have: ${cookies.map((c) => c.name).join(', ')})`);
    t.true(session!.httpOnly, 'HttpOnly');
    t.is(session!.sameSite, 'Lax');
    t.is(session!.path, '/');
    t.not(session!.value, token, 'a session of its own');
    t.is(await page.evaluate(() => document.cookie), '', 'page scripts cannot read it');
    // the browser's cookie is a working session of the phone's user
    const me = await request(gw.url, { path: '/session', headers: { cookie: `wxgate_session=${session!.value}` } });
    t.is(me.json.openid, openid);

    const shot = join(shots, 'scan-demo-logged-in.png');
    await page.screenshot({ path: shot, fullPage: true });
    t.true(statSync(shot).size > 1000);
    t.log(`screenshots in ${shots}`);
    t.deepEqual(problems, [], 'no console errors (a CSP violation would be one)');
  } finally {
    await context.close();
  }
});

test.serial('demo page: a cancel on the phone shows why, and "Show a new code" starts over with a new ticket', async (t) => {
  const { context, page, problems } = await openDemo();
  try {
    const first = await shownTicket(page);
    const token = await login(gw.url, 'demo-cancel.1');
    const cancelled = await request(gw.url, { method: 'POST', path: `/scan/tickets/${first}/cancel`, headers: { authorization: `Bearer ${token}` } });
    t.is(cancelled.status, 200, cancelled.text);
    await page.waitForSelector('#again:not([hidden])', { timeout: 10_000 });
    t.regex((await page.textContent('#status'))!, /cancelled/);
    await page.click('#again');
    await page.waitForFunction((old) => document.getElementById('ticket')!.dataset.ticket !== old, first, { timeout: 10_000 });
    const second = await shownTicket(page);
    t.not(second, first);
    t.true(await page.isHidden('#again'));
    t.is((await context.cookies(publicUrl)).filter((c) => c.name === 'wxgate_session').length, 0, 'no session');
    await page.screenshot({ path: join(shots, 'scan-demo-cancelled-new-code.png') });
    // the page shows 409 answers as messages; the browser logs a failed fetch as a console error for them
    t.true(problems.every((p) => /409/.test(p)), problems.join('\n'));
  } finally {
    await context.close();
  }
});

import { existsSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { simulatedOpenid, startSimulator } from '../src/dev/simulator.js';
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

/** A gateway with the demo page on a port chosen up front; its publicUrl in `.publicUrl`. */
async function gatewayOnFixedPort(opts: { apiBase?: string; scan?: object } = {}): Promise<TestGateway & { publicUrl: string }> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    try {
      const g = await startTestGateway(
        testConfig({
          apiBase: opts.apiBase ?? sim.url,
          server: { host: '127.0.0.1', port },
          web: { publicUrl: url, scan: { demo: true, checkPath: false, envVersion: 'develop', ...opts.scan } },
        }),
      );
      return Object.assign(g, { publicUrl: url });
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
  publicUrl = (gw as TestGateway & { publicUrl: string }).publicUrl;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
});
test.after.always(async () => {
  await browser?.close();
  await gw?.close();
  await sim?.close();
});

/** A fresh browser profile on the demo page, collecting console errors and page errors (CSP violations show there). */
async function openDemo(opts: { locale?: string; base?: string } = {}): Promise<{ context: BrowserContext; page: Page; problems: string[] }> {
  const context = await browser.newContext({ viewport: { width: 800, height: 700 }, locale: opts.locale ?? 'en-US' });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(String(e)));
  const res = await page.goto(`${opts.base ?? publicUrl}/scan/demo`);
  if (!res || res.status() !== 200) throw new Error(`/scan/demo answered ${res?.status()}`);
  return { context, page, problems };
}

/** What the page shows: its state, status line, the QR code's visibility and opacity, the button. */
async function view(page: Page) {
  return page.evaluate(() => {
    const qr = document.getElementById('qr') as HTMLImageElement;
    const again = document.getElementById('again') as HTMLButtonElement;
    const style = getComputedStyle(qr);
    return {
      state: document.body.dataset.state,
      status: document.getElementById('status')!.textContent,
      detail: document.getElementById('detail')!.textContent,
      qrShown: !qr.hidden && style.display !== 'none' && style.visibility !== 'hidden',
      qrOpacity: Number(style.opacity),
      button: again.hidden ? null : again.textContent,
    };
  });
}

const inState = (page: Page, state: string) =>
  page.waitForFunction((s) => document.body.dataset.state === s, state, { timeout: 10_000 });

/** The phone: a mini-program user (simulator code "<user>.1") answers the ticket: scanned, confirm or cancel. */
async function phone(user: string, ticket: string, what: 'scanned' | 'confirm' | 'cancel', base = gw.url): Promise<string> {
  const token = await login(base, `${user}.1`);
  const res = await request(base, { method: 'POST', path: `/scan/tickets/${ticket}/${what}`, headers: { authorization: `Bearer ${token}` } });
  if (res.status !== 200) throw new Error(`${what}: ${res.status} ${res.text}`);
  return token;
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

test.serial('demo page (en-US): QR shown with a labelled ticket; scanned, then confirmed: the QR goes away, the page is logged in with the HttpOnly session cookie', async (t) => {
  const { context, page, problems } = await openDemo({ locale: 'en-US' });
  try {
    t.is(await page.title(), 'wxgate — scan to log in');
    t.is(await page.getAttribute('html', 'lang'), 'en');
    t.is(await page.evaluate(() => document.body.dataset.flow), 'scan');
    const ticket = await shownTicket(page);
    t.regex(ticket, /^[A-Za-z0-9_-]{22}$/);
    t.is(await page.textContent('#ticket'), ticket);
    t.is(await page.textContent('#ticket-label'), 'Ticket', 'the ticket is labelled');
    t.is(await page.getAttribute('#ticket', 'aria-labelledby'), 'ticket-label');
    t.like(await view(page), { state: 'waiting', status: 'Waiting for the phone to scan…', qrShown: true, qrOpacity: 1, button: null });
    await page.screenshot({ path: join(shots, 'scan-demo-waiting.png') });

    // the phone opens the page from the QR code: the PC page says so at once
    await phone('demo-phone', ticket, 'scanned');
    await inState(page, 'scanned');
    const scanned = await view(page);
    t.like(scanned, { status: 'Scanned. Confirm the login on your phone.', qrShown: true, button: null });
    t.true(scanned.qrOpacity < 0.5, 'the QR code is dimmed once scanned');
    await page.screenshot({ path: join(shots, 'scan-demo-scanned.png') });

    const token = await phone('demo-phone', ticket, 'confirm');
    const openid = simulatedOpenid(APPID, 'demo-phone');
    await page.waitForFunction(() => document.body.dataset.openid !== undefined, undefined, { timeout: 10_000 });
    t.is(await page.evaluate(() => document.body.dataset.openid), openid);
    t.like(await view(page), { state: 'confirmed', status: `Logged in as ${openid}`, qrShown: false, button: null });
    t.true(await page.isHidden('#ticket-row'), 'nor the ticket');

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

test.serial('demo page (zh-CN): the same states in Chinese', async (t) => {
  const { context, page, problems } = await openDemo({ locale: 'zh-CN' });
  try {
    t.is(await page.title(), 'wxgate — 扫码登录');
    t.is(await page.getAttribute('html', 'lang'), 'zh-CN');
    t.is(await page.textContent('#heading'), '扫码登录');
    const ticket = await shownTicket(page);
    t.is(await page.textContent('#ticket-label'), '登录票据');
    t.like(await view(page), { state: 'waiting', status: '等待手机扫码…', qrShown: true });
    await phone('demo-zh', ticket, 'scanned');
    await inState(page, 'scanned');
    t.like(await view(page), { status: '扫描成功，请在手机上确认登录' });
    await page.screenshot({ path: join(shots, 'scan-demo-zh-scanned.png') });
    await phone('demo-zh', ticket, 'confirm');
    await inState(page, 'confirmed');
    t.like(await view(page), { status: `登录成功：${simulatedOpenid(APPID, 'demo-zh')}`, qrShown: false });
    t.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test.serial('demo page: a cancel on the phone shows why (en and zh), and the button starts over with a new ticket', async (t) => {
  for (const [locale, status, button] of [
    ['en-US', 'The login was cancelled on the phone.', 'Show a new code'],
    ['zh-CN', '你已在手机上取消登录', '刷新二维码'],
  ] as const) {
    const { context, page, problems } = await openDemo({ locale });
    try {
      const first = await shownTicket(page);
      await phone(`demo-cancel-${locale}`, first, 'cancel');
      await inState(page, 'cancelled');
      const v = await view(page);
      t.like(v, { status, button, qrShown: true }, locale);
      t.true(v.qrOpacity < 0.5, `${locale}: the cancelled QR code is dimmed`);
      await page.screenshot({ path: join(shots, `scan-demo-cancelled-${locale}.png`) });
      await page.click('#again');
      await page.waitForFunction((old) => document.getElementById('ticket')!.dataset.ticket !== undefined && document.getElementById('ticket')!.dataset.ticket !== old, first, { timeout: 10_000 });
      const second = await shownTicket(page);
      t.not(second, first);
      t.like(await view(page), { state: 'waiting', qrOpacity: 1, button: null }, locale);
      t.is((await context.cookies(publicUrl)).filter((c) => c.name === 'wxgate_session').length, 0, 'no session');
      // the page shows 409 answers as states; the browser logs a failed fetch as a console error for them
      t.true(problems.every((p) => /409/.test(p)), problems.join('\n'));
    } finally {
      await context.close();
    }
  }
});

test.serial('demo page: an expired code is dimmed with a refresh button (zh: 二维码已过期 / 刷新二维码) that shows a new QR code', async (t) => {
  const short = await gatewayOnFixedPort({ scan: { ticketTtl: '2s' } });
  const { context, page } = await openDemo({ locale: 'zh-CN', base: short.publicUrl });
  try {
    const first = await shownTicket(page);
    await inState(page, 'expired');
    const v = await view(page);
    t.like(v, { status: '二维码已过期', button: '刷新二维码', qrShown: true });
    t.true(v.qrOpacity < 0.5, 'the expired QR code is dimmed');
    await page.screenshot({ path: join(shots, 'scan-demo-zh-expired.png') });
    await page.click('#again');
    await inState(page, 'waiting');
    const second = await shownTicket(page);
    t.not(second, first);
    t.like(await view(page), { status: '等待手机扫码…', qrOpacity: 1, button: null });
  } finally {
    await context.close();
    await short.close();
  }
});

test.serial('demo page: an error (WeChat unreachable: 503 wechat_unavailable) is shown in the browser\'s language with a retry that asks again', async (t) => {
  const dead = await freePort();
  const broken = await gatewayOnFixedPort({ apiBase: `http://127.0.0.1:${dead}` });
  try {
    for (const [locale, status, button] of [
      ['zh-CN', '微信服务繁忙，请稍后再试', '重试'],
      ['en-US', 'WeChat is busy; try again later.', 'Try again'],
    ] as const) {
      const { context, page } = await openDemo({ locale, base: broken.publicUrl });
      try {
        const asked: string[] = [];
        page.on('request', (r) => {
          if (r.method() === 'POST' && r.url().endsWith('/scan/tickets')) asked.push(r.url());
        });
        await inState(page, 'error');
        t.like(await view(page), { status, detail: 'wechat_unavailable', button }, locale);
        await page.screenshot({ path: join(shots, `scan-demo-error-${locale}.png`) });
        await page.click('#again');
        await page.waitForFunction(() => document.body.dataset.state === 'loading' || document.body.dataset.state === 'error');
        await page.waitForFunction(() => document.body.dataset.state === 'error', undefined, { timeout: 10_000 });
        t.is(asked.length, 1, `${locale}: the retry asked the gateway again`);
        t.like(await view(page), { status, button }, locale);
      } finally {
        await context.close();
      }
    }
  } finally {
    await broken.close();
  }
});

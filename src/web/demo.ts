import { randomBytes } from 'node:crypto';
import type { Context } from 'koa';

/**
 * Demo PC login pages (web.scan.demo: true → GET /scan/demo): a page that asks for a ticket, shows its
 * QR code, follows the ticket's states by long poll (waiting → scanned → confirmed; cancelled, expired,
 * an error), and once confirmed shows who is logged in (GET /session with the new session cookie).
 * In Chinese or English by the browser's language (navigator.language). No framework, no outside
 * resources; a strict CSP with a per-answer nonce.
 *
 * The page is one script for any "show a QR code, wait for the phone" flow: what differs (where the
 * ticket comes from, where to wait, the texts) is a DemoFlow, handed to the page as JSON. Scan-to-login
 * is SCAN_DEMO; another flow (e.g. the Official Account's follow-QR) is another DemoFlow served by
 * `demoPageFor(flow)` on its own path, as long as its endpoints answer the same way:
 *   POST <ticketEndpoint>                  → 201 { ticket, secret, expires_in, qr: data: URL } or { error, message }
 *   GET  <waitEndpoint>/<ticket>?wait=25[&seen=scanned] with X-Scan-Secret
 *                                          → 200 { status: pending | scanned | confirmed } or { error, message }
 */
export interface DemoTexts {
  /** the page's <title> */
  title: string;
  heading: string;
  /** what the user does */
  hint: string;
}

export interface DemoFlow {
  /** a name for the flow, on the page as body[data-flow] */
  id: string;
  /** POST here for a ticket and its QR code */
  ticketEndpoint: string;
  /** GET <waitEndpoint>/<ticket>?wait=… with X-Scan-Secret: the long poll */
  waitEndpoint: string;
  /** after "confirmed": GET here with the new session cookie (shows the openid) */
  sessionEndpoint: string;
  /** where the QR image may come from besides data: URLs (CSP img-src origins; the follow-QR code is WeChat's) */
  imgSrc?: string[];
  texts: { zh: DemoTexts; en: DemoTexts };
}

export const SCAN_DEMO: DemoFlow = {
  id: 'scan',
  ticketEndpoint: '/scan/tickets',
  waitEndpoint: '/scan/tickets',
  sessionEndpoint: '/session',
  texts: {
    en: { title: 'wxgate — scan to log in', heading: 'Scan to log in', hint: 'Scan the code with WeChat and confirm in the mini-program.' },
    zh: { title: 'wxgate — 扫码登录', heading: '扫码登录', hint: '请用微信扫描二维码，并在小程序中确认登录。' },
  },
};

/** JSON inside a <script type="application/json">: nothing in it can end the element. */
const inlineJson = (v: unknown) => JSON.stringify(v).replace(/</g, '\\u003c').replace(/>/g, '\\u003e').replace(/&/g, '\\u0026');

/** The page's own script: the states, the texts of both languages, the loop. Same for every flow. */
const SCRIPT = String.raw`
(() => {
  const flow = JSON.parse(document.getElementById('flow').textContent);
  const lang = /^zh\b/i.test(navigator.language || '') ? 'zh' : 'en';
  const T = {
    en: {
      ticketLabel: 'Ticket', loading: 'Getting a code…', waiting: 'Waiting for the phone to scan…',
      scanned: 'Scanned. Confirm the login on your phone.', confirmed: 'Logged in as {openid}',
      noCookie: 'Confirmed, but this browser did not keep the session cookie.',
      cancelled: 'The login was cancelled on the phone.', expired: 'The code has expired.',
      error: 'The login did not work.', network: 'The connection to the server was lost.',
      again: 'Show a new code', retry: 'Try again',
      codes: {
        rate_limited: 'Too many codes from this address; wait a moment.', wechat_unavailable: 'WeChat is busy; try again later.',
        wechat_timeout: 'WeChat did not answer in time; try again later.', wechat_error: 'WeChat could not make the code.',
        ticket_not_found: 'This code is not known (any more).', ticket_used: 'This code has logged a browser in already.',
        session_store_unavailable: 'The server is busy; try again later.', not_ready: 'The server is starting or stopping; try again.',
      },
    },
    zh: {
      ticketLabel: '登录票据', loading: '正在获取二维码…', waiting: '等待手机扫码…',
      scanned: '扫描成功，请在手机上确认登录', confirmed: '登录成功：{openid}',
      noCookie: '已确认，但此浏览器没有保存登录 Cookie。',
      cancelled: '你已在手机上取消登录', expired: '二维码已过期',
      error: '登录失败', network: '与服务器的连接中断',
      again: '刷新二维码', retry: '重试',
      codes: {
        rate_limited: '获取二维码太频繁，请稍后再试', wechat_unavailable: '微信服务繁忙，请稍后再试',
        wechat_timeout: '微信服务响应超时，请稍后再试', wechat_error: '微信暂时无法生成二维码',
        ticket_not_found: '二维码无效，请刷新', ticket_used: '二维码已使用，请刷新',
        session_store_unavailable: '服务繁忙，请稍后再试', not_ready: '服务正在重启，请重试',
      },
    },
  }[lang];
  const $ = (id) => document.getElementById(id);
  const texts = flow.texts[lang];
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
  document.title = texts.title;
  document.body.dataset.flow = flow.id;
  $('heading').textContent = texts.heading;
  $('hint').textContent = texts.hint;
  $('ticket-label').textContent = T.ticketLabel;

  // one state at a time; the page's look follows body[data-state]
  let run = 0; // each start() has its number: the answers of an older one are dropped
  function state(name, text, detail) {
    document.body.dataset.state = name;
    $('status').textContent = text;
    $('detail').textContent = detail || '';
    const again = ['expired', 'cancelled', 'error', 'nocookie'].includes(name);
    $('again').hidden = !again;
    $('again').textContent = name === 'error' || name === 'nocookie' ? T.retry : T.again;
    $('qr').hidden = name === 'confirmed';
    $('ticket-row').hidden = name === 'confirmed' || name === 'loading';
  }
  const failed = (body, status) => {
    const code = body && typeof body.error === 'string' ? body.error : 'http_' + status;
    if (code === 'ticket_expired') return state('expired', T.expired);
    if (code === 'ticket_cancelled') return state('cancelled', T.cancelled);
    state('error', T.codes[code] || T.error, code);
  };
  const json = (res) => res.json().catch(() => ({}));

  async function start() {
    const mine = ++run;
    state('loading', T.loading);
    $('ticket').textContent = '';
    delete $('ticket').dataset.ticket;
    const res = await fetch(flow.ticketEndpoint, { method: 'POST', headers: { accept: 'application/json' } });
    const t = await json(res);
    if (mine !== run) return;
    if (!res.ok || typeof t.ticket !== 'string') return failed(t, res.status);
    $('qr').src = t.qr;
    $('ticket').textContent = t.ticket;
    $('ticket').dataset.ticket = t.ticket;
    state('waiting', T.waiting);
    let seen = '';
    for (;;) {
      const r = await fetch(flow.waitEndpoint + '/' + encodeURIComponent(t.ticket) + '?wait=25' + (seen ? '&seen=' + seen : ''), { headers: { 'x-scan-secret': t.secret } });
      const a = await json(r);
      if (mine !== run) return;
      if (r.ok && a.status === 'pending') continue;
      if (r.ok && a.status === 'scanned') {
        if (!seen) state('scanned', T.scanned);
        seen = 'scanned';
        continue;
      }
      if (r.ok && a.status === 'confirmed') {
        // the session is the cookie this answer set: GET /session proves the browser kept it (it does not
        // when an https publicUrl's Secure cookie meets a page opened over http)
        const sr = await fetch(flow.sessionEndpoint);
        const s = await json(sr);
        if (!sr.ok || typeof s.openid !== 'string') return state('nocookie', T.noCookie, s.error || '');
        state('confirmed', T.confirmed.replace('{openid}', s.openid));
        document.body.dataset.openid = s.openid;
        return;
      }
      return failed(a, r.status);
    }
  }
  // a network failure (the gateway restarting, the connection cut) offers a retry too
  const go = () => {
    const mine = run + 1;
    start().catch(() => { if (mine === run) state('error', T.network, 'network'); });
  };
  $('again').addEventListener('click', go);
  go();
})();
`;

/** The page for one flow, as a koa handler. */
export function demoPageFor(flow: DemoFlow): (ctx: Context) => void {
  const flowJson = inlineJson(flow);
  const imgSrc = (flow.imgSrc ?? []).map((o) => ` ${new URL(o).origin}`).join('');
  const en = flow.texts.en;
  return function demoPage(ctx: Context): void {
    const nonce = randomBytes(16).toString('base64');
    ctx.set('Cache-Control', 'no-store');
    ctx.set(
      'Content-Security-Policy',
      `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; img-src data:${imgSrc}; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
    );
    ctx.set('X-Content-Type-Options', 'nosniff');
    ctx.type = 'text/html; charset=utf-8';
    // the English texts are the page without script; the script sets the browser's language
    ctx.body = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${esc(en.title)}</title>
<style nonce="${nonce}">
  body { font: 16px/1.5 system-ui, "PingFang SC", "Microsoft YaHei", sans-serif; max-width: 28rem; margin: 3rem auto; text-align: center; color: #222; }
  #qr-box { position: relative; width: 240px; height: 240px; margin: 0 auto; }
  #qr { width: 240px; height: 240px; image-rendering: pixelated; border: 1px solid #ddd; }
  body[data-state="loading"] #qr { visibility: hidden; }
  body[data-state="expired"] #qr, body[data-state="cancelled"] #qr, body[data-state="error"] #qr, body[data-state="nocookie"] #qr { opacity: .12; filter: blur(3px); }
  body[data-state="scanned"] #qr { opacity: .35; }
  #status { margin-top: 1rem; font-weight: 600; }
  body[data-state="confirmed"] #status { color: #07c160; }
  body[data-state="expired"] #status, body[data-state="cancelled"] #status, body[data-state="error"] #status, body[data-state="nocookie"] #status { color: #c0392b; }
  #detail { font-size: 12px; color: #999; }
  #ticket-row { font-size: 12px; color: #666; }
  code { font-size: 12px; }
  button { font: inherit; padding: .3rem 1rem; margin-top: .5rem; }
</style>
</head>
<body data-state="loading">
<script type="application/json" id="flow">${flowJson}</script>
<h1 id="heading">${esc(en.heading)}</h1>
<p id="hint">${esc(en.hint)}</p>
<div id="qr-box"><img id="qr" alt="QR code"></div>
<div id="ticket-row" hidden><span id="ticket-label">Ticket</span>: <code id="ticket" aria-labelledby="ticket-label"></code></div>
<div id="status" role="status" aria-live="polite"></div>
<div><code id="detail"></code></div>
<p><button id="again" type="button" hidden></button></p>
<script nonce="${nonce}">${SCRIPT}</script>
</body>
</html>
`;
  };
}

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** GET /scan/demo: scan-to-login with the mini-program. */
export const demoPage = demoPageFor(SCAN_DEMO);

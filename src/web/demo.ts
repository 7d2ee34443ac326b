import { randomBytes } from 'node:crypto';
import type { Context } from 'koa';

/**
 * GET /scan/demo (web.scan.demo: true): a PC login page to try scan-to-login with. It asks for a ticket,
 * shows its QR code, waits for the phone, and once confirmed shows who is logged in (GET /session with the
 * new session cookie). No framework, no outside resources; a strict CSP with a per-answer nonce.
 */
export function demoPage(ctx: Context): void {
  const nonce = randomBytes(16).toString('base64');
  ctx.set('Cache-Control', 'no-store');
  ctx.set(
    'Content-Security-Policy',
    `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
  );
  ctx.set('X-Content-Type-Options', 'nosniff');
  ctx.type = 'text/html; charset=utf-8';
  ctx.body = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>wxgate — scan to log in</title>
<style nonce="${nonce}">
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 28rem; margin: 3rem auto; text-align: center; color: #222; }
  img { width: 240px; height: 240px; image-rendering: pixelated; border: 1px solid #ddd; }
  #status { margin-top: 1rem; font-weight: 600; }
  code { font-size: 12px; color: #666; }
  button { font: inherit; padding: .3rem 1rem; }
</style>
</head>
<body>
<h1>Scan to log in</h1>
<p>Scan the code with WeChat and confirm in the mini-program.</p>
<img id="qr" alt="QR code">
<div><code id="ticket"></code></div>
<div id="status" role="status">Getting a code…</div>
<p><button id="again" hidden>Show a new code</button></p>
<script nonce="${nonce}">
(() => {
  const $ = (id) => document.getElementById(id);
  const show = (text) => { $('status').textContent = text; };
  async function start() {
    $('again').hidden = true;
    const res = await fetch('/scan/tickets', { method: 'POST' });
    const t = await res.json();
    if (!res.ok) { show(t.message || 'Could not get a code.'); $('again').hidden = false; return; }
    $('qr').src = t.qr;
    $('ticket').textContent = t.ticket;
    $('ticket').dataset.ticket = t.ticket;
    show('Waiting for the phone…');
    for (;;) {
      const r = await fetch('/scan/tickets/' + t.ticket + '?wait=25', { headers: { 'x-scan-secret': t.secret } });
      const a = await r.json();
      if (r.ok && a.status === 'pending') continue;
      if (r.ok && a.status === 'confirmed') {
        // the session is the cookie this answer set: GET /session proves the browser kept it (it does not
        // when an https publicUrl's Secure cookie meets a page opened over http)
        const sr = await fetch('/session');
        const s = await sr.json().catch(() => ({}));
        if (!sr.ok || typeof s.openid !== 'string') {
          show('Confirmed, but this browser did not keep the session cookie' + (s.message ? ': ' + s.message : '.'));
          $('again').hidden = false;
          return;
        }
        show('Logged in as ' + s.openid);
        document.body.dataset.openid = s.openid;
        return;
      }
      show(a.message || 'The code did not work.');
      $('again').hidden = false;
      return;
    }
  }
  // a network failure (the gateway restarting, the connection cut) offers a new code too
  const run = () => start().catch((e) => { show(String(e)); $('again').hidden = false; });
  $('again').addEventListener('click', run);
  run();
})();
</script>
</body>
</html>
`;
}

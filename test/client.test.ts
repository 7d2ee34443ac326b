import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { createClient, ERROR_TEXTS, errorText, scanTicket, type ClientError, type WxLike, type WxSocketTask } from '../client/wxgate.js';
import { ERRORS } from '../src/base/errors.js';
import { simulatedOpenid, startSimulator } from '../src/dev/simulator.js';
import { APPID, SECRET, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { request } from './helpers/http.js';
import { startUpstream, type Upstream } from './helpers/upstream.js';
import WebSocket from 'ws';
import { waitFor } from './helpers/wait.js';
import { startWsUpstream, type WsUpstream } from './helpers/ws.js';

/**
 * The mini-program client helper (client/wxgate.js, issue 8) driven by a fake `wx` whose request()
 * goes over node's http: against the real gateway (simulator as WeChat, a real upstream, the admin API,
 * scan-to-login), and against a tiny fake gateway where a test needs answers the real one will not give.
 */
const ADMIN_TOKEN = 'admin-token-for-client-tests-0123';
/** an Official Account of the gateway: a route only for it refuses the mini-program's sessions */
const OTHER_APP = 'wx9999999999999999';

let sim: Awaited<ReturnType<typeof startSimulator>>;
let up: Upstream;
let wsUp: WsUpstream;
let gw: TestGateway;
const files = mkdtempSync(join(tmpdir(), 'wxgate-client-'));
let saved = 0;
let deadUrl: string;
let users = 0;
let codes = 0;

interface Sent {
  method: string;
  url: string;
  path: string;
  header: Record<string, string>;
  data: unknown;
}

interface FakeWx extends WxLike {
  user: string;
  storage: Map<string, unknown>;
  /** what WeChat would say to wx.checkSession; a wx.login makes it valid again, as on a phone */
  sessionValid: boolean;
  counts: { login: number; checkSession: number; handshakes: number };
  sent: Sent[];
  /** requests the fake wx sent to `path` (method too if given) */
  to(path: string, method?: string): Sent[];
}

/** A fake `wx`: a user of the simulator (every wx.login a new "<user>.<n>" code), storage, checkSession. */
function fakeWx(opts: { user?: string; storage?: Map<string, unknown>; sessionValid?: boolean } = {}): FakeWx {
  const w: FakeWx = {
    user: opts.user ?? `cuser${++users}`,
    storage: opts.storage ?? new Map(),
    sessionValid: opts.sessionValid ?? true,
    counts: { login: 0, checkSession: 0, handshakes: 0 },
    sent: [],
    to(path, method) {
      return w.sent.filter((s) => s.path === path && (!method || s.method === method));
    },
    login({ success }) {
      w.counts.login++;
      const code = `${w.user}.${++codes}`;
      setTimeout(() => {
        w.sessionValid = true;
        success({ code, errMsg: 'login:ok' });
      }, 5);
    },
    checkSession({ success, fail }) {
      w.counts.checkSession++;
      setTimeout(() => (w.sessionValid ? success({ errMsg: 'checkSession:ok' }) : fail({ errMsg: 'checkSession:fail session time out' })), 2);
    },
    getStorageSync: (key) => (w.storage.has(key) ? w.storage.get(key) : ''),
    setStorageSync: (key, value) => void w.storage.set(key, value),
    removeStorageSync: (key) => void w.storage.delete(key),
    // wx.uploadFile: a multipart/form-data POST of the file and formData; the answer's body as a string
    uploadFile(o) {
      const boundary = `----wxupload${randomBytes(8).toString('hex')}`;
      const parts: Buffer[] = [];
      for (const [k, v] of Object.entries(o.formData ?? {})) parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${String(v)}\r\n`));
      parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${o.name}"; filename="${o.filePath.split('/').pop()}"\r\nContent-Type: application/octet-stream\r\n\r\n`));
      parts.push(readFileSync(o.filePath), Buffer.from(`\r\n--${boundary}--\r\n`));
      const body = Buffer.concat(parts);
      const header: Record<string, string> = { ...(o.header ?? {}), 'content-type': `multipart/form-data; boundary=${boundary}` };
      const u = new URL(o.url);
      w.sent.push({ method: 'POST', url: o.url, path: u.pathname, header, data: o.formData });
      const req = http.request(u, { method: 'POST', headers: header, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => o.success({ statusCode: res.statusCode!, data: Buffer.concat(chunks).toString(), header: res.headers as Record<string, unknown>, errMsg: 'uploadFile:ok' }));
      });
      req.on('error', (e) => o.fail({ errMsg: `uploadFile:fail ${e.message}` }));
      req.end(body);
      return { abort: () => req.destroy() };
    },
    // wx.downloadFile: a GET whose body, whatever the status, is saved to a temp file
    downloadFile(o) {
      const u = new URL(o.url);
      w.sent.push({ method: 'GET', url: o.url, path: u.pathname, header: { ...(o.header ?? {}) }, data: undefined });
      const req = http.request(u, { method: 'GET', headers: o.header ?? {}, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const tempFilePath = join(files, `tmp-${++saved}`);
          writeFileSync(tempFilePath, Buffer.concat(chunks));
          o.success({ statusCode: res.statusCode!, tempFilePath, errMsg: 'downloadFile:ok' });
        });
      });
      req.on('error', (e) => o.fail({ errMsg: `downloadFile:fail ${e.message}` }));
      req.end();
      return { abort: () => req.destroy() };
    },
    getFileSystemManager: () => ({ readFileSync: (path: string) => readFileSync(path, 'utf8') }),
    // wx.connectSocket: as on a phone, a refused handshake is only onError + onClose, without the status
    connectSocket(o) {
      w.counts.handshakes++;
      return fakeSocket(w, o.url, o.header ?? {});
    },
    request(o) {
      const method = (o.method ?? 'GET').toUpperCase();
      const header: Record<string, string> = { ...(o.header ?? {}) };
      let url = o.url;
      let body: string | undefined;
      // wx.request: GET data goes to the query string, an object otherwise as JSON
      if (o.data !== undefined && method === 'GET' && typeof o.data === 'object') {
        const q = new URLSearchParams(o.data as Record<string, string>).toString();
        if (q) url += (url.includes('?') ? '&' : '?') + q;
      } else if (o.data !== undefined) {
        body = typeof o.data === 'string' ? o.data : JSON.stringify(o.data);
        if (!Object.keys(header).some((k) => k.toLowerCase() === 'content-type')) header['content-type'] = 'application/json';
      }
      const u = new URL(url);
      w.sent.push({ method, url, path: u.pathname, header, data: o.data });
      const req = http.request(u, { method, headers: header, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          let data: unknown = text;
          if (o.dataType !== 'text') {
            try {
              data = JSON.parse(text);
            } catch {
              /* wx leaves an unparsable body as a string */
            }
          }
          o.success({ statusCode: res.statusCode!, data, header: res.headers as Record<string, unknown>, errMsg: 'request:ok' });
        });
      });
      let failed = false;
      const fail = (errMsg: string) => {
        if (failed) return;
        failed = true;
        o.fail({ errMsg });
      };
      if (typeof o.timeout === 'number') {
        req.setTimeout(o.timeout, () => {
          fail('request:fail timeout');
          req.destroy();
        });
      }
      req.on('error', (e) => fail(`request:fail ${e.message}`));
      req.end(body);
      return { abort: () => req.destroy() };
    },
  };
  return w;
}

/** wx's SocketTask on a `ws` client: text messages, close frames; a refused handshake is error + close. */
function fakeSocket(w: FakeWx, url: string, header: Record<string, string>): WxSocketTask {
  const on = { open: [] as Array<(r?: unknown) => void>, message: [] as Array<(r: { data: string }) => void>, error: [] as Array<(r: { errMsg: string }) => void>, close: [] as Array<(r: { code: number; reason: string }) => void> };
  const u = new URL(url.replace(/^ws/, 'http'));
  w.sent.push({ method: 'GET', url, path: u.pathname, header: { ...header }, data: undefined });
  const ws = new WebSocket(url, { headers: header, perMessageDeflate: false });
  ws.on('open', () => on.open.forEach((f) => f({})));
  ws.on('message', (data) => on.message.forEach((fn) => fn({ data: data.toString() })));
  ws.on('error', (err) => {
    if (ws.readyState !== WebSocket.OPEN) on.error.forEach((f) => f({ errMsg: /Unexpected server response/.test(err.message) ? 'Invalid HTTP status' : 'connect fail' }));
  });
  ws.on('close', (code, reason) => setImmediate(() => on.close.forEach((f) => f({ code, reason: reason.toString() }))));
  return {
    onOpen: (f) => void on.open.push(f),
    onMessage: (f) => void on.message.push(f as (r: { data: string }) => void),
    onError: (f) => void on.error.push(f),
    onClose: (f) => void on.close.push(f),
    send: (o) => {
      if (ws.readyState !== WebSocket.OPEN) return o.fail?.({ errMsg: 'sendSocketMessage:fail not open' });
      ws.send(String(o.data));
      o.success?.({});
    },
    close: (o = {}) => (ws.readyState === WebSocket.OPEN ? ws.close(o.code ?? 1000) : ws.terminate()),
  };
}

/** The events an app sees on a socket of the helper, in order; resolves `closed` on its close. */
function watch(task: WxSocketTask) {
  const events: string[] = [];
  const messages: string[] = [];
  let opened!: () => void;
  let closed!: (r: { code: number; reason: string }) => void;
  const open = new Promise<void>((r) => (opened = r));
  const close = new Promise<{ code: number; reason: string }>((r) => (closed = r));
  task.onOpen(() => {
    events.push('open');
    opened();
  });
  task.onMessage((m) => {
    events.push('message');
    messages.push(String(m.data));
  });
  task.onError((e) => void events.push(`error${e.error ? `:${e.error}` : ''}`));
  task.onClose((c) => {
    events.push(`close:${c.code}`);
    closed(c);
  });
  const nextMessage = (n: number) => waitFor(() => messages[n], { message: `message #${n}` });
  // opened: the socket opened, or the test fails at once with what the app saw instead
  const opened2 = Promise.race([open, close.then(() => Promise.reject(new Error(`closed before open: ${events.join(', ')}`)))]);
  opened2.catch(() => {});
  return { events, messages, open: opened2, close, nextMessage };
}

/** The stored token of a fake wx (default storage key). */
const stored = (w: FakeWx) => w.storage.get('wxgate_token') as string | undefined;

const rejects = async (p: Promise<unknown>): Promise<ClientError> => {
  try {
    await p;
  } catch (e) {
    return e as ClientError;
  }
  throw new Error('expected a rejection');
};

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET, [OTHER_APP]: 'oa-secret' } });
  up = await startUpstream();
  wsUp = await startWsUpstream();
  const dead = http.createServer();
  await new Promise<void>((r) => dead.listen(0, '127.0.0.1', r));
  deadUrl = `http://127.0.0.1:${(dead.address() as AddressInfo).port}`;
  await new Promise<void>((r) => dead.close(() => r()));
  gw = await startTestGateway(
    testConfig({
      apiBase: sim.url,
      routes: [
        { path: '/api', upstream: up.url },
        { path: '/api/public', upstream: up.url, auth: 'none' },
        { path: '/down', upstream: deadUrl },
        { path: '/ws', upstream: wsUp.url },
        { path: '/ws-other-app', upstream: wsUp.url, apps: [OTHER_APP] },
      ],
      admin: { port: 0, token: ADMIN_TOKEN },
      web: { publicUrl: 'http://127.0.0.1:8080', scan: { checkPath: false }, mp: { appid: OTHER_APP, secret: 'oa-secret' } },
    }),
  );
});
test.after.always(async () => {
  await gw?.close();
  await up?.close();
  await wsUp?.close();
  await sim?.close();
});

test('the first request logs in (wx.login → POST /login), stores the token, and the upstream sees X-Openid', async (t) => {
  const w = fakeWx();
  const api = createClient({ baseUrl: gw.url, wx: w });
  const res = await api.request({ url: '/api/orders?x=1', method: 'POST', data: { item: 7 }, header: { 'x-trace': 'abc' } });
  t.is(res.statusCode, 200);
  t.deepEqual(res.data, { ok: true, url: '/api/orders?x=1', openid: simulatedOpenid(APPID, w.user) });
  t.is(res.header['x-upstream'], 'yes');
  t.is(w.counts.login, 1);
  t.is(w.counts.checkSession, 0, 'no stored token: nothing to check');
  t.deepEqual(w.to('/login').map((s) => s.method), ['POST']);
  t.regex(stored(w)!, /^[A-Za-z0-9_-]{59}$/);

  const seen = up.seen.find((s) => s.headers['x-openid'] === simulatedOpenid(APPID, w.user))!;
  t.is(seen.method, 'POST');
  t.is(seen.headers['x-openid'], simulatedOpenid(APPID, w.user));
  t.is(seen.headers['x-trace'], 'abc', 'header passed through');
  t.deepEqual(JSON.parse(seen.body), { item: 7 }, 'data passed through');
  t.is(w.to('/api/orders')[0]!.header.Authorization, `Bearer ${stored(w)}`);

  const s = await api.session();
  t.is(s.openid, simulatedOpenid(APPID, w.user));
  t.is(s.appid, APPID);
  t.true(s.expires_in > 7000);
  t.is(w.counts.login, 1, 'the token is reused');
});

test('GET data goes to the query string; auth: false sends no token and does not log in', async (t) => {
  const w = fakeWx();
  const api = createClient({ baseUrl: `${gw.url}/`, wx: w });
  const pub = await api.request({ url: '/api/public/info', data: { q: 'a b' }, auth: false });
  t.is(pub.data.url, '/api/public/info?q=a+b');
  t.is(pub.data.openid, null);
  t.is(w.counts.login, 0);
  t.is(w.to('/api/public/info')[0]!.header.Authorization, undefined);
  t.is(w.to('/api/public/info')[0]!.url, `${gw.url}/api/public/info?q=a+b`, 'a trailing / of baseUrl is dropped');
  await t.throwsAsync(api.request({ url: 'https://elsewhere.example.com/x' }), { instanceOf: TypeError }, 'only paths on the gateway: the token goes nowhere else');
});

test('the token is stored and reused by a new client (an app restart): checkSession once, no login', async (t) => {
  const storage = new Map<string, unknown>();
  const first = fakeWx({ storage });
  await createClient({ baseUrl: gw.url, wx: first }).request({ url: '/api/a' });
  const token = stored(first);
  t.truthy(token);

  const again = fakeWx({ user: first.user, storage });
  const api = createClient({ baseUrl: gw.url, wx: again });
  const [r1, r2] = await Promise.all([api.request({ url: '/api/b' }), api.request({ url: '/api/c' })]);
  await api.request({ url: '/api/d' });
  t.is(r1.data.openid, simulatedOpenid(APPID, first.user));
  t.is(r2.data.openid, simulatedOpenid(APPID, first.user));
  t.is(again.counts.login, 0, 'no new login');
  t.is(again.to('/login').length, 0);
  t.is(again.counts.checkSession, 1, 'checked once, at start-up');
  t.true(again.sent.every((s) => s.header.Authorization === `Bearer ${token}`));

  const custom = fakeWx({ user: first.user, storage });
  await createClient({ baseUrl: gw.url, wx: custom, storageKey: 'other' }).request({ url: '/api/e' });
  t.is(custom.counts.login, 1, 'another storageKey is another token');
  t.is(typeof storage.get('other'), 'string');
  t.not(storage.get('other'), token);
});

test('ten concurrent requests without a token share one login', async (t) => {
  const w = fakeWx();
  const api = createClient({ baseUrl: gw.url, wx: w });
  const answers = await Promise.all([...Array(10)].map((_, i) => api.request({ url: `/api/n${i}` })));
  t.true(answers.every((r) => r.statusCode === 200 && r.data.openid === simulatedOpenid(APPID, w.user)));
  t.is(w.counts.login, 1);
  t.is(w.to('/login', 'POST').length, 1);
  t.is(new Set(w.sent.filter((s) => s.path !== '/login').map((s) => s.header.Authorization)).size, 1);
});

test('a token revoked elsewhere (POST /logout) → one re-login and the request succeeds', async (t) => {
  const w = fakeWx();
  const api = createClient({ baseUrl: gw.url, wx: w });
  await api.request({ url: '/api/before' });
  const old = stored(w)!;
  const out = await request(gw.url, { method: 'POST', path: '/logout', headers: { authorization: `Bearer ${old}` } });
  t.is(out.status, 204);

  const res = await api.request({ url: '/api/after', method: 'PUT', data: { n: 1 } });
  t.is(res.statusCode, 200);
  t.is(res.data.openid, simulatedOpenid(APPID, w.user));
  t.is(w.counts.login, 2);
  t.is(w.to('/login').length, 2);
  const tries = w.to('/api/after');
  t.deepEqual(tries.map((s) => s.header.Authorization), [`Bearer ${old}`, `Bearer ${stored(w)}`]);
  t.not(stored(w), old);
  const reached = up.seen.filter((s) => s.url === '/api/after' && s.headers['x-openid'] === simulatedOpenid(APPID, w.user));
  t.is(reached.length, 1, 'the upstream got the request once');
  t.is(reached[0]!.method, 'PUT');
  t.deepEqual(JSON.parse(reached[0]!.body), { n: 1 }, 'the retry sends the same body');
});

test('every session revoked by the admin API, ten requests in flight → one re-login between them', async (t) => {
  const w = fakeWx();
  const api = createClient({ baseUrl: gw.url, wx: w });
  await api.request({ url: '/api/before' });
  const old = stored(w)!;
  const del = await request(gw.adminUrl!, {
    method: 'DELETE',
    path: `/users/${APPID}/${simulatedOpenid(APPID, w.user)}/sessions`,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  t.is(del.status, 200, del.text);
  t.true(del.json.revoked >= 1);

  const answers = await Promise.all([...Array(10)].map((_, i) => api.request({ url: `/api/r${i}` })));
  t.true(answers.every((r) => r.statusCode === 200));
  t.is(w.counts.login, 2, 'one login at first, one after the revocation');
  t.is(w.to('/login').length, 2);
  for (let i = 0; i < 10; i++) {
    t.deepEqual(w.to(`/api/r${i}`).map((s) => s.header.Authorization), [`Bearer ${old}`, `Bearer ${stored(w)}`]);
  }
});

test('wx.checkSession failing at start-up forces a login before the first request', async (t) => {
  const storage = new Map<string, unknown>();
  const first = fakeWx({ storage });
  await createClient({ baseUrl: gw.url, wx: first }).request({ url: '/api/a' });
  const old = stored(first)!;

  const w = fakeWx({ user: first.user, storage, sessionValid: false });
  const api = createClient({ baseUrl: gw.url, wx: w });
  const [a, b] = await Promise.all([api.request({ url: '/api/x' }), api.request({ url: '/api/y' })]);
  t.is(a.statusCode, 200);
  t.is(b.statusCode, 200);
  t.is(w.counts.checkSession, 1);
  t.is(w.counts.login, 1, 'one login for both');
  t.not(stored(w), old);
  t.deepEqual(w.sent.map((s) => s.path).slice(0, 1), ['/login'], 'the login comes before the requests');
  t.false(w.sent.some((s) => s.header.Authorization === `Bearer ${old}`), 'the stale token is never sent');

  await api.request({ url: '/api/z' });
  t.is(w.counts.checkSession, 1, 'only at start-up');
});

test('non-401 errors reject with the gateway\'s code and are not retried', async (t) => {
  const w = fakeWx();
  const api = createClient({ baseUrl: gw.url, wx: w });
  await api.request({ url: '/api/warm' });

  const nf = await rejects(api.request({ url: '/nowhere' }));
  t.true(nf instanceof Error);
  t.is(nf.statusCode, 404);
  t.is(nf.error, 'not_found');
  t.is(typeof nf.message, 'string');
  t.true(nf.message.length > 0);
  t.is(w.to('/nowhere').length, 1);

  const down = await rejects(api.request({ url: '/down/x' }));
  t.is(down.statusCode, 502);
  t.is(down.error, 'upstream_unavailable');
  t.is(w.to('/down/x').length, 1);
  t.is(w.counts.login, 1, 'no login for these');
});

test('a timeout and an unreachable gateway reject with wx\'s fail reason', async (t) => {
  const w = fakeWx();
  const api = createClient({ baseUrl: gw.url, wx: w });
  await api.request({ url: '/api/warm' });
  const slow = await rejects(api.request({ url: '/api/slow?ms=2000', timeout: 200 }));
  t.is(slow.message, 'request:fail timeout');
  t.is(slow.errMsg, 'request:fail timeout');
  t.is(slow.error, 'request_failed');
  t.is(slow.statusCode, undefined);
  t.is(w.to('/api/slow').length, 1, 'not retried');
  // the options' timeout applies when a request names none (a slow answer, not a fast one under a tight
  // timeout: on a loaded machine a 10 ms answer can take longer than 200 ms)
  const viaOptions = await rejects(createClient({ baseUrl: gw.url, wx: w, timeout: 300 }).request({ url: '/api/slow?ms=3000' }));
  t.is(viaOptions.message, 'request:fail timeout', 'a default timeout from the options');

  const off = fakeWx();
  const err = await rejects(createClient({ baseUrl: deadUrl, wx: off }).request({ url: '/api/x' }));
  t.regex(err.message, /^request:fail /);
  t.is(err.error, 'request_failed');
  t.is(off.sent.length, 1, 'the login failed; nothing else was sent');
});

test('a login WeChat refuses rejects with the gateway\'s code', async (t) => {
  const w = fakeWx();
  // the simulator's code for WeChat's errcode 40029 (invalid code)
  w.login = ({ success }) => {
    w.counts.login++;
    setTimeout(() => success({ code: 'fail-40029' }), 1);
  };
  const err = await rejects(createClient({ baseUrl: gw.url, wx: w }).request({ url: '/api/x' }));
  t.is(err.statusCode, 401);
  t.is(err.error, 'code_invalid');
  t.is(w.counts.login, 1, 'a refused login is not a 401 on a request: not retried');
  t.is(w.to('/api/x').length, 0);

  const broken = fakeWx();
  broken.login = ({ fail }) => setTimeout(() => fail({ errMsg: 'login:fail network' }), 1);
  const e2 = await rejects(createClient({ baseUrl: gw.url, wx: broken }).request({ url: '/api/x' }));
  t.is(e2.error, 'wx_login_failed');
  t.is(e2.message, 'login:fail network');
});

test('logout ends the session at the gateway and forgets the token; the next request logs in', async (t) => {
  const w = fakeWx();
  const api = createClient({ baseUrl: gw.url, wx: w });
  await api.request({ url: '/api/a' });
  const old = stored(w)!;
  await api.logout();
  t.is(stored(w), undefined);
  t.is((await request(gw.url, { path: '/session', headers: { authorization: `Bearer ${old}` } })).status, 401);
  await api.logout(); // nothing to do
  t.is(w.to('/logout').length, 1);
  await api.request({ url: '/api/b' });
  t.is(w.counts.login, 2);
  t.not(stored(w), old);
});

test('confirmScan: the page\'s scene → POST /scan/tickets/:id/confirm with the Bearer token', async (t) => {
  const made = await request(gw.url, { method: 'POST', path: '/scan/tickets', headers: { accept: 'application/json' } });
  t.is(made.status, 201, made.text);
  const pageOptions = { scene: encodeURIComponent(made.json.ticket) };
  const ticket = scanTicket(pageOptions)!;
  t.is(ticket, made.json.ticket);
  t.is(scanTicket({}), null);

  const w = fakeWx();
  const api = createClient({ baseUrl: gw.url, wx: w });
  t.deepEqual(await api.scannedScan(ticket), { status: 'scanned' });
  const shown = await request(gw.url, { path: `/scan/tickets/${ticket}`, headers: { 'x-scan-secret': made.json.secret } });
  t.deepEqual(shown.json, { status: 'scanned' }, 'the PC page sees the scan');
  t.deepEqual(await api.confirmScan(ticket), { status: 'confirmed' });
  const sent = w.to(`/scan/tickets/${ticket}/confirm`, 'POST');
  t.is(sent.length, 1);
  t.is(sent[0]!.header.Authorization, `Bearer ${stored(w)}`);

  const poll = await request(gw.url, { path: `/scan/tickets/${ticket}`, headers: { 'x-scan-secret': made.json.secret } });
  t.is(poll.status, 200);
  t.is(poll.json.status, 'confirmed');

  const again = await rejects(api.confirmScan(ticket));
  t.is(again.statusCode, 409);
  t.is(again.error, 'ticket_already_confirmed');
  t.is(w.to(`/scan/tickets/${ticket}/confirm`).length, 2, 'not retried');
  await t.throwsAsync(api.confirmScan(''), { instanceOf: TypeError });
});

test.serial('the token is never logged (console) by the client', async (t) => {
  const lines: string[] = [];
  const methods = ['log', 'info', 'warn', 'error', 'debug'] as const;
  const saved = methods.map((m) => console[m]);
  for (const m of methods) console[m] = (...args: unknown[]) => void lines.push(args.map(String).join(' '));
  try {
    const w = fakeWx();
    const api = createClient({ baseUrl: gw.url, wx: w });
    await api.request({ url: '/api/a' });
    await request(gw.url, { method: 'POST', path: '/logout', headers: { authorization: `Bearer ${stored(w)}` } });
    await api.request({ url: '/api/b' });
    await rejects(api.request({ url: '/nowhere' }));
    await api.logout();
  } finally {
    methods.forEach((m, i) => (console[m] = saved[i]!));
  }
  t.deepEqual(lines, []);
});

// --- a tiny fake gateway, for answers the real one does not give on demand ---

interface Fake {
  url: string;
  hits: Array<{ method: string; path: string; auth?: string }>;
  close(): Promise<void>;
}

async function fakeGateway(answer: (path: string, auth: string | undefined) => [number, unknown]): Promise<Fake> {
  let tokens = 0;
  const hits: Fake['hits'] = [];
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const path = req.url!.split('?')[0]!;
      hits.push({ method: req.method!, path, auth: req.headers.authorization });
      const [status, body] = path === '/login' ? [200, { token: `fake-token-${++tokens}`, expires_in: 7200 }] : answer(path, req.headers.authorization);
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    hits,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

test('a 401 on the retried request is the error: one retry per request, never a loop', async (t) => {
  const fake = await fakeGateway(() => [401, { error: 'unauthorized', message: 'no valid session' }]);
  try {
    const w = fakeWx();
    const api = createClient({ baseUrl: fake.url, wx: w });
    const err = await rejects(api.request({ url: '/api/x' }));
    t.is(err.statusCode, 401);
    t.is(err.error, 'unauthorized');
    t.is(err.message, 'no valid session');
    t.is(w.counts.login, 2, 'the first login and one re-login');
    t.deepEqual(
      fake.hits.map((h) => `${h.method} ${h.path} ${h.auth ?? '-'}`),
      ['POST /login -', 'GET /api/x Bearer fake-token-1', 'POST /login -', 'GET /api/x Bearer fake-token-2'],
    );
  } finally {
    await fake.close();
  }
});

test('a 503 (and an upstream\'s own 401) is passed through, not retried', async (t) => {
  const fake = await fakeGateway((path) =>
    path === '/busy' ? [503, { error: 'session_store_unavailable', message: 'the session store is unavailable' }] : [401, { reason: 'upstream says no' }],
  );
  try {
    const w = fakeWx();
    const api = createClient({ baseUrl: fake.url, wx: w });
    const busy = await rejects(api.request({ url: '/busy' }));
    t.is(busy.statusCode, 503);
    t.is(busy.error, 'session_store_unavailable');
    t.is(busy.message, 'the session store is unavailable');
    const other = await rejects(api.request({ url: '/upstream-401' }));
    t.is(other.statusCode, 401);
    t.is(other.error, 'http_401');
    t.deepEqual(other.data, { reason: 'upstream says no' });
    t.is(w.counts.login, 1);
    t.deepEqual(fake.hits.map((h) => h.path), ['/login', '/busy', '/upstream-401']);
  } finally {
    await fake.close();
  }
});

test('appid is sent with the login when given', async (t) => {
  const fake = await fakeGateway(() => [200, { ok: true }]);
  try {
    const w = fakeWx();
    const { token } = await createClient({ baseUrl: fake.url, wx: w, appid: APPID }).login();
    t.is(token, 'fake-token-1');
    const sent = w.to('/login')[0]!.data as { code: string; appid: string };
    t.regex(sent.code, new RegExp(`^${w.user}\\.\\d+$`));
    t.deepEqual(Object.keys(sent).sort(), ['appid', 'code']);
    t.is(sent.appid, APPID);
  } finally {
    await fake.close();
  }
});

// --- wx.uploadFile, wx.downloadFile, wx.connectSocket (issue 17 item 8) ---

/** Ends every session of the fake wx's user at the gateway, as a logout elsewhere would. */
async function revoke(w: FakeWx): Promise<string> {
  const old = stored(w)!;
  const out = await request(gw.url, { method: 'POST', path: '/logout', headers: { authorization: `Bearer ${old}` } });
  if (out.status !== 204) throw new Error(`logout: ${out.status}`);
  return old;
}

test('uploadFile: the token in the header, the file reaches the upstream as the user; a revoked token → one re-login and one retry', async (t) => {
  const w = fakeWx();
  const api = createClient({ baseUrl: gw.url, wx: w });
  const filePath = join(files, 'photo.jpg');
  writeFileSync(filePath, 'JPEG-BYTES-0123');
  const first = await api.uploadFile({ url: '/api/upload?n=1', filePath, name: 'photo', formData: { album: 'a1' } });
  t.is(first.statusCode, 200);
  t.is(typeof first.data, 'string', 'wx gives the body as a string; kept so');
  t.is(JSON.parse(first.data).openid, simulatedOpenid(APPID, w.user));
  t.is(w.counts.login, 1);
  t.is(w.to('/api/upload')[0]!.header.Authorization, `Bearer ${stored(w)}`);
  const seen = up.seen.find((s) => s.url === '/api/upload?n=1')!;
  t.is(seen.headers['x-openid'], simulatedOpenid(APPID, w.user));
  t.true(seen.body.includes('JPEG-BYTES-0123'));
  t.true(seen.body.includes('name="album"'));

  const old = await revoke(w);
  const tasks: unknown[] = [];
  const again = await api.uploadFile({ url: '/api/upload?n=2', filePath, name: 'photo', onTask: (task) => tasks.push(task) });
  t.is(again.statusCode, 200);
  t.is(JSON.parse(again.data).openid, simulatedOpenid(APPID, w.user));
  t.is(w.counts.login, 2, 'one re-login');
  t.deepEqual(w.to('/api/upload').slice(1).map((s) => s.header.Authorization), [`Bearer ${old}`, `Bearer ${stored(w)}`]);
  t.is(up.seen.filter((s) => s.url === '/api/upload?n=2').length, 1, 'the upstream got the upload once');
  t.is(tasks.length, 2, 'onTask sees each UploadTask (the retry is a second one)');

  const nf = await rejects(api.uploadFile({ url: '/nowhere', filePath, name: 'photo' }));
  t.is(nf.statusCode, 404);
  t.is(nf.error, 'not_found', 'the error body (a string from wx) is parsed for the code');
  t.is(w.to('/nowhere').length, 1, 'not retried');
});

test('downloadFile: the token in the header; a revoked token → one re-login and one retry; an error answer\'s code is read from the saved file', async (t) => {
  const w = fakeWx();
  const api = createClient({ baseUrl: gw.url, wx: w });
  await api.request({ url: '/api/warm' });
  const old = await revoke(w);
  const res = await api.downloadFile({ url: '/api/files/report.pdf' });
  t.is(res.statusCode, 200);
  t.is(JSON.parse(readFileSync(res.tempFilePath, 'utf8')).openid, simulatedOpenid(APPID, w.user));
  t.is(w.counts.login, 2);
  t.deepEqual(w.to('/api/files/report.pdf').map((s) => s.header.Authorization), [`Bearer ${old}`, `Bearer ${stored(w)}`]);
  t.is(up.seen.filter((s) => s.url === '/api/files/report.pdf').length, 1);

  const down = await rejects(api.downloadFile({ url: '/down/file' }));
  t.is(down.statusCode, 502);
  t.is(down.error, 'upstream_unavailable');
  t.is(w.to('/down/file').length, 1, 'not retried');
  t.is(w.counts.login, 2);
});

test('downloadFile against a gateway that keeps answering 401: one retry, never a loop', async (t) => {
  const fake = await fakeGateway(() => [401, { error: 'unauthorized', message: 'no valid session' }]);
  try {
    const w = fakeWx();
    const err = await rejects(createClient({ baseUrl: fake.url, wx: w }).downloadFile({ url: '/f' }));
    t.is(err.statusCode, 401);
    t.is(err.error, 'unauthorized');
    t.deepEqual(fake.hits.map((h) => `${h.path} ${h.auth ?? '-'}`), ['/login -', '/f Bearer fake-token-1', '/login -', '/f Bearer fake-token-2']);
  } finally {
    await fake.close();
  }
});

test('connectSocket: the token in the handshake header, messages both ways, the upstream sees the user', async (t) => {
  const w = fakeWx();
  const api = createClient({ baseUrl: gw.url, wx: w });
  const sock = watch(api.connectSocket({ url: '/ws/room?m=c1' }));
  await sock.open;
  t.is(w.counts.login, 1, 'logged in first');
  t.is(w.to('/ws/room')[0]!.header.Authorization, `Bearer ${stored(w)}`);
  t.is(w.to('/ws/room')[0]!.url.split(':')[0], 'ws', 'ws:// for an http baseUrl');
  const u = wsUp.upgrades.find((x) => x.url.includes('m=c1'))!;
  t.is(u.headers['x-openid'], simulatedOpenid(APPID, w.user));
  let sent = false;
  await new Promise<void>((r) => {
    const s2 = api.connectSocket({ url: '/ws/room?m=c1b' });
    s2.onOpen(() => s2.send({ data: 'hi', success: () => ((sent = true), r()) }));
    s2.onMessage((m) => void sock.messages.push(`b:${m.data}`));
  });
  t.true(sent);
  t.is(await sock.nextMessage(0), 'b:echo:hi');
  t.is(w.counts.login, 1, 'the second socket reuses the token');
});

test('connectSocket with a revoked token: the refused handshake → GET /session says 401 → one re-login and a new handshake; the app only sees open', async (t) => {
  const w = fakeWx();
  const api = createClient({ baseUrl: gw.url, wx: w });
  await api.request({ url: '/api/warm' });
  const old = await revoke(w);
  const sock = watch(api.connectSocket({ url: '/ws/room?m=c2' }));
  await sock.open;
  t.deepEqual(sock.events, ['open'], 'the failed attempt\'s error and close are not passed on');
  t.is(w.counts.login, 2);
  t.is(w.counts.handshakes, 2);
  t.deepEqual(w.to('/ws/room').map((s) => s.header.Authorization), [`Bearer ${old}`, `Bearer ${stored(w)}`]);
  t.deepEqual(w.to('/session').map((s) => s.header.Authorization), [`Bearer ${old}`], 'the probe asked with the refused token');
  const u = wsUp.upgrades.filter((x) => x.url.includes('m=c2'));
  t.is(u.length, 1, 'the first handshake never reached the upstream');
  t.is(u[0]!.headers['x-openid'], simulatedOpenid(APPID, w.user));
});

test('connectSocket refused for another reason (403 app_not_allowed): the app gets error and close, no re-login, no second handshake', async (t) => {
  const w = fakeWx();
  const api = createClient({ baseUrl: gw.url, wx: w });
  const sock = watch(api.connectSocket({ url: '/ws-other-app/x' }));
  const closed = await sock.close;
  t.is(closed.code, 1006);
  t.deepEqual(sock.events, ['error:socket_failed', 'close:1006'], 'wx\'s error, with a code for errorText()');
  t.is(w.counts.login, 1);
  t.is(w.counts.handshakes, 1);
  t.is(w.to('/session').length, 1, 'one probe: the session is fine, so it was not a 401');
});

test('an open socket closed by the gateway with 4401 (sessions revoked): the app sees the close, the token is dropped, the next connectSocket logs in', async (t) => {
  const w = fakeWx();
  const api = createClient({ baseUrl: gw.url, wx: w });
  const sock = watch(api.connectSocket({ url: '/ws/room?m=c3' }));
  await sock.open;
  const del = await request(gw.adminUrl!, {
    method: 'DELETE',
    path: `/users/${APPID}/${simulatedOpenid(APPID, w.user)}/sessions`,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  t.is(del.status, 200);
  const closed = await sock.close;
  t.is(closed.code, 4401);
  t.is(stored(w), undefined, 'the ended session\'s token is forgotten');
  const next = watch(api.connectSocket({ url: '/ws/room?m=c4' }));
  await next.open;
  t.is(w.counts.login, 2);
  t.is(w.counts.handshakes, 2, 'no refused handshake first');
  t.throws(() => api.connectSocket({ url: 'wss://elsewhere.example.com/ws' }), { instanceOf: TypeError });
});

test('errorText: every error code of the gateway\'s catalogue has a short Chinese text; unknown codes get a generic one', async (t) => {
  const cjk = /[\u4e00-\u9fff]/;
  for (const code of Object.keys(ERRORS)) {
    const text = ERROR_TEXTS[code];
    t.is(typeof text, 'string', `no text for ${code}`);
    t.regex(text!, cjk, code);
    t.true(text!.length <= 20, `${code}: short`);
    t.is(errorText(code), text!);
  }
  const own = ['request_failed', 'wx_login_failed', 'invalid_login_response', 'socket_failed'];
  t.deepEqual(Object.keys(ERROR_TEXTS).filter((k) => !(k in ERRORS)).sort(), own.sort(), 'no text for a code that does not exist');
  t.is(errorText('wechat_unavailable'), '微信服务繁忙，请稍后再试');

  const w = fakeWx();
  const api = createClient({ baseUrl: gw.url, wx: w });
  const nf = await rejects(api.request({ url: '/nowhere' }));
  t.is(errorText(nf), ERROR_TEXTS.not_found!);
  const off = await rejects(createClient({ baseUrl: deadUrl, wx: fakeWx() }).request({ url: '/api/x' }));
  t.is(errorText(off), '网络不可用，请检查网络后重试');
  t.regex(errorText({ error: 'http_418' }), cjk);
  t.is(errorText(undefined), errorText({ error: 'no_such_code' }));
});

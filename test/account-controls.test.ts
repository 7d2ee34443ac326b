import test from 'ava';
import { logUser } from '../src/base/access-log.js';
import { simulatedOpenid, startSimulator } from '../src/dev/simulator.js';
import { Browser } from './helpers/browser.js';
import { APPID, SECRET, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { request, type Reply } from './helpers/http.js';
import { metricValue, scrape } from './helpers/metrics.js';
import { startRedis, type RedisServer } from './helpers/redis.js';
import { startUpstream, type Upstream } from './helpers/upstream.js';
import { waitFor, within } from './helpers/wait.js';
import { startWsUpstream, wsConnect, type WsPeer, type WsUpstream } from './helpers/ws.js';

/**
 * Account controls on the admin API (issue 18 items 7, 9, 10): block/unblock, the login audit trail and
 * the session (device) list, with two gateway replicas (A, B) on one real redis-server, the simulator as
 * WeChat and a real upstream. What one replica's admin API does, the other sees.
 */
const ADMIN = 'admin-token-for-account-tests-0123';
const PUBLIC = 'http://127.0.0.1:8080';
const HISTORY = 6;
/** an Official Account for the web OAuth flow */
const MP = 'wx5555666677778888';
const MP_SECRET = 'mp-secret-for-account-tests';

let redis: RedisServer;
let sim: Awaited<ReturnType<typeof startSimulator>>;
let up: Upstream;
let wsUp: WsUpstream;
let a: TestGateway;
let b: TestGateway;
let users = 0;
/** every token and code handed out here, to look for in logs and answers */
const secrets: string[] = [];


test.before(async () => {
  redis = await startRedis();
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET, [MP]: MP_SECRET } });
  up = await startUpstream();
  wsUp = await startWsUpstream();
  const config = () =>
    testConfig({
      apiBase: sim.url,
      server: { host: '127.0.0.1', port: 0, trustedProxies: ['127.0.0.1'] },
      session: { store: 'redis', redis: { url: redis.url, keyPrefix: 'acc:' }, cache: { max: 1000, ttl: '60s' } },
      routes: [
        { path: '/api', upstream: up.url },
        { path: '/ws', upstream: wsUp.url },
      ],
      admin: { port: 0, token: ADMIN },
      audit: { history: HISTORY },
      wechat: { apiBase: sim.url, oauthBase: sim.url, timeout: '1s', apps: [{ appid: APPID, secret: SECRET }] },
      web: { publicUrl: PUBLIC, redirects: ['/api'], scan: { checkPath: false }, mp: { appid: MP, secret: MP_SECRET } },
    });
  [a, b] = await Promise.all([startTestGateway(config()), startTestGateway(config())]);
});
test.after.always(async () => {
  await Promise.all([a?.close(), b?.close()]);
  await up?.close();
  await wsUp?.close();
  await sim?.close();
  await redis?.close();
});

/** A new simulator user: its name and openid. */
function newUser() {
  const name = `acct${++users}`;
  return { name, openid: simulatedOpenid(APPID, name), codes: 0 };
}

/** POST /login on a gateway as a phone with this user agent, behind a trusted proxy that saw `ip`. */
async function loginAs(gw: TestGateway, u: ReturnType<typeof newUser>, opts: { ua?: string; ip?: string } = {}): Promise<Reply> {
  const code = `${u.name}.${++u.codes}`;
  secrets.push(code);
  const res = await request(gw.url, {
    method: 'POST',
    path: '/login',
    headers: {
      'content-type': 'application/json',
      'user-agent': opts.ua ?? 'Mozilla/5.0 (iPhone) MicroMessenger/8.0.50',
      ...(opts.ip ? { 'x-forwarded-for': opts.ip } : {}),
    },
    body: JSON.stringify({ code }),
  });
  if (res.json?.token) secrets.push(res.json.token);
  return res;
}

const tokenOf = (r: Reply): string => {
  if (r.status !== 200) throw new Error(`login: ${r.status} ${r.text}`);
  return r.json.token as string;
};

function admin(gw: TestGateway, method: string, path: string, body?: unknown): Promise<Reply> {
  return request(gw.adminUrl!, {
    method,
    path,
    headers: { authorization: `Bearer ${ADMIN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

const userPath = (u: { openid: string }) => `/users/${APPID}/${u.openid}`;
const sessionStatus = async (gw: TestGateway, token: string) => (await request(gw.url, { path: '/session', headers: { authorization: `Bearer ${token}` } })).status;
const jscode2session = async (gw: TestGateway) => {
  const text = await scrape(gw.url);
  let n = 0;
  for (const line of text.split('\n')) {
    const m = /^wxgate_wechat_requests_total\{(.*)\} (\S+)$/.exec(line);
    if (m && m[1]!.includes('api="jscode2session"')) n += Number(m[2]);
  }
  return n;
};

test.serial('block on A: every session of the user ends on both replicas at once; the next login on B is 403 user_blocked; GET /users shows it; unblock lets them in', async (t) => {
  const u = newUser();
  const onA = tokenOf(await loginAs(a, u));
  const onB = tokenOf(await loginAs(b, u));
  // both replicas have the sessions in their LRU
  for (const gw of [a, b]) for (const tk of [onA, onB]) t.is(await sessionStatus(gw, tk), 200);
  const other = newUser();
  const bystander = tokenOf(await loginAs(a, other));
  // a WebSocket open on B with the session made on A
  const opened = await wsConnect(b.url, '/ws/live', { Authorization: `Bearer ${onA}` });
  t.is(opened.status, 101);
  const socket = (opened as { ws: WsPeer }).ws;

  const before = await admin(b, 'GET', userPath(u));
  t.is(before.status, 200, before.text);
  t.deepEqual(before.json, { appid: APPID, openid: u.openid, blocked: null, sessions: 2 });

  const blocked = await admin(a, 'POST', `${userPath(u)}/block`, { reason: 'chargeback fraud #123', expiresIn: 3600 });
  t.is(blocked.status, 200, blocked.text);
  t.is(blocked.json.revoked, 2);
  t.is(blocked.json.blocked.reason, 'chargeback fraud #123');
  const until = Date.parse(blocked.json.blocked.until);
  t.true(Math.abs(until - (Date.now() + 3600_000)) < 5000, 'until: an hour from now');

  // the revocation reaches B's cache through pub/sub: no request of the user passes on either replica
  await waitFor(async () => (await sessionStatus(b, onA)) === 401, { message: "the block reached B's cache" });
  for (const gw of [a, b]) for (const tk of [onA, onB]) t.is(await sessionStatus(gw, tk), 401);
  t.is((await request(b.url, { path: '/api/x', headers: { authorization: `Bearer ${onB}` } })).status, 401);
  t.is(await sessionStatus(b, bystander), 200, 'another user is untouched');
  await within(5000, socket.closed, 'the WebSocket on B closed');
  t.deepEqual(socket.closeFrame, { code: 4401, reason: 'session ended' }, 'the open WebSocket on B is closed: session ended');

  const shown = await admin(b, 'GET', userPath(u));
  t.is(shown.json.sessions, 0);
  t.like(shown.json.blocked, { reason: 'chargeback fraud #123', until: blocked.json.blocked.until });
  t.truthy(Date.parse(shown.json.blocked.since));

  // the next login: WeChat is asked once (only its answer names the user), then refused, no session made
  const calls = await jscode2session(b);
  const refused = await loginAs(b, u);
  t.is(refused.status, 403, refused.text);
  t.is(refused.json.error, 'user_blocked');
  t.regex(refused.json.message, /blocked by the operator/);
  t.false('token' in refused.json);
  t.is(await jscode2session(b), calls + 1, 'one jscode2session call');
  t.is((await admin(a, 'GET', userPath(u))).json.sessions, 0, 'no session was made');
  t.is((await loginAs(a, u)).status, 403, 'on A too');

  // a scan-to-login the user confirmed before the block: the PC gets no session
  const u2 = newUser();
  const phone = tokenOf(await loginAs(a, u2));
  const ticket = (await request(a.url, { method: 'POST', path: '/scan/tickets', headers: { accept: 'application/json' } })).json;
  t.is((await request(a.url, { method: 'POST', path: `/scan/tickets/${ticket.ticket}/confirm`, headers: { authorization: `Bearer ${phone}` } })).status, 200);
  t.is((await admin(a, 'POST', `${userPath(u2)}/block`)).status, 200);
  const pc = new Browser(b.url);
  const poll = await pc.go(`/scan/tickets/${ticket.ticket}`, { headers: { 'x-scan-secret': ticket.secret } });
  t.is(poll.status, 403, poll.text);
  t.is(poll.json.error, 'user_blocked');
  t.is(pc.jar.size, 0, 'no session cookie');
  t.is((await admin(a, 'GET', userPath(u2))).json.blocked.until, undefined, 'a block without expiry');

  // unblock: DELETE …/block on B, POST …/unblock for the other
  const lifted = await admin(b, 'DELETE', `${userPath(u)}/block`);
  t.is(lifted.status, 200, lifted.text);
  t.deepEqual(lifted.json, { appid: APPID, openid: u.openid, blocked: null, lifted: true });
  t.is((await admin(a, 'GET', userPath(u))).json.blocked, null);
  const back = await loginAs(a, u);
  t.is(back.status, 200, back.text);
  t.is((await admin(a, 'POST', `${userPath(u2)}/unblock`)).json.lifted, true);
  t.is((await admin(a, 'POST', `${userPath(u2)}/unblock`)).json.lifted, false, 'unblocking twice is fine');
  t.is((await loginAs(b, u2)).status, 200);
});

test.serial('a block with an expiry ends by itself; bad block requests are 400 with the reason; the admin token is required', async (t) => {
  const u = newUser();
  const res = await admin(a, 'POST', `${userPath(u)}/block`, { expiresIn: 1 });
  t.is(res.status, 200, res.text);
  t.is((await loginAs(b, u)).json.error, 'user_blocked');
  await waitFor(async () => (await loginAs(b, u)).status === 200, { interval: 200, message: 'the block has ended' });
  t.is((await admin(b, 'GET', userPath(u))).json.blocked, null);

  const later = new Date(Date.now() + 3600_000).toISOString();
  t.is((await admin(a, 'POST', `${userPath(u)}/block`, { until: later })).json.blocked.until, later);
  await admin(a, 'DELETE', `${userPath(u)}/block`);

  for (const [body, what] of [
    [{ reason: 'x'.repeat(201) }, 'reason'],
    [{ reason: 7 }, 'reason'],
    [{ expiresIn: 0 }, 'expiresIn'],
    [{ expiresIn: '1h' }, 'expiresIn'],
    [{ until: '2001-01-01T00:00:00Z' }, 'until'],
    [{ until: 'tomorrow' }, 'until'],
    [{ until: later, expiresIn: 10 }, 'not both'],
  ] as const) {
    const bad = await admin(a, 'POST', `${userPath(u)}/block`, body);
    t.is(bad.status, 400, `${JSON.stringify(body)}: ${bad.text}`);
    t.is(bad.json.error, 'invalid_request');
    t.true(bad.json.message.includes(what.split(' ')[0]!), bad.json.message);
  }
  const notJson = await request(a.adminUrl!, { method: 'POST', path: `${userPath(u)}/block`, headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: '{' });
  t.is(notJson.status, 400);
  t.is(notJson.json.error, 'invalid_json');
  t.is((await admin(a, 'GET', userPath(u))).json.blocked, null, 'nothing was blocked by the bad requests');
  t.is((await loginAs(a, u)).status, 200);

  for (const [method, path] of [['POST', `${userPath(u)}/block`], ['GET', `${userPath(u)}/events`], ['GET', userPath(u)], ['DELETE', `${userPath(u)}/sessions/x`]]) {
    const res2 = await request(a.adminUrl!, { method: method!, path: path! });
    t.is(res2.status, 401, `${method} ${path}`);
  }
});

test.serial('the audit trail: login, failed login, logout, revocation, block and unblock; newest first, bounded, the same on both replicas; device and session id, never a token or code', async (t) => {
  const u = newUser();
  const first = tokenOf(await loginAs(a, u, { ua: 'PhoneOne/1.0', ip: '203.0.113.7' }));
  const second = tokenOf(await loginAs(b, u, { ua: 'PhoneTwo/2.0', ip: '198.51.100.9' }));
  t.is((await request(a.url, { method: 'POST', path: '/logout', headers: { authorization: `Bearer ${first}`, 'user-agent': 'PhoneOne/1.0' } })).status, 204);
  await admin(b, 'DELETE', `${userPath(u)}/sessions`);
  await admin(a, 'POST', `${userPath(u)}/block`, { reason: 'spam' });
  t.is((await loginAs(b, u, { ua: 'PhoneThree/3.0', ip: '192.0.2.1' })).status, 403);
  await admin(b, 'POST', `${userPath(u)}/unblock`);

  const res = await admin(b, 'GET', `${userPath(u)}/events`);
  t.is(res.status, 200, res.text);
  const events = res.json.events as Array<Record<string, any>>;
  t.deepEqual(
    events.map((e) => e.event),
    ['unblock', 'login_failed', 'block', 'revoke', 'logout', 'login'],
    `newest first, at most ${HISTORY} (the first login fell off)`,
  );
  const times = events.map((e) => Date.parse(e.at));
  t.deepEqual([...times].sort((x, y) => y - x), times);
  const [unblock, failed, block, revoke, logout, login2] = events;
  t.like(login2, { appid: APPID, openid: u.openid, flow: 'miniprogram', ua: 'PhoneTwo/2.0', ip: '198.51.100.9' });
  t.like(logout, { by: 'user', ua: 'PhoneOne/1.0', revoked: 1 });
  t.like(revoke, { by: 'admin', revoked: 1 });
  t.like(block, { by: 'admin', reason: 'spam', revoked: 0 });
  t.like(failed, { error: 'user_blocked', flow: 'miniprogram', by: 'gateway', ua: 'PhoneThree/3.0', ip: '192.0.2.1' });
  t.like(unblock, { by: 'admin' });

  // session ids: the ones the sessions list gives (the session of the logout was the first login's)
  const again = tokenOf(await loginAs(a, u, { ua: 'PhoneFour/4.0' }));
  const list = (await admin(a, 'GET', `${userPath(u)}/sessions`)).json.sessions;
  const latest = (await admin(a, 'GET', `${userPath(u)}/events?limit=1`)).json.events;
  t.is(latest.length, 1, 'limit=N gives the last N');
  t.like(latest[0], { event: 'login', session: list[0].id, ua: 'PhoneFour/4.0' });
  t.is((await admin(a, 'GET', `${userPath(u)}/events?limit=0`)).status, 400);
  t.true(events.every((e) => typeof e.session === 'string' || ['block', 'unblock', 'revoke', 'login_failed'].includes(e.event)));

  // a login WeChat refuses names no user: its audit line has the errcode, no history entry anywhere
  const bad = await request(a.url, { method: 'POST', path: '/login', headers: { 'content-type': 'application/json', 'user-agent': 'Broken/1' }, body: JSON.stringify({ code: 'fail-40029' }) });
  t.is(bad.status, 401);
  const audit = a.logs.map((l) => JSON.parse(l)).filter((l) => l.part === 'audit');
  const line = audit.find((l) => l.event === 'login_failed' && l.errcode === 40029);
  t.truthy(line, 'the failed login is an audit line');
  t.like(line, { appid: APPID, error: 'code_invalid', ua: 'Broken/1', ip: '127.0.0.1' });
  t.is(line.openid, undefined);
  const mine = audit.find((l) => l.event === 'login' && l.ua === 'PhoneFour/4.0');
  t.truthy(mine, 'each entry is an audit log line too');
  t.is(mine.user, logUser(APPID, u.openid), 'the user as in access log lines (log.openid: hash)');
  t.is(mine.session, list[0].id.slice(16), 'the session: the last 22 characters of its id');
  t.false(audit.some((l) => JSON.stringify(l).includes(u.openid)), 'never the openid in a log line');
  t.false(audit.some((l) => typeof l.session === 'string' && l.session.length !== 22));
  t.true(b.logs.map((l) => JSON.parse(l)).some((l) => l.part === 'audit' && l.event === 'unblock'));

  // nothing secret: no token, code or session_key in the history or the audit lines
  const texts = [res.text, JSON.stringify(latest), ...a.logs.filter((l) => l.includes('"part":"audit"')), ...b.logs.filter((l) => l.includes('"part":"audit"'))];
  for (const s of [...secrets, again, first, second]) t.false(texts.some((x) => x.includes(s)), `${s.slice(0, 8)}… leaked`);
  t.false(texts.some((x) => /session_key/.test(x)));
});

test.serial('the session list: each session\'s flow, last activity, user agent and IP; one revoked by its id ends on both replicas, the others stay', async (t) => {
  const u = newUser();
  const phone = tokenOf(await loginAs(a, u, { ua: 'MiniProgram/8.0', ip: '203.0.113.50' }));
  // a PC logged in by scan-to-login, on B, from a desktop browser
  const ticket = (await request(b.url, { method: 'POST', path: '/scan/tickets', headers: { accept: 'application/json' } })).json;
  t.is((await request(a.url, { method: 'POST', path: `/scan/tickets/${ticket.ticket}/confirm`, headers: { authorization: `Bearer ${phone}` } })).status, 200);
  const pc = new Browser(b.url);
  const polled = await pc.go(`/scan/tickets/${ticket.ticket}`, { headers: { 'x-scan-secret': ticket.secret, 'user-agent': 'Mozilla/5.0 (Windows NT 10.0) Chrome/130', 'x-forwarded-for': '198.51.100.20' } });
  t.is(polled.status, 200, polled.text);
  const pcCookie = pc.cookieHeader()!;

  const res = await admin(a, 'GET', `${userPath(u)}/sessions`);
  t.is(res.status, 200, res.text);
  const list = res.json.sessions as Array<Record<string, any>>;
  t.is(list.length, 2);
  const [mp, scan] = list as [Record<string, any>, Record<string, any>];
  t.like(mp, { flow: 'miniprogram', userAgent: 'MiniProgram/8.0', ip: '203.0.113.50' });
  t.like(scan, { flow: 'scan', userAgent: 'Mozilla/5.0 (Windows NT 10.0) Chrome/130', ip: '198.51.100.20' });
  for (const s of list) {
    t.regex(s.id, /^[A-Za-z0-9_-]{38}$/);
    t.true(Date.parse(s.lastActiveAt) >= Date.parse(s.createdAt));
    t.true(Date.parse(s.lastActiveAt) <= Date.now() + 1000);
    t.false(JSON.stringify(s).includes(phone), 'no token in the list');
  }

  // revoke the PC's session by its id on B: the PC is logged out on A and B, the phone stays
  const gone = await admin(b, 'DELETE', `${userPath(u)}/sessions/${scan.id}`);
  t.is(gone.status, 200, gone.text);
  t.deepEqual(gone.json, { revoked: 1 });
  await waitFor(async () => (await request(a.url, { path: '/session', headers: { cookie: pcCookie } })).status === 401, { message: "the revocation reached A's cache" });
  for (const gw of [a, b]) {
    t.is((await request(gw.url, { path: '/session', headers: { cookie: pcCookie } })).status, 401);
    t.is(await sessionStatus(gw, phone), 200);
  }
  const after = (await admin(b, 'GET', `${userPath(u)}/sessions`)).json.sessions;
  t.deepEqual(after.map((s: { id: string }) => s.id), [mp.id]);
  const ev = (await admin(a, 'GET', `${userPath(u)}/events?limit=1`)).json.events[0];
  t.like(ev, { event: 'revoke', by: 'admin', session: scan.id, flow: 'scan', revoked: 1 });

  // an id that is not one of this user's live sessions: 404, nothing revoked
  t.is((await admin(a, 'DELETE', `${userPath(u)}/sessions/${scan.id}`)).status, 404);
  const other = newUser();
  const theirs = tokenOf(await loginAs(a, other));
  const theirId = (await admin(a, 'GET', `${userPath(other)}/sessions`)).json.sessions[0].id;
  const wrongUser = await admin(a, 'DELETE', `${userPath(u)}/sessions/${theirId}`);
  t.is(wrongUser.status, 404, 'another user\'s session cannot be revoked through this user');
  t.is(wrongUser.json.error, 'not_found');
  t.is(await sessionStatus(b, theirs), 200);

  // a person's sessions revoked at once (DELETE /accounts/{id}/sessions): in the identity's own history too
  const person = (await admin(a, 'GET', `${userPath(other)}/sessions`)).json.account;
  t.is((await admin(b, 'DELETE', `/accounts/${person}/sessions`)).json.revoked, 1);
  t.like((await admin(a, 'GET', `${userPath(other)}/events?limit=1`)).json.events[0], { event: 'revoke', by: 'admin' });
});

test.serial('memory store (one replica): block, events and the session list work the same', async (t) => {
  const gw = await startTestGateway(testConfig({ apiBase: sim.url, admin: { port: 0, token: ADMIN } }));
  try {
    const u = newUser();
    const token = tokenOf(await loginAs(gw, u, { ua: 'Mem/1' }));
    const list = (await admin(gw, 'GET', `${userPath(u)}/sessions`)).json.sessions;
    t.like(list[0], { flow: 'miniprogram', userAgent: 'Mem/1', ip: '127.0.0.1' }, 'no trusted proxy: the socket peer');
    const byShortId = await admin(gw, 'DELETE', `${userPath(u)}/sessions/${list[0].id.slice(16)}`);
    t.is(byShortId.status, 200, 'revoked by the short id of the audit lines');
    t.is(await sessionStatus(gw, token), 401);
    const token2 = tokenOf(await loginAs(gw, u));
    const blocked = await admin(gw, 'POST', `${userPath(u)}/block`, {});
    t.is(blocked.json.revoked, 1);
    t.is(await sessionStatus(gw, token2), 401);
    t.is((await loginAs(gw, u)).json.error, 'user_blocked');
    t.deepEqual((await admin(gw, 'GET', `${userPath(u)}/events`)).json.events.map((e: { event: string }) => e.event), ['login_failed', 'block', 'login', 'revoke', 'login']);
    await admin(gw, 'DELETE', `${userPath(u)}/block`);
    t.is((await loginAs(gw, u)).status, 200);
    t.is(metricValue(await scrape(gw.url), 'wxgate_logins_total', { result: 'user_blocked' }), 1, 'the refused login is counted as user_blocked');
  } finally {
    await gw.close();
  }
});

/** Official Account OAuth in a browser: authorize on one replica, WeChat's page approved as `user`, the callback on another. */
async function oauthCallback(pc: Browser, user: string, from: TestGateway, to: TestGateway, headers: Record<string, string> = {}): Promise<Reply> {
  const start = await pc.go('/oauth/mp/authorize?redirect=/api/home', { base: from.url, headers });
  if (start.status !== 302) throw new Error(`authorize: ${start.status} ${start.text}`);
  const q = new URLSearchParams(new URL(start.headers.location!).search);
  q.set('user', user);
  const approved = await request(sim.url, { path: `/connect/approve?${q}` });
  const back = new URL(approved.headers.location!);
  secrets.push(back.searchParams.get('code')!);
  return pc.go(back.pathname + back.search, { base: to.url, headers });
}

test.serial('web flows too: an Official Account OAuth session is listed with its flow and browser, ends with the block, and the blocked user\'s next OAuth login is 403 user_blocked; WeChat refusing the OAuth code is an audit line', async (t) => {
  const name = `oauser${++users}`;
  const openid = simulatedOpenid(MP, name);
  const ua = { 'user-agent': 'Mozilla/5.0 (Linux; Android 14) MicroMessenger/8.0.49', 'x-forwarded-for': '203.0.113.99' };
  const pc = new Browser(a.url);
  const done = await oauthCallback(pc, name, a, b, ua);
  t.is(done.status, 302, done.text);
  const cookie = pc.cookieHeader()!;
  const list = (await admin(a, 'GET', `/users/${MP}/${openid}/sessions`)).json.sessions;
  t.is(list.length, 1);
  t.like(list[0], { flow: 'mp', userAgent: ua['user-agent'], ip: '203.0.113.99' });

  t.is((await admin(b, 'POST', `/users/${MP}/${openid}/block`, { reason: 'abuse' })).json.revoked, 1);
  await waitFor(async () => (await request(a.url, { path: '/session', headers: { cookie } })).status === 401, { message: "the block reached A's cache" });
  t.is((await request(a.url, { path: '/session', headers: { cookie } })).status, 401);
  const refused = await oauthCallback(new Browser(a.url), name, a, a, ua);
  t.is(refused.status, 403, refused.text);
  t.is(refused.json.error, 'user_blocked');
  t.is((await admin(a, 'GET', `/users/${MP}/${openid}`)).json.sessions, 0);
  const events = (await admin(a, 'GET', `/users/${MP}/${openid}/events`)).json.events;
  t.deepEqual(events.map((e: { event: string }) => e.event), ['login_failed', 'block', 'login']);
  t.like(events[0], { flow: 'mp', error: 'user_blocked', ua: ua['user-agent'] });

  // a code WeChat refuses (the simulator's "fail-40029")
  const b2 = new Browser(a.url);
  const start = await b2.go('/oauth/mp/authorize?redirect=/api/home');
  const state = new URL(start.headers.location!).searchParams.get('state')!;
  const bad = await b2.go(`/oauth/mp/callback?code=fail-40029&state=${encodeURIComponent(state)}`, { headers: { 'user-agent': 'OABroken/1' } });
  t.true(bad.status >= 400, bad.text);
  const line = a.logs.map((l) => JSON.parse(l)).find((l) => l.part === 'audit' && l.event === 'login_failed' && l.ua === 'OABroken/1');
  t.like(line, { appid: MP, flow: 'mp', errcode: 40029 });
  await admin(a, 'DELETE', `/users/${MP}/${openid}/block`);
});

import http from 'node:http';
import test from 'ava';
import { Redis } from 'ioredis';
import { simulatedOpenid, startSimulator } from '../src/dev/simulator.js';
import { APPID, SECRET, login, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { Browser, setCookies, type SetCookie } from './helpers/browser.js';
import { request, type Reply } from './helpers/http.js';
import { metricValue, scrape } from './helpers/metrics.js';
import { startRedis, type RedisServer } from './helpers/redis.js';
import { startUpstream, type Upstream } from './helpers/upstream.js';
import { fakeDate } from './helpers/clock.js';
import { sleep } from './helpers/wait.js';

/**
 * Scan to log in on a PC with the mini-program (issue 7), end to end: two gateway replicas (A, B) on one
 * real redis-server, the simulator as WeChat (access_token, getwxacodeunlimit, jscode2session, the
 * Official Account OAuth pages), a real upstream. The PC is the Browser cookie jar; the phone is a
 * mini-program user with a Bearer token. publicUrl is https, so the cookie is `__Host-` and Secure
 * (requests still reach the gateway over loopback HTTP). One case runs the whole flow on the memory store.
 */
const APP2 = 'wx2222333344445555';
const APP2_SECRET = 'app2-secret-0123456789';
const MP = 'wx11112222333344aa';
const MP_SECRET = 'mp-secret-0123456789';
const PUBLIC = 'https://pc.example.com';
const SESSION = '__Host-wxgate_session';
const PREFIX = 'scan:';
/** WeChat's characters for getwxacodeunlimit's scene */
const SCENE = /^[0-9A-Za-z!#$&'()*+,/:;=?@\-._~]{1,32}$/;

let redis: RedisServer;
let admin: Redis;
let sim: Awaited<ReturnType<typeof startSimulator>>;
let up: Upstream;
let a: TestGateway;
let b: TestGateway;
let users = 0;
let prefixes = 0;
/** every ticket secret and token handed out here, to look for in the logs */
const credentials: string[] = [];
/** A long poll (?wait=20) woken by what it waits for answers well before its wait runs out, however loaded the machine. */
const WOKEN = 10_000;

function config(over: { web?: Record<string, unknown>; scan?: Record<string, unknown>; prefix?: string; [k: string]: unknown } = {}) {
  const { web, scan, prefix, ...rest } = over;
  return testConfig({
    apiBase: sim.url,
    wechat: {
      apiBase: sim.url,
      oauthBase: sim.url,
      timeout: '1s',
      apps: [
        { appid: APPID, secret: SECRET },
        { appid: APP2, secret: APP2_SECRET },
      ],
    },
    session: { store: 'redis', redis: { url: redis.url, keyPrefix: prefix ?? PREFIX } },
    routes: [{ path: '/shop', upstream: up.url }],
    web: {
      publicUrl: PUBLIC,
      mp: { appid: MP, secret: MP_SECRET },
      scan: { page: 'pages/scan/index', checkPath: false, envVersion: 'develop', ...scan },
      ...web,
    },
    ...rest,
  });
}

test.before(async () => {
  redis = await startRedis();
  admin = new Redis(redis.url);
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET, [APP2]: APP2_SECRET, [MP]: MP_SECRET } });
  up = await startUpstream();
  [a, b] = await Promise.all([startTestGateway(config()), startTestGateway(config())]);
});
test.after.always(async () => {
  await Promise.all([a?.close(), b?.close()]);
  admin?.disconnect();
  await up?.close();
  await sim?.close();
  await redis?.close();
});

interface Ticket {
  ticket: string;
  secret: string;
  expires_in: number;
  qr: string;
}

/** The PC page asks a replica for a ticket. */
async function newTicket(gw: { url: string }): Promise<Ticket> {
  const res = await request(gw.url, { method: 'POST', path: '/scan/tickets', headers: { accept: 'application/json' } });
  if (res.status !== 201) throw new Error(`POST /scan/tickets: ${res.status} ${res.text}`);
  credentials.push((res.json as Ticket).secret);
  return res.json as Ticket;
}

/** A mini-program user logged in on a replica: their openid and Bearer token. */
async function phone(gw: { url: string }, appid = APPID) {
  const user = `scanner${++users}`;
  const token = await login(gw.url, `${user}.1`, { appid });
  credentials.push(token);
  return { user, token, openid: simulatedOpenid(appid, user) };
}

function answer(gw: { url: string }, id: string, what: 'confirm' | 'cancel' | 'scanned', token?: string, headers: Record<string, string> = {}): Promise<Reply> {
  return request(gw.url, {
    method: 'POST',
    path: `/scan/tickets/${id}/${what}`,
    headers: { accept: 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
  });
}

function poll(pc: Browser, t: { ticket: string; secret?: string }, opts: { wait?: number; base?: string; seen?: string } = {}): Promise<Reply> {
  const q = new URLSearchParams({ ...(opts.wait ? { wait: String(opts.wait) } : {}), ...(opts.seen ? { seen: opts.seen } : {}) }).toString();
  return pc.go(`/scan/tickets/${t.ticket}${q ? `?${q}` : ''}`, {
    headers: t.secret === undefined ? {} : { 'x-scan-secret': t.secret },
    ...(opts.base ? { base: opts.base } : {}),
  });
}

function sessionCookie(res: Reply, name = SESSION): SetCookie | undefined {
  return setCookies(res).find((c) => c.name === name);
}

function isError(t: import('ava').ExecutionContext, res: Reply, status: number, error: string, what = error): void {
  t.is(res.status, status, `${what}: ${res.text}`);
  t.is(res.json?.error, error, what);
  t.is(typeof res.json?.message, 'string', `${what}: a message`);
  t.regex(String(res.headers['content-type']), /application\/json/, what);
  t.is(sessionCookie(res), undefined, `${what}: no session cookie`);
}

/** PNG signature, then the IHDR chunk first: width and height. */
function pngSize(png: Buffer): { width: number; height: number } | undefined {
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  if (png.length < 33 || !png.subarray(0, 8).equals(sig)) return undefined;
  if (png.readUInt32BE(8) !== 13 || png.subarray(12, 16).toString('latin1') !== 'IHDR') return undefined;
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) };
}

async function ticketKeys(prefix = PREFIX): Promise<string[]> {
  return admin.keys(`${prefix}scan:*`);
}

test.serial('POST /scan/tickets: a ticket in WeChat\'s scene charset, a secret, and a real PNG mini-program code from getwxacodeunlimit', async (t) => {
  const before = metricValue(await scrape(a.url), 'wxgate_wechat_requests_total', { api: 'getwxacodeunlimit', outcome: 'ok' });
  const res = await request(a.url, { method: 'POST', path: '/scan/tickets' });
  t.is(res.status, 201, res.text);
  t.is(res.headers['cache-control'], 'no-store');
  t.deepEqual(Object.keys(res.json).sort(), ['expires_in', 'qr', 'secret', 'ticket']);
  const { ticket, secret, expires_in, qr } = res.json as Ticket;
  t.regex(ticket, /^[A-Za-z0-9_-]{22}$/);
  t.regex(ticket, SCENE, 'a scene WeChat takes');
  t.false(ticket.includes('%'));
  t.regex(secret, /^[A-Za-z0-9_-]{43}$/, '256 random bits');
  t.not(secret, ticket);
  t.is(expires_in, 120, 'web.scan.ticketTtl, default 2m');
  const m = /^data:image\/png;base64,([A-Za-z0-9+/]+=*)$/.exec(qr);
  t.truthy(m, 'a PNG data: URL');
  const png = Buffer.from(m![1]!, 'base64');
  const size = pngSize(png);
  t.truthy(size, 'PNG signature and IHDR');
  t.true(size!.width >= 280 && size!.height >= 280, `${size?.width}x${size?.height}`);
  t.true(png.subarray(-12).includes(Buffer.from('IEND')), 'and it ends with IEND');
  const after = metricValue(await scrape(a.url), 'wxgate_wechat_requests_total', { api: 'getwxacodeunlimit', outcome: 'ok' });
  t.is(after - before, 1, 'one getwxacodeunlimit call, counted as ok');
  // tickets are random: another one differs in id, secret and code
  const other = await newTicket(a);
  t.not(other.ticket, ticket);
  t.not(other.secret, secret);
  t.not(other.qr, qr, 'the code carries the scene');
  // the ticket lives in Redis (any replica can answer), with an expiry; the secret is not stored as such
  const key = `${PREFIX}scan:${ticket}`;
  t.true((await admin.pttl(key)) > 0);
  const stored = await admin.hgetall(key);
  t.is(stored.s, 'pending');
  t.false(Object.values(stored).includes(secret), 'only a hash of the secret is kept');
  // a fresh ticket polled on the other replica is pending
  const pending = await poll(new Browser(b.url), { ticket, secret });
  t.is(pending.status, 200, pending.text);
  t.deepEqual(pending.json, { status: 'pending' });
  t.is(sessionCookie(pending), undefined);
});

test.serial('the phone confirms on B, the PC polls on A and gets its own web session for the mini-program user', async (t) => {
  const ticket = await newTicket(a);
  const user = await phone(b);
  const confirmed = await answer(b, ticket.ticket, 'confirm', user.token);
  t.is(confirmed.status, 200, confirmed.text);
  t.deepEqual(confirmed.json, { status: 'confirmed' });
  t.is(sessionCookie(confirmed), undefined, 'the phone gets no cookie');

  const pc = new Browser(a.url);
  const res = await poll(pc, ticket);
  t.is(res.status, 200, res.text);
  t.is(res.json.status, 'confirmed');
  t.true(res.json.expires_in > 0);
  t.is(res.headers['cache-control'], 'no-store');
  const cookie = sessionCookie(res)!;
  t.truthy(cookie, 'the session cookie');
  t.deepEqual(
    [cookie.attrs.httponly, cookie.attrs.secure, cookie.attrs.samesite?.toLowerCase(), cookie.attrs.path, cookie.attrs.domain],
    ['', '', 'lax', '/', undefined],
    'HttpOnly, Secure, SameSite=Lax, Path=/, no Domain (__Host-)',
  );
  t.not(cookie.value, user.token, 'a session of its own, not the phone\'s token');

  // the cookie works on both replicas
  for (const gw of [a, b]) {
    const me = await pc.go('/session', { base: gw.url });
    t.is(me.status, 200, me.text);
    t.is(me.json.openid, user.openid);
    t.is(me.json.appid, APPID);
  }
  // the upstream sees the mini-program user's identity; the gateway's cookie stays with the gateway
  const proxied = await pc.go('/shop/orders', { extraCookies: { theme: 'dark' } });
  t.is(proxied.status, 200, proxied.text);
  const seen = up.seen.at(-1)!;
  t.is(seen.headers['x-openid'], user.openid);
  t.is(seen.headers['x-appid'], APPID);
  t.is(seen.headers.cookie, 'theme=dark');
  // the phone's session goes on, apart from the PC's
  const phoneSession = await request(b.url, { path: '/session', headers: { authorization: `Bearer ${user.token}` } });
  t.is(phoneSession.status, 200);
  // the PC's cookie session is of the mini-program's app, but only the phone's token answers a ticket
  const other = await newTicket(a);
  const byCookie = await pc.go(`/scan/tickets/${other.ticket}/confirm`, { method: 'POST', headers: { origin: PUBLIC } });
  t.is(byCookie.status, 403, byCookie.text);
  t.is(byCookie.json.error, 'app_not_allowed');
  const out = await pc.go('/logout', { method: 'POST', headers: { origin: PUBLIC } });
  t.is(out.status, 204);
  t.is((await request(a.url, { path: '/session', headers: { authorization: `Bearer ${user.token}` } })).status, 200, 'logging the PC out leaves the phone logged in');
});

test.serial('long poll: a GET ?wait=20 on A answers at once when the confirmation comes on B', async (t) => {
  const ticket = await newTicket(a);
  const user = await phone(b);
  const pc = new Browser(a.url);
  const started = Date.now();
  const waiting = poll(pc, ticket, { wait: 20 });
  await sleep(1200); // the poll waits a while first
  const confirmed = await answer(b, ticket.ticket, 'confirm', user.token);
  const confirmedAt = Date.now();
  t.is(confirmed.status, 200, confirmed.text);
  const res = await waiting;
  const answeredAt = Date.now();
  t.is(res.status, 200, res.text);
  t.is(res.json.status, 'confirmed');
  t.truthy(sessionCookie(res));
  t.true(confirmedAt - started >= 1200, 'the poll was waiting when the phone confirmed');
  t.true(answeredAt - confirmedAt < WOKEN, `answered ${answeredAt - confirmedAt} ms after the confirmation`);
  t.is((await pc.go('/session')).json.openid, user.openid);
});

test.serial('long poll: with nothing happening, ?wait=N answers pending after about N seconds; wait is capped and optional', async (t) => {
  const ticket = await newTicket(a);
  const pc = new Browser(a.url);
  let started = Date.now();
  const res = await poll(pc, ticket, { wait: 1 });
  const took = Date.now() - started;
  t.is(res.status, 200);
  t.deepEqual(res.json, { status: 'pending' });
  t.true(took >= 700 && took < 4000, `took ${took} ms`);
  for (const q of ['', '?wait=0', '?wait=-5', '?wait=abc']) {
    started = Date.now();
    const r = await pc.go(`/scan/tickets/${ticket.ticket}${q}`, { headers: { 'x-scan-secret': ticket.secret } });
    t.deepEqual(r.json, { status: 'pending' }, q);
    // a wait is whole seconds: under one is none, even on a loaded machine
    t.true(Date.now() - started < 1000, `no wait without a positive ?wait (${q}: ${Date.now() - started} ms)`);
  }
});

test.serial('each error its own: used, confirmed twice, cancelled', async (t) => {
  // used: a second poll after the session was given
  const used = await newTicket(a);
  const user = await phone(a);
  t.is((await answer(b, used.ticket, 'confirm', user.token)).status, 200);
  const pc = new Browser(a.url);
  t.is((await poll(pc, used)).status, 200);
  isError(t, await poll(pc, used), 409, 'ticket_used', 'second poll, same replica');
  isError(t, await poll(new Browser(b.url), used), 409, 'ticket_used', 'second poll, other replica');
  isError(t, await answer(b, used.ticket, 'confirm', user.token), 409, 'ticket_already_confirmed', 'confirm after use');

  // confirmed twice
  const twice = await newTicket(b);
  t.is((await answer(a, twice.ticket, 'confirm', user.token)).status, 200);
  isError(t, await answer(b, twice.ticket, 'confirm', user.token), 409, 'ticket_already_confirmed', 'confirm twice');
  const other = await phone(b);
  isError(t, await answer(a, twice.ticket, 'confirm', other.token), 409, 'ticket_already_confirmed', 'another user cannot take it over');
  isError(t, await answer(a, twice.ticket, 'cancel', user.token), 409, 'ticket_already_confirmed', 'cancel after confirm');
  const got = await poll(new Browser(a.url), twice);
  t.is(got.status, 200);
  t.is((await new Browser(a.url).go('/session', { headers: { cookie: `${SESSION}=${sessionCookie(got)!.value}` } })).json.openid, user.openid, 'the first confirmer');

  // cancelled
  const cancelled = await newTicket(a);
  const c = await answer(b, cancelled.ticket, 'cancel', user.token);
  t.is(c.status, 200, c.text);
  t.deepEqual(c.json, { status: 'cancelled' });
  isError(t, await poll(new Browser(a.url), cancelled), 409, 'ticket_cancelled', 'poll after cancel');
  isError(t, await answer(a, cancelled.ticket, 'confirm', user.token), 409, 'ticket_cancelled', 'confirm after cancel');
  isError(t, await answer(a, cancelled.ticket, 'cancel', user.token), 409, 'ticket_cancelled', 'cancel twice');

  // a long poll learns of the cancel at once
  const waitCancel = await newTicket(a);
  const waiting = poll(new Browser(a.url), waitCancel, { wait: 20 });
  await sleep(300); // the long poll reaches the gateway and waits (were it late, it would only prove less)
  const cancelledAt = Date.now();
  await answer(b, waitCancel.ticket, 'cancel', user.token);
  isError(t, await waiting, 409, 'ticket_cancelled', 'long poll, cancelled meanwhile');
  t.true(Date.now() - cancelledAt < WOKEN, `answered ${Date.now() - cancelledAt} ms after the cancel`);
});

test.serial('an expired ticket (ticketTtl: 1s): 410 ticket_expired for confirm, cancel and poll, also during a long poll', async (t) => {
  const prefix = `exp${++prefixes}:`;
  const [ea, eb] = await Promise.all([startTestGateway(config({ prefix, scan: { ticketTtl: '1s' } })), startTestGateway(config({ prefix, scan: { ticketTtl: '1s' } }))]);
  try {
    const ticket = await newTicket(ea);
    t.is(ticket.expires_in, 1);
    const user = await phone(eb);
    const waiting = poll(new Browser(ea.url), ticket, { wait: 5 });
    const started = Date.now();
    isError(t, await waiting, 410, 'ticket_expired', 'long poll across the expiry');
    t.true(Date.now() - started < 2000);
    isError(t, await answer(eb, ticket.ticket, 'confirm', user.token), 410, 'ticket_expired', 'confirm');
    isError(t, await answer(ea, ticket.ticket, 'cancel', user.token), 410, 'ticket_expired', 'cancel');
    isError(t, await poll(new Browser(eb.url), ticket), 410, 'ticket_expired', 'poll');
    // still remembered as expired (not unknown) for a while
    t.true((await admin.pttl(`${prefix}scan:${ticket.ticket}`)) > 60_000);

    // confirmed in time: the PC still gets its session right after
    const inTime = await newTicket(ea);
    t.is((await answer(eb, inTime.ticket, 'confirm', user.token)).status, 200);
    const got = await poll(new Browser(ea.url), inTime);
    t.is(got.status, 200, got.text);
    t.truthy(sessionCookie(got));
  } finally {
    await Promise.all([ea.close(), eb.close()]);
  }
});

test.serial('unknown, malformed and wrong-secret tickets: 404 ticket_not_found as JSON', async (t) => {
  const user = await phone(a);
  const real = await newTicket(a);
  const unknown = 'AAAAAAAAAAAAAAAAAAAAAA';
  const pc = new Browser(a.url);
  isError(t, await poll(pc, { ticket: unknown, secret: real.secret }), 404, 'ticket_not_found', 'unknown id, poll');
  isError(t, await answer(a, unknown, 'confirm', user.token), 404, 'ticket_not_found', 'unknown id, confirm');
  isError(t, await answer(b, unknown, 'cancel', user.token), 404, 'ticket_not_found', 'unknown id, cancel');
  for (const bad of ['short', `${real.ticket}A`, real.ticket.slice(1), `${real.ticket.slice(0, 21)}.`, `${real.ticket.slice(0, 21)}%25`, '%2E%2E', `${real.ticket.slice(0, 20)}%2F`]) {
    isError(t, await poll(pc, { ticket: bad, secret: real.secret }), 404, 'ticket_not_found', `malformed id ${bad}, poll`);
    isError(t, await answer(a, bad, 'confirm', user.token), 404, 'ticket_not_found', `malformed id ${bad}, confirm`);
  }
  const other = await newTicket(b);
  for (const [what, secret] of [
    ['no secret', undefined],
    ['an empty secret', ''],
    ['another ticket\'s secret', other.secret],
    ['the ticket id as secret', real.ticket],
    ['a secret one character off', real.secret.slice(0, -1) + (real.secret.endsWith('A') ? 'B' : 'A')],
    ['a secret too long', `${real.secret}A`],
  ] as Array<[string, string | undefined]>) {
    isError(t, await poll(pc, { ticket: real.ticket, secret }), 404, 'ticket_not_found', what);
  }
  // none of that harmed the ticket
  t.is((await answer(b, real.ticket, 'confirm', user.token)).status, 200);
  t.is((await poll(pc, real)).status, 200);
});

test.serial('confirm needs a mini-program session of web.scan.app: 401 without one, 403 app_not_allowed for another app or a web OAuth session', async (t) => {
  const ticket = await newTicket(a);
  const noToken = await answer(b, ticket.ticket, 'confirm');
  isError(t, noToken, 401, 'unauthorized', 'no token');
  t.regex(String(noToken.headers['www-authenticate']), /^Bearer/);
  isError(t, await answer(b, ticket.ticket, 'confirm', 'not-a-token'), 401, 'unauthorized', 'a bad token');
  const user = await phone(a);
  await request(a.url, { method: 'POST', path: '/logout', headers: { authorization: `Bearer ${user.token}` } });
  isError(t, await answer(b, ticket.ticket, 'confirm', user.token), 401, 'unauthorized', 'a logged-out token');

  // a second mini-program in wechat.apps
  const second = await phone(a, APP2);
  isError(t, await answer(b, ticket.ticket, 'confirm', second.token), 403, 'app_not_allowed', 'another mini-program');
  isError(t, await answer(b, ticket.ticket, 'cancel', second.token), 403, 'app_not_allowed', 'another mini-program cancels');

  // an Official Account web session (cookie, with an allowed Origin; and its token as Bearer)
  const web = new Browser(a.url);
  const start = await web.go('/oauth/mp/authorize?redirect=/');
  t.is(start.status, 302, start.text);
  const q = new URLSearchParams(new URL(start.headers.location!).search);
  q.set('user', 'webby');
  const approved = await request(sim.url, { path: `/connect/approve?${q}` });
  const back = new URL(approved.headers.location!);
  const cb = await web.go(back.pathname + back.search);
  t.is(cb.status, 302, cb.text);
  t.truthy(web.jar.get(SESSION));
  isError(t, await web.go(`/scan/tickets/${ticket.ticket}/confirm`, { method: 'POST', headers: { origin: PUBLIC } }), 403, 'app_not_allowed', 'web OAuth session (cookie)');
  isError(t, await answer(b, ticket.ticket, 'confirm', web.jar.get(SESSION)), 403, 'app_not_allowed', 'web OAuth session (Bearer)');

  // nothing of that touched the ticket
  const good = await phone(b);
  t.is((await answer(b, ticket.ticket, 'confirm', good.token)).status, 200);
  const got = await poll(new Browser(a.url), ticket);
  t.is(got.status, 200);
});

test.serial('race: two confirms at once on A and B, exactly one wins', async (t) => {
  for (let i = 0; i < 10; i++) {
    const ticket = await newTicket(i % 2 ? a : b);
    const [u1, u2] = await Promise.all([phone(a), phone(b)]);
    const answers = await Promise.all([answer(a, ticket.ticket, 'confirm', u1.token), answer(b, ticket.ticket, 'confirm', u2.token)]);
    t.deepEqual(answers.map((r) => r.status).sort(), [200, 409], `round ${i}`);
    const loser = answers.find((r) => r.status === 409)!;
    t.is(loser.json.error, 'ticket_already_confirmed');
    const winner = answers[0]!.status === 200 ? u1 : u2;
    const pc = new Browser(a.url);
    t.is((await poll(pc, ticket)).status, 200);
    t.is((await pc.go('/session')).json.openid, winner.openid, 'the PC is the winner');
  }
  // a confirm and a cancel at once: one of them, and the PC sees that one
  for (let i = 0; i < 6; i++) {
    const ticket = await newTicket(a);
    const u = await phone(a);
    const [c, x] = await Promise.all([answer(a, ticket.ticket, 'confirm', u.token), answer(b, ticket.ticket, 'cancel', u.token)]);
    t.is([c.status, x.status].filter((s) => s === 200).length, 1, `round ${i}: ${c.status} ${x.status}`);
    const res = await poll(new Browser(b.url), ticket);
    t.is(res.status, c.status === 200 ? 200 : 409);
  }
});

test.serial('race: two PCs polling with the same secret at once, exactly one gets the session', async (t) => {
  // (a fresh phone user per round: every PC login is a session of the user, and beyond session.maxPerUser
  // the oldest, the phone's own, would go)
  // both asking after the confirmation
  for (let i = 0; i < 10; i++) {
    const user = await phone(a);
    const ticket = await newTicket(a);
    t.is((await answer(b, ticket.ticket, 'confirm', user.token)).status, 200);
    const [p1, p2] = [new Browser(a.url), new Browser(b.url)];
    const answers = await Promise.all([poll(p1, ticket), poll(p2, ticket)]);
    t.deepEqual(answers.map((r) => r.status).sort(), [200, 409], `round ${i}`);
    t.is(answers.filter((r) => sessionCookie(r)).length, 1, 'one session cookie');
    t.is(answers.find((r) => r.status === 409)!.json.error, 'ticket_used');
  }
  // both long-polling when the confirmation comes
  for (let i = 0; i < 4; i++) {
    const user = await phone(b);
    const ticket = await newTicket(b);
    const polls = Promise.all([poll(new Browser(a.url), ticket, { wait: 5 }), poll(new Browser(b.url), ticket, { wait: 5 }), poll(new Browser(a.url), ticket, { wait: 5 })]);
    await sleep(400); // the long poll reaches the gateway and waits (were it late, it would only prove less)
    t.is((await answer(a, ticket.ticket, 'confirm', user.token)).status, 200);
    const answers = await polls;
    t.deepEqual(answers.map((r) => r.status).sort(), [200, 409, 409], `long-poll round ${i}`);
    t.is(answers.filter((r) => sessionCookie(r)).length, 1);
  }
});

test.serial('the secret matters: who knows only the ticket id (it is in the QR code) never gets a session', async (t) => {
  const ticket = await newTicket(a);
  const user = await phone(b);
  const thief = new Browser(b.url);
  const attempts = async (when: string) => {
    const tries: Array<Record<string, string>> = [{}, { 'x-scan-secret': ticket.ticket }, { 'x-scan-secret': 'A'.repeat(43) }, { authorization: `Bearer ${ticket.ticket}` }, { cookie: `${SESSION}=${ticket.ticket}` }];
    for (const headers of tries) {
      for (const q of ['', '?wait=1']) {
        const res = await thief.go(`/scan/tickets/${ticket.ticket}${q}`, { headers });
        t.is(res.status, 404, `${when} ${JSON.stringify(headers)}${q}: ${res.text}`);
        t.is(sessionCookie(res), undefined);
      }
    }
  };
  await attempts('before the confirmation');
  t.is((await answer(a, ticket.ticket, 'confirm', user.token)).status, 200);
  await attempts('after the confirmation');
  t.is(thief.jar.size, 0, 'the thief holds no cookie');
  // …and the PC that holds the secret still gets it afterwards
  const pc = new Browser(a.url);
  const res = await poll(pc, ticket);
  t.is(res.status, 200);
  t.is((await pc.go('/session')).json.openid, user.openid);
  // nor does the ticket's state say who confirmed it to anyone but the PC
  const again = await thief.go(`/scan/tickets/${ticket.ticket}`);
  t.false(again.text.includes(user.openid));
});

test.serial('a long poll whose client went away does not use up the ticket', async (t) => {
  const u = new URL(a.url);
  for (let i = 0; i < 4; i++) {
    const ticket = await newTicket(a);
    const user = await phone(b);
    // a PC page that starts a long poll and is closed (reload, tab closed) just before the confirmation
    const gone = http.request({ host: u.hostname, port: u.port, path: `/scan/tickets/${ticket.ticket}?wait=5`, headers: { 'x-scan-secret': ticket.secret }, agent: false });
    gone.on('error', () => {});
    gone.end();
    await sleep(300 + i * 60); // the poll reaches the gateway and waits; then its client goes, at varying moments
    gone.destroy();
    t.is((await answer(b, ticket.ticket, 'confirm', user.token)).status, 200);
    await sleep(600); // the abandoned poll has woken by now: were it to use up the ticket, it would have
    // the page, reloaded with the same ticket (or the next poll of the same page), gets the session
    const res = await poll(new Browser(a.url), ticket);
    t.is(res.status, 200, `round ${i}: ${res.text}`);
    t.truthy(sessionCookie(res));
  }
});

test.serial('POST /scan/tickets is rate limited per IP like /login (limits.login.perIp), counted apart from logins', async (t) => {
  const prefix = `rl${++prefixes}:`;
  const limited = () => startTestGateway(config({ prefix, limits: { login: { perIp: 3, window: '1m' } } }));
  const [ra, rb] = await Promise.all([limited(), limited()]);
  try {
    // logins use their own budget: three of them leave the tickets' untouched
    for (let i = 0; i < 3; i++) await phone(ra);
    const before = metricValue(await scrape(ra.url), 'wxgate_rate_limited_total', { endpoint: 'scan' });
    const made = [];
    for (const gw of [ra, rb, ra]) made.push(await request(gw.url, { method: 'POST', path: '/scan/tickets' }));
    t.deepEqual(made.map((r) => r.status), [201, 201, 201], 'the budget is shared by the replicas');
    const over = await request(rb.url, { method: 'POST', path: '/scan/tickets' });
    isError(t, over, 429, 'rate_limited', 'the 4th ticket');
    t.true(Number(over.headers['retry-after']) >= 1);
    t.regex(over.json.message, /QR codes/);
    t.is(metricValue(await scrape(rb.url), 'wxgate_rate_limited_total', { endpoint: 'scan' }) + metricValue(await scrape(ra.url), 'wxgate_rate_limited_total', { endpoint: 'scan' }) - before, 1);
    // the tickets did not spend logins, nor did the logins spend tickets: the logins' budget is gone by itself
    const login4 = await request(ra.url, { method: 'POST', path: '/login', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: `rl-late.1`, appid: APPID }) });
    t.is(login4.status, 429, 'the 4th login is over the login budget');
    // polling and confirming are not limited
    const ticket = made[0]!.json as Ticket;
    for (let i = 0; i < 5; i++) t.is((await poll(new Browser(i % 2 ? ra.url : rb.url), ticket)).status, 200);
  } finally {
    await Promise.all([ra.close(), rb.close()]);
  }
});

test.serial('WeChat failing to make the QR code: a clean 5xx JSON, no ticket', async (t) => {
  // a wrong app secret: no access_token
  const prefix = `fail${++prefixes}:`;
  const wrong = await startTestGateway(
    config({
      prefix,
      wechat: { apiBase: sim.url, timeout: '1s', apps: [{ appid: APPID, secret: 'wrong-secret-0123456789' }] },
    }),
  );
  try {
    const res = await request(wrong.url, { method: 'POST', path: '/scan/tickets' });
    t.true(res.status >= 500 && res.status < 600, res.text);
    t.is(res.json?.error, 'wechat_unavailable');
    t.is(typeof res.json?.message, 'string');
    t.is(res.json.ticket, undefined);
    t.false(res.text.includes('wrong-secret'), 'the secret is not echoed');
    t.deepEqual(await ticketKeys(prefix), []);
  } finally {
    await wrong.close();
  }

  // the simulator gone: first with an access_token at hand (getwxacodeunlimit fails), then without
  const sim2 = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
  const prefix2 = `fail${++prefixes}:`;
  const gw = await startTestGateway(
    config({ prefix: prefix2, wechat: { apiBase: sim2.url, timeout: '500ms', apps: [{ appid: APPID, secret: SECRET }] } }),
  );
  try {
    await newTicket(gw); // the token is fetched and kept
    t.is((await ticketKeys(prefix2)).length, 1);
    await sim2.close();
    const res = await request(gw.url, { method: 'POST', path: '/scan/tickets' });
    t.is(res.status, 503, res.text);
    t.deepEqual(Object.keys(res.json).sort(), ['error', 'message']);
    t.is(res.json.error, 'wechat_unavailable');
    t.is((await ticketKeys(prefix2)).length, 1, 'no new ticket');
    t.true(metricValue(await scrape(gw.url), 'wxgate_wechat_requests_total', { api: 'getwxacodeunlimit', outcome: 'network' }) >= 1);
    // and with no token either (the stored one dropped)
    await admin.del(...(await admin.keys(`${prefix2}wxtoken*`)));
    const gw2 = await startTestGateway(
      config({ prefix: prefix2, wechat: { apiBase: sim2.url, timeout: '300ms', apps: [{ appid: APPID, secret: SECRET }] } }),
    );
    try {
      const res2 = await request(gw2.url, { method: 'POST', path: '/scan/tickets' });
      t.true(res2.status >= 500 && res2.status < 600, res2.text);
      t.is(res2.json.error, 'wechat_unavailable');
      t.is(res2.headers['retry-after'], '5');
      t.is((await ticketKeys(prefix2)).length, 1, 'no new ticket');
    } finally {
      await gw2.close();
    }
  } finally {
    await gw.close();
  }
});

test.serial('only POST on /scan/tickets and the answers; GET/HEAD on a ticket; the rest of /scan is 404', async (t) => {
  const ticket = await newTicket(a);
  const res = await request(a.url, { path: '/scan/tickets' });
  isError(t, res, 405, 'method_not_allowed', 'GET /scan/tickets');
  t.is(res.headers.allow, 'POST');
  isError(t, await request(a.url, { method: 'GET', path: `/scan/tickets/${ticket.ticket}/confirm` }), 405, 'method_not_allowed', 'GET confirm');
  isError(t, await request(a.url, { method: 'DELETE', path: `/scan/tickets/${ticket.ticket}` }), 405, 'method_not_allowed', 'DELETE ticket');
  isError(t, await request(a.url, { path: '/scan/demo' }), 404, 'not_found', 'the demo page is off unless configured');
  isError(t, await request(a.url, { path: '/scan/elsewhere' }), 404, 'not_found', 'other /scan paths');
});

test.serial('memory store (one replica, http publicUrl): the whole flow, bare cookie name without Secure, and the races', async (t) => {
  const gw = await startTestGateway(
    testConfig({
      apiBase: sim.url,
      routes: [{ path: '/shop', upstream: up.url }],
      web: { publicUrl: 'http://127.0.0.1:8080', scan: { checkPath: false } },
    }),
  );
  try {
    const ticket = await newTicket(gw);
    t.regex(ticket.ticket, /^[A-Za-z0-9_-]{22}$/);
    t.truthy(pngSize(Buffer.from(ticket.qr.split(',')[1]!, 'base64')));
    const user = { token: await login(gw.url, 'memuser.1'), openid: simulatedOpenid(APPID, 'memuser') };
    const pc = new Browser(gw.url);
    const waiting = poll(pc, ticket, { wait: 20 });
    await sleep(500); // the long poll reaches the gateway and waits (were it late, it would only prove less)
    const at = Date.now();
    t.is((await answer(gw, ticket.ticket, 'confirm', user.token)).status, 200);
    const res = await waiting;
    t.true(Date.now() - at < WOKEN, `answered ${Date.now() - at} ms after the confirmation`);
    t.is(res.status, 200, res.text);
    const cookie = sessionCookie(res, 'wxgate_session')!;
    t.truthy(cookie, 'the bare name on http');
    t.is(cookie.attrs.httponly, '');
    t.is(cookie.attrs.samesite?.toLowerCase(), 'lax');
    t.is(cookie.attrs.secure, undefined, 'no Secure on http');
    t.not(cookie.value, user.token);
    t.is((await pc.go('/session')).json.openid, user.openid);
    t.is((await pc.go('/shop/x')).status, 200);
    t.is(up.seen.at(-1)!.headers['x-openid'], user.openid);
    isError(t, await poll(pc, ticket), 409, 'ticket_used');
    isError(t, await answer(gw, ticket.ticket, 'confirm', user.token), 409, 'ticket_already_confirmed');

    const c = await newTicket(gw);
    t.is((await answer(gw, c.ticket, 'cancel', user.token)).status, 200);
    isError(t, await poll(pc, c), 409, 'ticket_cancelled');
    isError(t, await answer(gw, c.ticket, 'confirm', user.token), 409, 'ticket_cancelled');
    isError(t, await poll(pc, { ticket: c.ticket, secret: ticket.secret }), 404, 'ticket_not_found', 'wrong secret');

    for (let i = 0; i < 5; i++) {
      const r = await newTicket(gw);
      const two = await Promise.all([answer(gw, r.ticket, 'confirm', user.token), answer(gw, r.ticket, 'confirm', user.token)]);
      t.deepEqual(two.map((x) => x.status).sort(), [200, 409]);
      const polls = await Promise.all([poll(new Browser(gw.url), r), poll(new Browser(gw.url), r)]);
      t.deepEqual(polls.map((x) => x.status).sort(), [200, 409]);
      t.is(polls.filter((x) => sessionCookie(x, 'wxgate_session')).length, 1);
    }
  } finally {
    await gw.close();
  }
});

test.serial('memory store, ticketTtl 1s: expired for confirm and poll', async (t) => {
  const clock = fakeDate();
  const gw = await startTestGateway(testConfig({ apiBase: sim.url, web: { publicUrl: 'http://127.0.0.1:8080', scan: { ticketTtl: '1s', checkPath: false } } }));
  try {
    const ticket = await newTicket(gw);
    const token = await login(gw.url, 'memexp.1');
    clock.pass(999);
    t.is((await poll(new Browser(gw.url), ticket)).json.status, 'pending', 'a moment before ticketTtl');
    clock.pass(1);
    isError(t, await answer(gw, ticket.ticket, 'confirm', token), 410, 'ticket_expired', 'confirm');
    isError(t, await poll(new Browser(gw.url), ticket), 410, 'ticket_expired', 'poll');
  } finally {
    await gw.close();
    clock.restore();
  }
});

test.serial('scanned: the phone marks the ticket on B, a long poll on A answers "scanned" at once; with seen=scanned it waits on for the confirmation', async (t) => {
  const ticket = await newTicket(a);
  const user = await phone(b);
  const pc = new Browser(a.url);
  t.deepEqual((await poll(pc, ticket)).json, { status: 'pending' });
  const waiting = poll(pc, ticket, { wait: 20 });
  await sleep(300); // the long poll reaches the gateway and waits (were it late, it would only prove less)
  const at = Date.now();
  const marked = await answer(b, ticket.ticket, 'scanned', user.token);
  t.is(marked.status, 200, marked.text);
  t.deepEqual(marked.json, { status: 'scanned' });
  const res = await waiting;
  t.true(Date.now() - at < WOKEN, `the long poll answered once the phone scanned (${Date.now() - at} ms)`);
  t.deepEqual(res.json, { status: 'scanned' });
  t.is(sessionCookie(res), undefined);
  t.is((await answer(b, ticket.ticket, 'scanned', user.token)).status, 200, 'marking twice is fine (the page reopened)');
  // the page shows it: seen=scanned waits for what comes next
  t.deepEqual((await poll(pc, ticket, { seen: 'scanned' })).json, { status: 'scanned' }, 'no wait: still scanned');
  const next = poll(pc, ticket, { wait: 5, seen: 'scanned' });
  await sleep(300); // the long poll reaches the gateway and waits (were it late, it would only prove less)
  t.is((await answer(b, ticket.ticket, 'confirm', user.token)).status, 200);
  const done = await next;
  t.is(done.json.status, 'confirmed');
  t.truthy(sessionCookie(done));
  isError(t, await answer(a, ticket.ticket, 'scanned', user.token), 409, 'ticket_already_confirmed', 'scanned after the confirmation');

  // a scanned ticket may still be cancelled; only the mini-program's own session may mark it
  const c = await newTicket(a);
  isError(t, await answer(a, c.ticket, 'scanned'), 401, 'unauthorized', 'no token');
  const other = await phone(a, APP2);
  isError(t, await answer(a, c.ticket, 'scanned', other.token), 403, 'app_not_allowed', 'another app');
  t.is((await answer(a, c.ticket, 'scanned', user.token)).status, 200);
  t.is((await answer(a, c.ticket, 'cancel', user.token)).status, 200);
  isError(t, await poll(pc, c), 409, 'ticket_cancelled');
  isError(t, await answer(a, c.ticket, 'scanned', user.token), 409, 'ticket_cancelled', 'scanned after a cancel');
  isError(t, await answer(a, 'A'.repeat(22), 'scanned', user.token), 404, 'ticket_not_found');
});

test.serial('scanned on the memory store, and an expired ticket cannot be marked', async (t) => {
  const clock = fakeDate();
  const gw = await startTestGateway(testConfig({ apiBase: sim.url, web: { publicUrl: 'http://127.0.0.1:8080', scan: { ticketTtl: '1s', checkPath: false } } }));
  try {
    const ticket = await newTicket(gw);
    const token = await login(gw.url, 'memscan.1');
    t.is((await answer(gw, ticket.ticket, 'scanned', token)).status, 200);
    t.deepEqual((await poll(new Browser(gw.url), ticket)).json, { status: 'scanned' });
    clock.pass(1000);
    isError(t, await answer(gw, ticket.ticket, 'scanned', token), 410, 'ticket_expired');
    isError(t, await poll(new Browser(gw.url), ticket, { seen: 'scanned' }), 410, 'ticket_expired', 'poll');
  } finally {
    await gw.close();
    clock.restore();
  }
});

test.serial('nothing above went wrong inside the replicas: no error-level log line, no secret or token logged', (t) => {
  for (const gw of [a, b]) {
    const errors = gw.logs.filter((l) => (JSON.parse(l) as { level: number }).level >= 50);
    t.deepEqual(errors, []);
    t.true(credentials.length > 100);
    const leaked = credentials.filter((c) => gw.logs.some((l) => l.includes(c)));
    t.deepEqual(leaked, []);
  }
});

test.serial('web.cookie.csrf double-submit: the PC gets the CSRF cookie with its session, and unsafe requests need it', async (t) => {
  const gw = await startTestGateway(
    testConfig({
      apiBase: sim.url,
      routes: [{ path: '/shop', upstream: up.url }],
      web: { publicUrl: PUBLIC, cookie: { csrf: 'double-submit' }, scan: { checkPath: false } },
    }),
  );
  try {
    const ticket = await newTicket(gw);
    const token = await login(gw.url, 'dsuser.1');
    t.is((await answer(gw, ticket.ticket, 'confirm', token)).status, 200);
    const pc = new Browser(gw.url);
    const res = await poll(pc, ticket);
    t.is(res.status, 200, res.text);
    const session = sessionCookie(res)!;
    const csrf = setCookies(res).find((c) => c.name === '__Host-wxgate_session_csrf')!;
    t.truthy(session);
    t.truthy(csrf, 'the CSRF cookie');
    t.is(csrf.attrs.httponly, undefined, 'page scripts read it');
    t.is(csrf.attrs.secure, '');
    const post = (headers: Record<string, string>) => pc.go('/shop/order', { method: 'POST', headers, body: '' });
    isError(t, await post({ origin: PUBLIC }), 403, 'csrf_failed', 'without the token');
    t.is((await post({ 'x-csrf-token': csrf.value })).status, 200);
    // a scan session cannot confirm another ticket by cookie without the CSRF token either
    const other = await newTicket(gw);
    isError(t, await pc.go(`/scan/tickets/${other.ticket}/confirm`, { method: 'POST', headers: { origin: PUBLIC } }), 403, 'csrf_failed', 'confirm by cookie');
  } finally {
    await gw.close();
  }
});

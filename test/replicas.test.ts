import test from 'ava';
import { startSimulator } from '../src/dev/simulator.js';
import { APPID, SECRET, login, spawnGateway, testConfig, type GatewayProcess } from './helpers/gateway.js';
import { request } from './helpers/http.js';
import { startRedis, type RedisServer } from './helpers/redis.js';
import { startUpstream, type Upstream } from './helpers/upstream.js';
import { waitFor } from './helpers/wait.js';

/**
 * Two gateway processes behind one real redis-server, as replicas behind a load balancer.
 */
let sim: Awaited<ReturnType<typeof startSimulator>>;
let redis: RedisServer;
let up: Upstream;
let a: GatewayProcess;
let b: GatewayProcess;
const ADMIN_TOKEN = 'admin-token-for-tests-0123456789';

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
  redis = await startRedis();
  up = await startUpstream();
  const cfg = (admin: boolean) =>
    testConfig({
      apiBase: sim.url,
      routes: [{ path: '/api', upstream: up.url }],
      session: { store: 'redis', redis: { url: redis.url, commandTimeout: '300ms' }, maxPerUser: 3, cache: { max: 1000, ttl: '60s' } },
      log: { level: 'info' },
      ...(admin ? { admin: { port: 0, token: '${WXGATE_TEST_ADMIN_TOKEN}' } } : {}),
    });
  [a, b] = await Promise.all([spawnGateway(cfg(true), { WXGATE_TEST_ADMIN_TOKEN: ADMIN_TOKEN }), spawnGateway(cfg(false))]);
});
test.after.always(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
  await up?.close();
  await redis?.close();
  await sim?.close();
});

async function status(gw: GatewayProcess, token: string): Promise<number> {
  return (await request(gw.url, { path: '/api/x', headers: bearer(token) })).status;
}

async function wechatCalls(gw: GatewayProcess): Promise<number> {
  const text = (await request(gw.url, { path: '/metrics' })).text;
  return [...text.matchAll(/^wxgate_wechat_requests_total\{[^}]*\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
}

test.serial('a token issued by one replica works on the other', async (t) => {
  const token = await login(a.url, 'replica-user.1');
  t.is(await status(b, token), 200);
  t.regex(String(up.seen.at(-1)!.headers['x-openid']), /^o/);
});

test.serial('logout on one replica is refused by the other at once, though it cached the session', async (t) => {
  const token = await login(a.url, 'logout-user.1');
  t.is(await status(a, token), 200); // now in A's LRU
  t.is(await status(a, token), 200);
  t.is((await request(b.url, { method: 'POST', path: '/logout', headers: bearer(token) })).status, 204);
  const start = Date.now();
  // A's cache keeps the session for 60 s: only the revocation message can make it refuse sooner
  await waitFor(async () => (await status(a, token)) === 401, { interval: 5, message: 'A refused the revoked token' });
  t.log(`replica A refused the revoked token after ${Date.now() - start} ms`);
});

test.serial('logout with {"all": true} kills every session of that user on every replica, and only theirs', async (t) => {
  const t1 = await login(a.url, 'multi-device.1');
  const t2 = await login(b.url, 'multi-device.2');
  const other = await login(a.url, 'someone-else.1');
  for (const tok of [t1, t2]) for (const gw of [a, b]) t.is(await status(gw, tok), 200);
  const res = await request(a.url, { method: 'POST', path: '/logout', headers: { ...bearer(t1), 'content-type': 'application/json' }, body: '{"all":true}' });
  t.is(res.status, 204);
  for (const tok of [t1, t2]) for (const gw of [a, b]) await waitFor(async () => (await status(gw, tok)) === 401, { message: 'every session refused' });
  t.is(await status(b, other), 200);
});

test.serial('a user keeps at most maxPerUser sessions; the oldest goes', async (t) => {
  const tokens: string[] = [];
  for (let i = 1; i <= 4; i++) tokens.push(await login(i % 2 ? a.url : b.url, `busy-user.${i}`));
  await waitFor(async () => (await status(a, tokens[0]!)) === 401, { message: 'the oldest session refused' });
  for (const tok of tokens.slice(1)) t.is(await status(b, tok), 200);
});

test.serial('the same code from many callers on two replicas: one WeChat call, one answer', async (t) => {
  const before = (await wechatCalls(a)) + (await wechatCalls(b));
  const code = 'slow-300.twice-fired';
  const post = (gw: GatewayProcess) =>
    request(gw.url, { method: 'POST', path: '/login', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code }) });
  const answers = await Promise.all([post(a), post(b), post(a), post(b), post(a), post(b)]);
  t.deepEqual(
    answers.map((r) => r.status),
    [200, 200, 200, 200, 200, 200],
  );
  t.is(new Set(answers.map((r) => r.json.token)).size, 1, 'every caller got the same token');
  // a retry after a lost response, seconds later, on either replica: the same answer, not 40163
  const retry = await post(b);
  t.is(retry.status, 200);
  t.is(retry.json.token, answers[0]!.json.token);
  t.is((await wechatCalls(a)) + (await wechatCalls(b)) - before, 1);
  t.false([...a.stdout, ...b.stdout].some((l) => l.includes(answers[0]!.json.token)), 'the token is never logged');
});

test.serial('a remembered code whose session was logged out answers code_used', async (t) => {
  const res = await request(a.url, { method: 'POST', path: '/login', headers: { 'content-type': 'application/json' }, body: '{"code":"gone-user.1"}' });
  await request(a.url, { method: 'POST', path: '/logout', headers: bearer(res.json.token) });
  const again = await request(b.url, { method: 'POST', path: '/login', headers: { 'content-type': 'application/json' }, body: '{"code":"gone-user.1"}' });
  t.is(again.status, 401);
  t.is(again.json.error, 'code_used');
});

test.serial('admin API: list and revoke a user\'s sessions, with the admin bearer secret only', async (t) => {
  const token = await login(b.url, 'admin-target.1');
  const openid = (await request(b.url, { path: '/session', headers: bearer(token) })).json.openid;
  const adminUrl = JSON.parse(a.stdout.find((l) => l.includes('wxgate listening'))!).admin as string;
  const path = `/users/${APPID}/${openid}/sessions`;
  t.is((await request(adminUrl, { path })).status, 401);
  t.is((await request(adminUrl, { path, headers: bearer('wrong-admin-token-0000000000000') })).status, 401);
  const list = await request(adminUrl, { path, headers: bearer(ADMIN_TOKEN) });
  t.is(list.status, 200);
  t.is(list.json.sessions.length, 1);
  t.notRegex(list.text, new RegExp(token));
  const del = await request(adminUrl, { method: 'DELETE', path, headers: bearer(ADMIN_TOKEN) });
  t.deepEqual(del.json, { revoked: 1 });
  await waitFor(async () => (await status(b, token)) === 401, { message: 'the revoked session refused' });
  t.is((await request(a.url, { path })).status, 404, 'the admin API is not on the main listener');
});

test.serial('Redis down: cached sessions keep working, others get a fast 503, and it all recovers', async (t) => {
  const cached = await login(a.url, 'outage-cached.1');
  t.is(await status(a, cached), 200);
  const uncached = await login(b.url, 'outage-uncached.1');

  await redis.stop();
  t.is(await status(a, cached), 200, 'a session in the LRU keeps working');
  let start = Date.now();
  const res = await request(a.url, { path: '/api/x', headers: bearer(uncached) });
  t.is(res.status, 503, 'not 401: that would send every client into a login storm');
  t.is(res.json.error, 'session_store_unavailable');
  // commandTimeout is 300 ms: a bound ten times that tells "answered" from "hung", whatever the load
  t.true(Date.now() - start < 3000, `answered in ${Date.now() - start} ms`);
  start = Date.now();
  const loginDown = await request(a.url, { method: 'POST', path: '/login', headers: { 'content-type': 'application/json' }, body: '{"code":"outage-new.1"}' });
  t.is(loginDown.status, 503);
  t.true(Date.now() - start < 3000, `answered in ${Date.now() - start} ms`);
  t.is((await request(a.url, { path: '/healthz' })).status, 200);
  t.is((await request(a.url, { path: '/readyz' })).status, 503);
  t.regex((await request(a.url, { path: '/metrics' })).text, /wxgate_session_store_up 0/);
  t.true(a.stdout.some((l) => l.includes('redis is unavailable')), 'the log says so');

  await redis.start();
  // each replica reconnects on its own jittered backoff (up to ~2.4 s apart): wait for both
  for (const gw of [a, b]) await waitFor(async () => (await request(gw.url, { path: '/readyz' })).status === 200, { timeout: 10_000, interval: 100, message: 'ready again' });
  // Redis kept nothing (no persistence in tests), so the old sessions are gone: 401 now, not 503 —
  // also for the one A had cached: after a reconnect it may have missed revocations, so its LRU is dropped.
  t.is(await status(a, uncached), 401);
  t.is(await status(a, cached), 401);
  const fresh = await login(a.url, 'outage-after.1');
  t.is(await status(b, fresh), 200);
  t.regex((await request(a.url, { path: '/metrics' })).text, /wxgate_session_store_up 1/);
  // the log line comes from the reconnect handler, which may run a moment after readyz turned green
  await waitFor(() => a.stdout.some((l) => l.includes('redis is back')), { message: 'the log says it recovered' });
});

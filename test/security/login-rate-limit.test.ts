import test from 'ava';
import { Redis } from 'ioredis';
import { buildConfig, ConfigError } from '../../src/config/load.js';
import { clientKey } from '../../src/login/rate-limit.js';
import { startSimulator } from '../../src/dev/simulator.js';
import { APPID, SECRET, startTestGateway, testConfig, type TestGateway } from '../helpers/gateway.js';
import { request, type Reply } from '../helpers/http.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { metricValue, scrape } from '../helpers/metrics.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';

/**
 * limits.login: POST /login per client IP, counted in the session store. Two in-process replicas share
 * one real redis-server; the client IP is the socket peer, or the X-Forwarded-For entry that the
 * trusted proxies vouch for.
 */
let sim: Awaited<ReturnType<typeof startSimulator>>;
let redis: RedisServer;
let admin: Redis;
/** two replicas behind a trusted proxy (127.0.0.1), 5 logins per client per minute */
let a: TestGateway;
let b: TestGateway;
/** the same Redis, no trusted proxies: clients are who the socket says */
let direct: TestGateway;

const PER_IP = 5;
let codes = 0;
const code = (user = 'rl-user') => `${user}-${++codes}.1`;

function redisSession(url: string, keyPrefix = 'wxgate:') {
  return { store: 'redis', redis: { url, keyPrefix, commandTimeout: '300ms', connectTimeout: '500ms' } };
}

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
  redis = await startRedis();
  admin = new Redis(redis.url);
  const replica = () =>
    startTestGateway(
      testConfig({
        apiBase: sim.url,
        session: redisSession(redis.url),
        server: { host: '127.0.0.1', port: 0, trustedProxies: ['127.0.0.1'] },
        limits: { login: { perIp: PER_IP, window: '1m' } },
      }),
    );
  [a, b] = await Promise.all([replica(), replica()]);
  direct = await startTestGateway(
    testConfig({ apiBase: sim.url, session: redisSession(redis.url, 'direct:'), limits: { login: { perIp: PER_IP, window: '1m' } } }),
  );
});
test.after.always(async () => {
  await Promise.all([a?.close(), b?.close(), direct?.close()]);
  admin?.disconnect();
  await redis?.close();
  await sim?.close();
});

function postLogin(gw: TestGateway, headers: Record<string, string> = {}, user?: string): Promise<Reply> {
  return request(gw.url, {
    method: 'POST',
    path: '/login',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ code: code(user) }),
  });
}

function assertLimited(t: { is: Function; regex: Function; true: Function }, res: Reply, what: string): void {
  t.is(res.status, 429, what);
  t.is(res.json?.error, 'rate_limited', what);
  t.regex(String(res.json?.message), /retry/i, what);
  t.regex(String(res.headers['content-type']), /^application\/json/, what);
  const retryAfter = Number(res.headers['retry-after']);
  t.true(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60, `${what}: Retry-After ${res.headers['retry-after']}`);
}

async function wechatCalls(gw: TestGateway): Promise<number> {
  return (await gw.metrics.wechatRequests.get()).values.reduce((n, v) => n + v.value, 0);
}

test.serial('two replicas on one Redis share one budget per client IP; refused logins never reach WeChat', async (t) => {
  const client = { 'x-forwarded-for': '198.51.100.1' };
  const before = (await wechatCalls(a)) + (await wechatCalls(b));
  for (let i = 0; i < PER_IP; i++) {
    const res = await postLogin(i % 2 ? b : a, client);
    t.is(res.status, 200, `login ${i + 1} of ${PER_IP}`);
  }
  assertLimited(t, await postLogin(a, client), 'the next one on replica A');
  assertLimited(t, await postLogin(b, client), 'and on replica B');
  t.is((await wechatCalls(a)) + (await wechatCalls(b)) - before, PER_IP, 'only the allowed logins asked WeChat');
  t.is((await postLogin(b, { 'x-forwarded-for': '198.51.100.2' })).status, 200, 'another client is not affected');

  for (const gw of [a, b]) {
    const text = await scrape(gw.url);
    t.true(metricValue(text, 'wxgate_rate_limited_total', { endpoint: 'login' }) >= 1);
    t.true(metricValue(text, 'wxgate_logins_total', { result: 'rate_limited' }) >= 1);
  }
  // the bucket lives in Redis, under the client's address, empty now, and expires once it would be full again
  const key = 'wxgate:rlb:login:198.51.100.1';
  const tokens = Number(await admin.hget(key, 't'));
  t.true(tokens >= 0 && tokens < 1, `tokens left ${tokens}`);
  const ttl = await admin.pttl(key);
  t.true(ttl > 0 && ttl <= 60_000 + 1000, `kept for ${ttl} ms (a minute refills ${PER_IP})`);
});

test("a trusted proxy's X-Forwarded-For picks the client: the address the proxy appended, not what the client wrote", async (t) => {
  const real = '198.51.100.20';
  for (let i = 0; i < PER_IP; i++) {
    // the client writes anything into its own X-Forwarded-For; the proxy appends the address it saw
    const res = await postLogin(a, { 'x-forwarded-for': `10.${i}.0.1, 203.0.113.${i}, ${real}` });
    t.is(res.status, 200, `login ${i + 1}`);
  }
  assertLimited(t, await postLogin(b, { 'x-forwarded-for': `192.0.2.99, ${real}` }), 'a forged entry in front does not make a new client');
  assertLimited(t, await postLogin(a, { 'x-forwarded-for': real }), 'the client itself');
  t.is((await postLogin(a, { 'x-forwarded-for': `${real}, 198.51.100.21` })).status, 200, 'the client the proxy names is a new one');
});

test("an untrusted client's forged X-Forwarded-For (or X-Real-IP, Forwarded) does not dodge the limit", async (t) => {
  for (let i = 0; i < PER_IP; i++) {
    const res = await postLogin(direct, { 'x-forwarded-for': `198.51.100.${100 + i}`, 'x-real-ip': `198.51.100.${150 + i}` });
    t.is(res.status, 200, `login ${i + 1}`);
  }
  for (const headers of <Array<Record<string, string>>>[
    { 'x-forwarded-for': '198.51.100.200' },
    { 'x-forwarded-for': '198.51.100.201, 198.51.100.202' },
    { 'x-real-ip': '198.51.100.203' },
    { forwarded: 'for=198.51.100.204' },
    {},
  ]) {
    assertLimited(t, await postLogin(direct, headers), `with ${JSON.stringify(headers)}`);
  }
  t.deepEqual(await admin.keys('direct:rlb:login:*'), ['direct:rlb:login:127.0.0.1'], 'every attempt counted against the socket peer, none against a forged address');
});

test('IPv6 clients are counted per /64 (one subscriber holds a whole /64); IPv4-mapped addresses as IPv4', async (t) => {
  for (let i = 0; i < PER_IP; i++) {
    const res = await postLogin(a, { 'x-forwarded-for': `2001:db8:aa:1:${i + 1}::${i + 7}` });
    t.is(res.status, 200, `login ${i + 1}`);
  }
  assertLimited(t, await postLogin(b, { 'x-forwarded-for': '2001:db8:aa:1:ffff:ffff:ffff:ffff' }), 'another address of the same /64');
  t.is((await postLogin(b, { 'x-forwarded-for': '2001:db8:aa:2::1' })).status, 200, 'the next /64 is another client');

  t.is(clientKey('198.51.100.7'), '198.51.100.7');
  t.is(clientKey('::ffff:198.51.100.7'), '198.51.100.7');
  t.is(clientKey('2001:DB8:0:0:1:2:3:4'), '2001:db8:0:0::/64');
  t.is(clientKey('2001:db8::1'), '2001:db8:0:0::/64');
  t.is(clientKey('::1'), '0:0:0:0::/64');
  t.is(clientKey('fe80::1%eth0'), 'fe80:0:0:0::/64');
});

test('the memory store counts in the process; a refused client may log in again when Retry-After says', async (t) => {
  // 2 at once, then one every 3 s (slow enough that a busy machine does not refill it mid-test)
  const gw = await startTestGateway(testConfig({ apiBase: sim.url, limits: { login: { perIp: 1, window: '3s', burst: 2 } } }));
  t.teardown(() => gw.close());
  t.is((await postLogin(gw)).status, 200);
  t.is((await postLogin(gw)).status, 200);
  const refused = await postLogin(gw);
  assertLimited(t, refused, 'the third at once');
  const retryAfter = Number(refused.headers['retry-after']);
  t.true(retryAfter >= 1 && retryAfter <= 3, `Retry-After ${retryAfter}`);
  const started = Date.now();
  const status = await waitFor(async () => {
    const s = (await postLogin(gw)).status;
    return s !== 429 && s;
  }, { timeout: retryAfter * 1000 + 4000, interval: 50, message: 'allowed again once a token is back' });
  t.is(status, 200, 'allowed again once a token is back');
  t.true(Date.now() - started <= retryAfter * 1000 + 2500, `after ${Date.now() - started} ms (Retry-After ${retryAfter} s)`);
  t.true(metricValue(await scrape(gw.url), 'wxgate_rate_limited_total', { endpoint: 'login' }) >= 1);
});

test.serial('Redis down: logins are not limited (fail open, logged once, counted), never a 500; counting resumes when it is back', async (t) => {
  const r2 = await startRedis();
  t.teardown(() => r2.close());
  const gw = await startTestGateway(testConfig({ apiBase: sim.url, session: redisSession(r2.url), limits: { login: { perIp: 1, window: '1m' } } }));
  t.teardown(() => gw.close());
  t.is((await postLogin(gw)).status, 200);
  assertLimited(t, await postLogin(gw), 'the limit works while Redis does');

  await r2.stop();
  for (let i = 0; i < 3; i++) {
    const res = await postLogin(gw);
    // the login itself needs Redis (the code's replay record): 503, as any request that needs the store
    t.is(res.status, 503, `login ${i + 1} while Redis is down`);
    t.is(res.json?.error, 'session_store_unavailable');
  }
  const text = await scrape(gw.url);
  t.true(metricValue(text, 'wxgate_session_store_errors_total', { op: 'rateLimit' }) >= 3);
  t.is(metricValue(text, 'wxgate_rate_limited_total', { endpoint: 'login' }), 1, 'nothing refused while it cannot count');
  const warned = gw.logs.filter((l) => l.includes('login rate limit cannot count'));
  t.is(warned.length, 1, 'one log line for the outage, not one per login');
  t.is(JSON.parse(warned[0]!).level, 40);
  t.false(gw.logs.some((l) => JSON.parse(l).level >= 50), 'no error-level log line');

  await r2.start();
  const res = await waitFor(async () => {
    const r = await postLogin(gw);
    return r.status !== 503 && r;
  }, { timeout: 8000, interval: 50, message: 'a login answered after the restart' });
  t.is(res.status, 200, 'the first login after the restart (its counter was lost with the data)');
  assertLimited(t, await postLogin(gw), 'counting again');
  t.true(gw.logs.some((l) => l.includes('login rate limit is counting again')));
});

test('limits.login is validated: defaults 600 a minute (burst = perIp), 0 turns it off, nonsense refused with the key named', (t) => {
  const base = { wechat: { apps: [{ appid: APPID, secret: 's' }] } };
  const c = buildConfig(base, 'x', {});
  t.deepEqual(c.limits.login, { perIp: 600, window: 60_000 });
  t.is(buildConfig({ ...base, limits: { login: { perIp: 0 } } }, 'x', {}).limits.login.perIp, 0);
  t.is(buildConfig({ ...base, limits: { login: { perIp: 60, burst: 300 } } }, 'x', {}).limits.login.burst, 300);
  const err = t.throws(() => buildConfig({ ...base, limits: { login: { perIp: -1, window: '10ms', burst: 0, per: 3 } } }, 'x', {}), {
    instanceOf: ConfigError,
  }) as ConfigError;
  const text = err.problems.join('\n');
  t.regex(text, /limits\.login\.perIp/);
  t.regex(text, /limits\.login\.window: must be at least 1000ms/);
  t.regex(text, /limits\.login\.burst/);
  t.regex(text, /limits\.login\.per: unknown key/);
});

test('the default limit lets a busy address through: 600 phones behind one carrier-grade NAT (or a campus) log in at once; beyond it they are refused', async (t) => {
  // the default limits.login, on the Redis store (as in production)
  const gw = await startTestGateway({ ...testConfig({ apiBase: sim.url, session: redisSession(redis.url, 'cgnat:') }), limits: {} }, { logLevel: 'warn' });
  t.teardown(() => gw.close());
  const nat = { 'x-forwarded-for': '198.51.100.250' };
  const others: string[] = [];
  for (let batch = 0; batch < 30; batch++) {
    const answers = await Promise.all(Array.from({ length: 20 }, () => postLogin(gw, nat, 'nat-phone')));
    for (const r of answers) if (r.status !== 200) others.push(`${r.status} ${r.text.slice(0, 80)}`);
  }
  t.deepEqual(others, [], 'every one of 600 logins from one address in a few seconds');
  // the bucket is empty now; it refills at 10 a second: of 200 more at once, those beyond the refill are refused
  const more = await Promise.all(Array.from({ length: 200 }, () => postLogin(gw, nat, 'nat-phone')));
  const refused = more.filter((r) => r.status === 429);
  t.log(`${refused.length} of 200 more refused`);
  t.true(refused.length > 0, 'the limit still holds beyond the burst');
  assertLimited(t, refused[0]!, 'beyond the burst');
});

for (const store of ['memory', 'redis'] as const) {
  test(`${store}: a token bucket: a burst at once, then perIp per window (not a fixed window)`, async (t) => {
    // 12 a minute: one every 5 s (slow enough that a busy machine does not refill it mid-test); 5 at once
    const gw = await startTestGateway(
      testConfig({ apiBase: sim.url, ...(store === 'redis' ? { session: redisSession(redis.url, `bucket${codes}:`) } : {}), limits: { login: { perIp: 12, window: '1m', burst: 5 } } }),
    );
    t.teardown(() => gw.close());
    for (let i = 0; i < 5; i++) t.is((await postLogin(gw)).status, 200, `burst login ${i + 1}`);
    const refused = await postLogin(gw);
    assertLimited(t, refused, 'the 6th at once');
    const retryAfter = Number(refused.headers['retry-after']);
    t.true(retryAfter >= 1 && retryAfter <= 5, `a token comes back within 5 s: Retry-After ${retryAfter}`);
    await sleep(retryAfter * 1000 + 200); // real time: the bucket refills on Redis's (or the process's) clock
    t.is((await postLogin(gw)).status, 200, 'one token refilled when Retry-After said');
    assertLimited(t, await postLogin(gw), 'but not two');
  });
}

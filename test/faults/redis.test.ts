import { randomBytes } from 'node:crypto';
import test from 'ava';
import { Redis } from 'ioredis';
import { backoff } from '../../src/redis/client.js';
import { RedisStore } from '../../src/session/redis-store.js';
import { hashToken, newToken } from '../../src/session/tokens.js';
import { StoreUnavailableError } from '../../src/session/types.js';
import { startSimulator } from '../../src/dev/simulator.js';
import { APPID, SECRET, login, startTestGateway, testConfig, type TestGateway } from '../helpers/gateway.js';
import { request, type Reply } from '../helpers/http.js';
import { metricValue, scrape } from '../helpers/metrics.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';

/**
 * When Redis fails: killed, blackholed, read-only, out of memory, refusing our password, absent at
 * start-up. Real redis-servers of this file's own (never the machine's), real in-process gateways
 * (two where a session must be one the answering replica has not cached), the WeChat simulator and
 * a real upstream. Serial: the tests take the shared server down in turn.
 */
const COMMAND_TIMEOUT = 300;
let sim: Awaited<ReturnType<typeof startSimulator>>;
let up: Upstream;
/** Appends every write to disk at once, so a SIGKILL loses nothing it acknowledged. */
let redis: RedisServer;

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
  up = await startUpstream();
  redis = await startRedis(() => ({ args: ['--appendonly', 'yes', '--appendfsync', 'always'] }));
});
test.after.always(async () => {
  await redis?.close();
  await up?.close();
  await sim?.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() > deadline) return false;
    await sleep(25);
  }
}

type Teardown = { teardown(fn: () => Promise<void>): void };
const randomPrefix = () => `f${randomBytes(3).toString('hex')}:`;

/** A gateway in this process on `url`, closed after the test. */
async function gateway(t: Teardown, url: string, more: { cache?: object; connectTimeout?: string; keyPrefix?: string } = {}): Promise<TestGateway> {
  const gw = await startTestGateway(
    testConfig({
      apiBase: sim.url,
      routes: [{ path: '/api', upstream: up.url }],
      session: {
        store: 'redis',
        redis: { url, keyPrefix: more.keyPrefix ?? randomPrefix(), commandTimeout: `${COMMAND_TIMEOUT}ms`, connectTimeout: more.connectTimeout ?? '1s' },
        cache: more.cache ?? { max: 1000, ttl: '60s' },
      },
    }),
  );
  t.teardown(() => gw.close());
  return gw;
}
/** Two replicas sharing one prefix: a token from `b` is one `a` has never cached. */
async function replicas(t: Teardown, url: string): Promise<[TestGateway, TestGateway]> {
  const keyPrefix = randomPrefix();
  return [await gateway(t, url, { keyPrefix }), await gateway(t, url, { keyPrefix })];
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const api = (gw: TestGateway, token: string) => request(gw.url, { path: '/api/orders', headers: bearer(token) });
const postLogin = (gw: TestGateway, code: string) =>
  request(gw.url, { method: 'POST', path: '/login', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code }) });
const ready = async (gw: TestGateway) => (await request(gw.url, { path: '/readyz' })).status === 200;

/** Asserts the answer is the catalogue's 503 for a store that cannot answer. */
function storeUnavailable(t: { is(a: unknown, b: unknown, m?: string): void }, res: Reply, what: string): void {
  t.is(res.status, 503, `${what}: ${res.status} ${res.text}`);
  t.is(res.json?.error, 'session_store_unavailable', what);
  t.is(res.headers['retry-after'], '1', what);
}

test.serial('Redis killed and restarted: cached sessions keep working, others get 503 (never 401), and every session Redis kept works after', async (t) => {
  const [a, b] = await replicas(t, redis.url);
  const cached = await login(a.url, 'kill-cached.1');
  t.is((await api(a, cached)).status, 200);
  const uncached = await login(b.url, 'kill-uncached.1');

  await redis.kill();
  t.is((await api(a, cached)).status, 200, 'a session in the LRU keeps working');
  const start = Date.now();
  const burst = await Promise.all(Array.from({ length: 50 }, () => api(a, uncached)));
  t.true(Date.now() - start < 1000, `50 requests answered in ${Date.now() - start} ms`);
  t.deepEqual([...new Set(burst.map((r) => r.status))], [503], 'not one 401: that would send every client into a login storm');
  storeUnavailable(t, burst[0]!, 'proxied request');
  storeUnavailable(t, await request(a.url, { path: '/session', headers: bearer(uncached) }), '/session');
  storeUnavailable(t, await postLogin(a, 'kill-new.1'), '/login');
  t.is((await request(a.url, { path: '/healthz' })).status, 200);
  t.is((await request(a.url, { path: '/readyz' })).status, 503);
  t.is(metricValue(await scrape(a.url), 'wxgate_session_store_up'), 0);

  await redis.start();
  t.true(await until(async () => (await ready(a)) && (await ready(b)), 10_000), 'both replicas ready again by themselves');
  for (const [gw, name] of [[a, 'a'], [b, 'b']] as const) {
    t.is((await api(gw, cached)).status, 200, `the session a had cached works on ${name}`);
    t.is((await api(gw, uncached)).status, 200, `the session a had not cached works on ${name}`);
  }
  const fresh = await login(a.url, 'kill-after.1');
  t.is((await api(b, fresh)).status, 200);
  t.is(metricValue(await scrape(a.url), 'wxgate_session_store_up'), 1);
});

test.serial('Redis blackholed (SIGSTOP): uncached requests, logins and /readyz answer 503 within commandTimeout, cached ones 200, and nothing is lost', async (t) => {
  const [a, b] = await replicas(t, redis.url);
  const cached = await login(a.url, 'hole-cached.1');
  t.is((await api(a, cached)).status, 200);
  const uncached = await login(b.url, 'hole-uncached.1');

  redis.pause();
  t.teardown(() => redis.resume());
  const bound = COMMAND_TIMEOUT + 500;
  const timed = async (p: Promise<Reply>) => {
    const start = Date.now();
    const res = await p;
    return { res, ms: Date.now() - start };
  };
  const many = await Promise.all(Array.from({ length: 20 }, () => timed(api(a, uncached))));
  for (const { res, ms } of many) {
    storeUnavailable(t, res, 'proxied request');
    t.true(ms < bound, `answered after ${ms} ms (commandTimeout ${COMMAND_TIMEOUT} ms)`);
  }
  const loginDown = await timed(postLogin(a, 'hole-new.1'));
  storeUnavailable(t, loginDown.res, '/login');
  t.true(loginDown.ms < bound, `/login answered after ${loginDown.ms} ms`);
  const readyz = await timed(request(a.url, { path: '/readyz' }));
  t.is(readyz.res.status, 503);
  t.true(readyz.ms < bound, `/readyz answered after ${readyz.ms} ms`);
  const fromCache = await timed(api(a, cached));
  t.is(fromCache.res.status, 200, 'a cached session does not wait for Redis');
  t.true(fromCache.ms < 200, `${fromCache.ms} ms`);

  redis.resume();
  t.true(await until(async () => (await api(a, uncached)).status === 200, 10_000), 'the session Redis kept works again');
  t.is((await api(b, cached)).status, 200);
  t.is((await api(a, cached)).status, 200);
});

/** Waits until `client`'s server is a replica whose link to its master is up. */
async function replicaInSync(client: Redis): Promise<boolean> {
  return until(async () => /master_link_status:up/.test(await client.info('replication')), 10_000);
}

test.serial('Redis answering READONLY (the gateway still points at a demoted master): logins answer 503, not 500, and sessions keep authenticating', async (t) => {
  const promoted = await startRedis();
  const oldMaster = new Redis(redis.url);
  const newMaster = new Redis(promoted.url);
  t.teardown(async () => {
    await oldMaster.replicaof('NO', 'ONE');
    oldMaster.disconnect();
    newMaster.disconnect();
    await promoted.close();
  });
  // every check reads Redis: no LRU to hide behind
  const gw = await gateway(t, redis.url, { cache: { max: 0 } });
  const token = await login(gw.url, 'readonly-user.1');

  // A failover the gateway was not told about: the other server takes a copy and is promoted, ours is demoted.
  for (const c of [oldMaster, newMaster]) await c.config('SET', 'repl-diskless-sync-delay', '0');
  await newMaster.replicaof('127.0.0.1', String(redis.port));
  t.true(await replicaInSync(newMaster));
  await newMaster.replicaof('NO', 'ONE');
  await oldMaster.replicaof('127.0.0.1', String(promoted.port));
  t.true(await replicaInSync(oldMaster));
  t.true(await until(async () => (await api(gw, token)).status === 200, 5000), 'the session survived the failover');

  for (let i = 1; i <= 5; i++) {
    storeUnavailable(t, await postLogin(gw, `readonly-new.${i}`), `login ${i}`);
    t.is((await api(gw, token)).status, 200, `proxied request after login ${i}`);
    t.is((await request(gw.url, { path: '/session', headers: bearer(token) })).status, 200, `/session after login ${i}`);
  }
  t.false(
    gw.logs.some((l) => JSON.parse(l).level >= 50),
    'nothing logged as an error: a read-only Redis is an outage, not a bug',
  );
});

test.serial('Redis out of memory (maxmemory 1mb, noeviction): logins answer 503 session_store_unavailable, existing sessions keep authenticating', async (t) => {
  const gw = await gateway(t, redis.url, { cache: { max: 0 } });
  const token = await login(gw.url, 'oom-user.1');
  const admin = new Redis(redis.url);
  const filler: string[] = [];
  t.teardown(async () => {
    for (let i = 0; i < filler.length; i += 500) await admin.del(...filler.slice(i, i + 500));
    await admin.config('SET', 'maxmemory', '0');
    admin.disconnect();
  });
  await admin.config('SET', 'maxmemory-policy', 'noeviction');
  await admin.config('SET', 'maxmemory', '1mb');
  let oom = false;
  for (let i = 0; i < 5000 && !oom; i++) {
    const key = `oom-filler:${i}`;
    try {
      await admin.set(key, 'x'.repeat(4096));
      filler.push(key);
    } catch (err) {
      oom = /OOM/.test((err as Error).message);
      if (!oom) throw err;
    }
  }
  t.true(oom, 'Redis refuses writes');

  for (let i = 1; i <= 3; i++) storeUnavailable(t, await postLogin(gw, `oom-new.${i}`), `login ${i}`);
  t.is((await api(gw, token)).status, 200);
  t.is((await request(gw.url, { path: '/session', headers: bearer(token) })).status, 200);
  t.regex(await scrape(gw.url), /wxgate_logins_total\{result="session_store_unavailable"\} 3/);

  await admin.config('SET', 'maxmemory', '0'); // the operator gives it room
  const after = await postLogin(gw, 'oom-after.1');
  t.is(after.status, 200, 'logins work again once Redis has room');
});

test.serial('Redis refusing our password (WRONGPASS): the gateway runs, /readyz and requests answer 503, the log says why, and it recovers once the password matches', async (t) => {
  const locked = await startRedis();
  const RIGHT = 'the-right-password-0123';
  const WRONG = 'the-wrong-password-4567';
  const admin = new Redis(locked.url);
  await admin.config('SET', 'requirepass', RIGHT);
  t.teardown(async () => {
    admin.disconnect();
    await locked.close();
  });
  const gw = await gateway(t, `redis://:${WRONG}@127.0.0.1:${locked.port}`, { connectTimeout: '300ms' });

  t.is((await request(gw.url, { path: '/healthz' })).status, 200);
  const readyz = await request(gw.url, { path: '/readyz' });
  t.is(readyz.status, 503);
  t.is(readyz.json.error, 'not_ready');
  storeUnavailable(t, await postLogin(gw, 'wrongpass.1'), '/login');
  storeUnavailable(t, await api(gw, newToken({ appid: APPID, openid: 'o-wrongpass' })), 'proxied request with a token');
  const line = gw.logs.find((l) => /WRONGPASS/.test(l));
  t.truthy(line, 'a log line names the refusal');
  const rec = JSON.parse(line ?? '{}') as { level?: number; msg?: string };
  t.regex(rec.msg ?? '', /credentials of session\.redis\.url/, 'and says what to fix');
  t.true(rec.level! >= 40, 'at warn level or above');
  t.is(gw.logs.filter((l) => /WRONGPASS/.test(l)).length, 1, 'once, not once per reconnection attempt');
  t.false(gw.logs.some((l) => l.includes(WRONG)), 'the password itself is never logged');

  await admin.config('SET', 'requirepass', WRONG);
  t.true(await until(() => ready(gw), 10_000), 'ready by itself once Redis accepts the password');
  const token = await login(gw.url, 'wrongpass-after.1');
  t.is((await api(gw, token)).status, 200);
});

test.serial('Redis down at start-up: the gateway starts, /healthz 200, /readyz 503, and it becomes ready by itself when Redis appears', async (t) => {
  const late = await startRedis();
  t.teardown(() => late.close());
  await late.stop();
  const start = Date.now();
  const gw = await gateway(t, late.url, { connectTimeout: '300ms' });
  t.true(Date.now() - start < 3000, `started in ${Date.now() - start} ms`);
  t.is((await request(gw.url, { path: '/healthz' })).status, 200);
  t.is((await request(gw.url, { path: '/readyz' })).status, 503);
  storeUnavailable(t, await postLogin(gw, 'late.1'), '/login');
  t.true(gw.logs.some((l) => l.includes('session store not reachable at start')));

  await late.start();
  t.true(await until(() => ready(gw), 10_000), 'ready without a restart');
  const token = await login(gw.url, 'late.2');
  t.is((await api(gw, token)).status, 200);
});

test.serial('while Redis is down, a burst of calls fails at once and nothing piles up in the client: no offline queue, no retries', async (t) => {
  const gone = await startRedis();
  t.teardown(() => gone.close());
  // a long command timeout: a call that waited for Redis (queued, retried) would take all of it, one that
  // fails at once takes a fraction, however busy the machine is
  const waitMs = 10_000;
  const store = RedisStore.open({ url: gone.url, keyPrefix: 'burst:', connectTimeout: 300, commandTimeout: waitMs });
  t.teardown(() => store.close());
  t.true(await until(() => store.ping().then(() => true, () => false), 5000));
  await gone.stop();
  const client = store.redis as Redis;
  /** ioredis keeps commands for a connection that is not ready here (private; enableOfflineQueue: false keeps it empty) */
  const offlineQueue = () => (client as unknown as { offlineQueue: { length: number } }).offlineQueue.length;
  await until(() => client.status !== 'ready', 2000);

  const hashes = Array.from({ length: 5000 }, () => hashToken(newToken({ appid: APPID, openid: `o-${randomBytes(6).toString('hex')}` })));
  const start = Date.now();
  const results = await Promise.allSettled(hashes.map((h) => store.get(h)));
  const ms = Date.now() - start;
  t.true(results.every((r) => r.status === 'rejected' && r.reason instanceof StoreUnavailableError));
  t.true(ms < waitMs / 2, `5000 calls failed within ${ms} ms, not after the ${waitMs} ms command timeout`);
  t.is(offlineQueue(), 0, 'nothing queued for later');
  t.is(client.commandQueue.length, 0);
  t.is(client.options.enableOfflineQueue, false);
  t.is(client.options.maxRetriesPerRequest, 0);
});

test.serial('while Redis is blackholed, calls waiting for it are dropped after socketTimeout: the queue does not grow for as long as the outage lasts', async (t) => {
  const store = RedisStore.open({ url: redis.url, keyPrefix: 'hole:', connectTimeout: 300, commandTimeout: COMMAND_TIMEOUT, socketTimeout: 600 });
  t.teardown(() => store.close());
  t.true(await until(() => store.ping().then(() => true, () => false), 5000));
  redis.pause();
  t.teardown(() => redis.resume());
  const results = await Promise.allSettled(Array.from({ length: 500 }, () => store.get(hashToken(newToken({ appid: APPID, openid: `o-${randomBytes(6).toString('hex')}` })))));
  t.true(results.every((r) => r.status === 'rejected' && r.reason instanceof StoreUnavailableError));
  t.true(await until(() => store.redis instanceof Redis && store.redis.commandQueue.length === 0, 2000), 'the dead connection and its queue are dropped');
  // still blackholed: new calls fail at once or after commandTimeout, never wait on the old queue
  const start = Date.now();
  await t.throwsAsync(store.get(hashToken(newToken({ appid: APPID, openid: `o-${randomBytes(6).toString('hex')}` }))), { instanceOf: StoreUnavailableError });
  t.true(Date.now() - start < COMMAND_TIMEOUT + 300);
});

test('reconnection waits grow, are capped at about 2 s, and are jittered so replicas do not reconnect in step', (t) => {
  const base = (n: number) => Math.min(50 * 2 ** Math.min(n, 6), 2000);
  const medians: number[] = [];
  for (let n = 1; n <= 12; n++) {
    const samples = Array.from({ length: 400 }, () => backoff(n)).sort((x, y) => x - y);
    t.true(samples[0]! >= Math.floor(base(n) * 0.8) && samples.at(-1)! <= Math.ceil(base(n) * 1.2), `attempt ${n}: ${samples[0]}..${samples.at(-1)}`);
    t.true(samples.at(-1)! - samples[0]! >= base(n) * 0.2, `attempt ${n} is spread, not a fixed delay`);
    medians.push(samples[200]!);
  }
  for (let n = 1; n < 5; n++) t.true(medians[n]! > medians[n - 1]!, `attempt ${n + 1} waits longer than attempt ${n}: ${medians.join(', ')}`);
  t.true(backoff(1000) <= 2400);
  const store = RedisStore.open({ url: 'redis://127.0.0.1:1', keyPrefix: 'x:', connectTimeout: 100, commandTimeout: 100, logger: { warn() {}, info() {} } });
  t.is((store.redis as Redis).options.retryStrategy, backoff, 'the store reconnects with it');
  void store.close();
});

import { randomBytes } from 'node:crypto';
import http from 'node:http';
import test from 'ava';
import { Redis } from 'ioredis';
import { startSimulator } from '../../src/dev/simulator.js';
import { APPID, SECRET, login, startTestGateway, testConfig, type TestGateway } from '../helpers/gateway.js';
import { request } from '../helpers/http.js';
import { waitFor } from '../helpers/wait.js';
import { metricValue, scrape } from '../helpers/metrics.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';

/**
 * A flood of random well-formed tokens against a gateway on a real redis-server: unknown tokens are
 * remembered in their own small cache for session.cache.negativeTtl, so a repeated one costs no Redis
 * read, and none of them takes the place of a live session in the LRU.
 */
let sim: Awaited<ReturnType<typeof startSimulator>>;
let redis: RedisServer;
let admin: Redis;
let up: Upstream;
let gw: TestGateway;
let live: string[];

const LIVE = 20;
const agent = new http.Agent({ keepAlive: true, maxSockets: 100 });
const randomToken = () => randomBytes(44).toString('base64url'); // well-formed (59 characters), unknown
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

function sessionConfig(negativeTtl: string) {
  // a small LRU: 20 live sessions leave 30 places that a flood must not take
  return { store: 'redis', redis: { url: redis.url }, cache: { max: 50, ttl: '60s', negativeTtl } };
}

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
  redis = await startRedis();
  admin = new Redis(redis.url);
  up = await startUpstream();
  gw = await startTestGateway(testConfig({ apiBase: sim.url, session: sessionConfig('10s'), routes: [{ path: '/api', upstream: up.url }] }), { logLevel: 'info' });
  live = [];
  for (let i = 0; i < LIVE; i++) live.push(await login(gw.url, `flood-live-${i}.1`));
});
test.after.always(async () => {
  agent.destroy();
  await gw?.close();
  admin?.disconnect();
  await up?.close();
  await redis?.close();
  await sim?.close();
});

/** Session reads Redis has executed so far (HMGET, one per store.get: INFO commandstats). */
async function redisGets(): Promise<number> {
  const info = await admin.info('commandstats');
  return Number(/^cmdstat_hmget:calls=(\d+)/m.exec(info)?.[1] ?? 0);
}

/** Sends every token to an auth-required route, `concurrency` at a time; returns the statuses seen. */
async function flood(base: string, tokens: string[], concurrency = 100): Promise<Map<number, number>> {
  const statuses = new Map<number, number>();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < tokens.length) {
        const token = tokens[next++]!;
        const res = await request(base, { path: '/api/flood', headers: bearer(token), agent });
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      }
    }),
  );
  return statuses;
}

/** wxgate_session_lookups_total by source, and the sizes of the two session caches. */
async function lookups(base: string) {
  const text = await scrape(base);
  const lookup = (source: string) => metricValue(text, 'wxgate_session_lookups_total', { source });
  return {
    lru: lookup('lru'),
    store: lookup('store'),
    negative: lookup('negative'),
    miss: lookup('miss'),
    live: metricValue(text, 'wxgate_session_cache_entries', { cache: 'live' }),
    negative_entries: metricValue(text, 'wxgate_session_cache_entries', { cache: 'negative' }),
  };
}

test.serial('5,000 random tokens sent twice cost about 5,000 Redis reads, not 10,000, and evict no live session', async (t) => {
  const tokens = Array.from({ length: 5000 }, randomToken);
  const before = await lookups(gw.url);
  t.is(before.live, LIVE, 'the live sessions are cached');
  const gets0 = await redisGets();

  t.deepEqual([...(await flood(gw.url, tokens))], [[401, 5000]]);
  const gets1 = await redisGets();
  t.true(gets1 - gets0 >= 5000 && gets1 - gets0 < 5050, `first round: ${gets1 - gets0} HMGETs`);

  t.deepEqual([...(await flood(gw.url, tokens))], [[401, 5000]]);
  const gets2 = await redisGets();
  t.true(gets2 - gets1 < 50, `second round: ${gets2 - gets1} HMGETs (answered from the negative cache)`);

  const after = await lookups(gw.url);
  t.is(after.negative - before.negative, 5000, 'lookups{source="negative"} counts the second round');
  t.is(after.miss - before.miss, 5000, 'lookups{source="miss"} the first');
  t.is(after.live, LIVE, 'the LRU holds the live sessions and nothing else');
  t.is(after.negative_entries, 5000);

  // the live sessions answer from the LRU, none from Redis: the flood took none of their places
  for (const token of live) t.is((await request(gw.url, { path: '/api/live', headers: bearer(token), agent })).status, 200);
  const end = await lookups(gw.url);
  t.is(end.lru - after.lru, LIVE);
  t.is(end.store - after.store, 0);
  t.is(await redisGets(), gets2, 'no Redis read for them');
});

test.serial('a revoked token is refused at once and stays refused; the user logs in again normally', async (t) => {
  const token = await login(gw.url, 'flood-revoked.1');
  t.is((await request(gw.url, { path: '/api/x', headers: bearer(token) })).status, 200);
  const out = await request(gw.url, { method: 'POST', path: '/logout', headers: bearer(token) });
  t.is(out.status, 204);
  const before = await lookups(gw.url);
  t.is((await request(gw.url, { path: '/api/x', headers: bearer(token) })).status, 401, 'at once (asked the store)');
  t.is((await request(gw.url, { path: '/api/x', headers: bearer(token) })).status, 401, 'and again (negative cache)');
  const after = await lookups(gw.url);
  t.is(after.miss - before.miss, 1);
  t.is(after.negative - before.negative, 1);
  const again = await login(gw.url, 'flood-revoked.2');
  t.is((await request(gw.url, { path: '/api/x', headers: bearer(again) })).status, 200);
});

test.serial('an unknown token is asked about again once session.cache.negativeTtl is over', async (t) => {
  const short = await startTestGateway(testConfig({ apiBase: sim.url, session: sessionConfig('300ms'), routes: [{ path: '/api', upstream: up.url }] }));
  t.teardown(() => short.close());
  const token = randomToken();
  const gets0 = await redisGets();
  t.is((await request(short.url, { path: '/api/x', headers: bearer(token) })).status, 401);
  t.is((await request(short.url, { path: '/api/x', headers: bearer(token) })).status, 401);
  t.is((await redisGets()) - gets0, 1, 'one read for two requests');
  const started = Date.now();
  const readAgain = async () => {
    t.is((await request(short.url, { path: '/api/x', headers: bearer(token) })).status, 401);
    return (await redisGets()) > gets0 + 1;
  };
  await waitFor(readAgain, { interval: 50, message: 'read again after the negative entry lapsed' });
  t.is((await redisGets()) - gets0, 2, 'read again once, after the negative entry lapsed');
  t.true(Date.now() - started >= 200, `not before its ttl (${Date.now() - started} ms)`);
});

test.serial('session.cache.negativeTtl 0 turns the negative cache off; negativeMax bounds it', async (t) => {
  const off = await startTestGateway(testConfig({ apiBase: sim.url, session: sessionConfig('0s'), routes: [{ path: '/api', upstream: up.url }] }));
  t.teardown(() => off.close());
  const token = randomToken();
  const gets0 = await redisGets();
  for (let i = 0; i < 3; i++) t.is((await request(off.url, { path: '/api/x', headers: bearer(token) })).status, 401);
  t.is((await redisGets()) - gets0, 3);

  const small = await startTestGateway(
    testConfig({ apiBase: sim.url, session: { ...sessionConfig('10s'), cache: { max: 50, negativeMax: 100 } }, routes: [{ path: '/api', upstream: up.url }] }),
  );
  t.teardown(() => small.close());
  await flood(small.url, Array.from({ length: 300 }, randomToken), 20);
  t.is((await lookups(small.url)).negative_entries, 100);
});

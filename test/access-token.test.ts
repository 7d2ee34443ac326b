import http from 'node:http';
import type { AddressInfo } from 'node:net';
import test from 'ava';
import { Redis } from 'ioredis';
import { buildConfig, ConfigError } from '../src/config/load.js';
import { RedisConnection } from '../src/redis/connection.js';
import { RedisTokenStore } from '../src/wechat/token-store.js';
import { startSimulator } from '../src/dev/simulator.js';
import { APPID, SECRET, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { request } from './helpers/http.js';
import { metricValue, scrape } from './helpers/metrics.js';
import { startRedis, type RedisServer } from './helpers/redis.js';

/** The access_token service against a real redis-server and the simulator, through the admin API. */
const ADMIN_TOKEN = 'admin-token-0123456789abcdef';

let redis: RedisServer;
let client: Redis;
let prefixes = 0;

test.before(async () => {
  redis = await startRedis();
  client = new Redis(redis.url, { lazyConnect: true });
  await client.connect();
});
test.after.always(async () => {
  client?.disconnect();
  await redis?.close();
});

type Sim = Awaited<ReturnType<typeof startSimulator>>;

async function sim(tokenExpiresIn?: number): Promise<Sim> {
  return startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET }, tokenExpiresIn });
}

async function stats(s: Sim): Promise<{ stable_token: number; stable_token_forced: number; token: number }> {
  return (await fetch(`${s.url}/dev/token-stats`)).json() as never;
}

/** A gateway on the shared redis-server, under its own key prefix unless given one. */
function gateway(s: Sim, opts: { prefix?: string; apps?: object[]; store?: 'redis' | 'memory' } = {}): Promise<TestGateway> {
  const prefix = opts.prefix ?? `t${++prefixes}:`;
  return startTestGateway(
    testConfig({
      apiBase: s.url,
      wechat: { apiBase: s.url, timeout: '1s', apps: opts.apps ?? [{ appid: APPID, secret: SECRET }] },
      session: opts.store === 'memory' ? { store: 'memory' } : { store: 'redis', redis: { url: redis.url, keyPrefix: prefix } },
      admin: { port: 0, token: ADMIN_TOKEN },
    }),
  );
}

async function accessToken(gw: TestGateway, appid = APPID, auth = `Bearer ${ADMIN_TOKEN}`) {
  return request(gw.adminUrl!, { path: `/apps/${appid}/access_token`, headers: auth ? { authorization: auth } : {} });
}

function noTokenLogged(t: { false(v: boolean, m?: string): void }, gw: TestGateway, ...tokens: string[]) {
  for (const line of gw.logs) for (const tok of tokens) t.false(line.includes(tok), `token in log line ${line}`);
  for (const line of gw.logs) t.false(line.includes(SECRET), 'secret in the log');
}

test('two replicas on a cold Redis make one stable_token fetch between them; a restart reuses it', async (t) => {
  const s = await sim();
  const prefix = `t${++prefixes}:`;
  const a = await gateway(s, { prefix });
  const b = await gateway(s, { prefix });
  let c: TestGateway | undefined;
  try {
    const answers = await Promise.all([...Array(6)].flatMap(() => [accessToken(a), accessToken(b)]));
    for (const r of answers) t.is(r.status, 200, r.text);
    const token = answers[0]!.json.access_token as string;
    t.truthy(token);
    t.true(answers.every((r) => r.json.access_token === token), 'every replica hands out the same token');
    t.true(answers[0]!.json.expires_in > 7000 && answers[0]!.json.expires_in <= 7200);
    t.is(answers[0]!.headers['cache-control'], 'no-store');
    t.is((await stats(s)).stable_token, 1);
    const fetched = [a, b].map(async (g) => metricValue(await scrape(g.url), 'wxgate_wechat_token_refreshes_total', { appid: APPID, outcome: 'ok' }));
    t.is((await Promise.all(fetched)).reduce((x, y) => x + y, 0), 1);

    // restart loop: the new process finds the token in Redis and fetches nothing
    await a.close();
    c = await gateway(s, { prefix });
    const again = await accessToken(c);
    t.is(again.json.access_token, token);
    t.is((await stats(s)).stable_token, 1);
    const text = await scrape(c.url);
    t.is(metricValue(text, 'wxgate_wechat_token_refreshes_total', { appid: APPID, outcome: 'ok' }), 0);
    t.true(metricValue(text, 'wxgate_wechat_token_age_seconds', { appid: APPID }) >= 0);
    t.regex(text, /wxgate_wechat_token_age_seconds\{appid="wx0123456789abcdef"\} /);
    noTokenLogged(t, b, token);
    noTokenLogged(t, c, token);
  } finally {
    await a.close();
    await b.close();
    await c?.close();
    await s.close();
  }
});

test('the admin endpoint needs the admin token; unknown apps are 404', async (t) => {
  const s = await sim();
  const gw = await gateway(s);
  try {
    const none = await accessToken(gw, APPID, '');
    t.is(none.status, 401);
    t.is(none.json.error, 'unauthorized');
    t.false(none.text.includes('access_token"'));
    t.is((await accessToken(gw, APPID, 'Bearer wrong-token-0123456789abcdef')).status, 401);
    t.is((await stats(s)).stable_token, 0, 'nothing fetched for an unauthenticated call');
    const unknown = await accessToken(gw, 'wxffffffffffffffff');
    t.is(unknown.status, 404);
    t.is(unknown.json.error, 'not_found');
    t.is((await accessToken(gw)).status, 200);
  } finally {
    await gw.close();
    await s.close();
  }
});

test('a token near its end is refreshed in the background while readers keep the valid one', async (t) => {
  const s = await sim(4); // refresh once less than 2 s of 4 are left
  const prefix = `t${++prefixes}:`;
  const gw = await gateway(s, { prefix });
  try {
    const first = (await accessToken(gw)).json;
    await new Promise((r) => setTimeout(r, 2200));
    const started = Date.now();
    const during = (await accessToken(gw)).json;
    t.true(Date.now() - started < 500, 'the reader did not wait for the refresh');
    t.is(during.access_token, first.access_token, 'the still-valid token is answered meanwhile');
    let next = during;
    for (let i = 0; i < 40 && next.access_token === first.access_token; i++) {
      await new Promise((r) => setTimeout(r, 25));
      next = (await accessToken(gw)).json;
    }
    t.not(next.access_token, first.access_token);
    t.true(next.expires_in >= 3);
    t.is((await stats(s)).stable_token, 2);
    // the refreshed token is in Redis for the other replicas
    const other = await gateway(s, { prefix });
    t.is((await accessToken(other)).json.access_token, next.access_token);
    await other.close();
    t.is((await stats(s)).stable_token, 2);
  } finally {
    await gw.close();
    await s.close();
  }
});

test('Redis keeps one token per app; a token is deleted only while it is still the one that failed', async (t) => {
  const conn = new RedisConnection({ url: redis.url, keyPrefix: `t${++prefixes}:`, connectTimeout: 1000, commandTimeout: 1000 });
  t.teardown(() => conn.close());
  t.is(await conn.waitReady(2000), undefined);
  const store = new RedisTokenStore(conn);
  const at = Date.now();
  await store.put(APPID, { token: 'T2', expiresAt: at + 60_000, fetchedAt: at });
  t.false(await store.invalidate(APPID, 'T1'), 'an older token that failed leaves the newer one alone');
  t.is((await store.get(APPID))?.token, 'T2');
  t.true(await store.invalidate(APPID, 'T2'));
  t.is(await store.get(APPID), undefined);
  t.false(await store.invalidate(APPID, 'T2'));

  t.true(await store.lock(APPID, 'a', 5000));
  t.false(await store.lock(APPID, 'b', 5000), 'one replica at a time');
  await store.unlock(APPID, 'b');
  t.false(await store.lock(APPID, 'b', 5000), 'only the owner releases');
  await store.unlock(APPID, 'a');
  t.true(await store.lock(APPID, 'b', 50));
  await new Promise((r) => setTimeout(r, 80));
  t.true(await store.lock(APPID, 'c', 50), 'the lock expires by itself');

  t.true(await store.forceSlot(APPID, 30_000));
  t.false(await store.forceSlot(APPID, 30_000));
});

test('tokenSource: token fetches with GET cgi-bin/token', async (t) => {
  const s = await sim();
  const gw = await gateway(s, { apps: [{ appid: APPID, secret: SECRET, tokenSource: 'token' }] });
  try {
    const [x, y] = await Promise.all([accessToken(gw), accessToken(gw)]);
    t.is(x.status, 200);
    t.is(x.json.access_token, y.json.access_token);
    t.deepEqual(await stats(s), { stable_token: 0, stable_token_forced: 0, token: 1 });
  } finally {
    await gw.close();
    await s.close();
  }
});

test('tokenSource: external reads a Redis key or a URL and never asks WeChat', async (t) => {
  const s = await sim();
  await client.set('other-system:wx-token', 'EXTERNAL_REDIS_TOKEN_0123456789', 'PX', 60_000);
  const owner = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ access_token: 'EXTERNAL_URL_TOKEN_0123456789', expires_in: 100 }));
  });
  await new Promise<void>((r) => owner.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(owner.address() as AddressInfo).port}/token`;
  const B = 'wxbbbbbbbbbbbbbbbb';
  const gw = await gateway(s, {
    apps: [
      { appid: APPID, secret: SECRET, tokenSource: 'external', externalToken: { redisKey: 'other-system:wx-token' } },
      { appid: B, secret: 'secret-b', tokenSource: 'external', externalToken: { url } },
    ],
  });
  try {
    const fromRedis = await accessToken(gw);
    t.is(fromRedis.json.access_token, 'EXTERNAL_REDIS_TOKEN_0123456789');
    t.true(fromRedis.json.expires_in > 50 && fromRedis.json.expires_in <= 60);
    const fromUrl = await accessToken(gw, B);
    t.is(fromUrl.json.access_token, 'EXTERNAL_URL_TOKEN_0123456789');
    t.true(fromUrl.json.expires_in > 90 && fromUrl.json.expires_in <= 100);
    await client.del('other-system:wx-token');
    // still cached in the process; a fresh replica finds nothing and says so
    const fresh = await gateway(s, { apps: [{ appid: APPID, secret: SECRET, tokenSource: 'external', externalToken: { redisKey: 'other-system:wx-token' } }] });
    const missing = await accessToken(fresh);
    await fresh.close();
    t.is(missing.status, 503);
    t.is(missing.json.error, 'wechat_unavailable');
    t.deepEqual(await stats(s), { stable_token: 0, stable_token_forced: 0, token: 0 });
    noTokenLogged(t, gw, 'EXTERNAL_REDIS_TOKEN_0123456789', 'EXTERNAL_URL_TOKEN_0123456789');
  } finally {
    await gw.close();
    await s.close();
    await new Promise((r) => owner.close(r));
  }
});

test('config: external needs externalToken (exactly one of redisKey, url); redisKey needs the redis store', (t) => {
  const cfg = (app: object, store = 'redis') =>
    testConfig({ apiBase: 'http://127.0.0.1:1', wechat: { apps: [{ appid: APPID, secret: SECRET, ...app }] }, session: { store } });
  const problems = (app: object, store?: string) => {
    const err = t.throws(() => buildConfig(cfg(app, store), 'test'), { instanceOf: ConfigError });
    return err!.message;
  };
  t.regex(problems({ tokenSource: 'external' }), /wechat\.apps\[0\]\.externalToken: is required/);
  t.regex(problems({ tokenSource: 'external', externalToken: {} }), /exactly one of redisKey and url/);
  t.regex(problems({ tokenSource: 'external', externalToken: { redisKey: 'k', url: 'http://x.example/' } }), /exactly one/);
  t.regex(problems({ tokenSource: 'external', externalToken: { redisKey: 'k' } }, 'memory'), /redisKey: needs session\.store: redis/);
  t.regex(problems({ externalToken: { url: 'http://x.example/' } }), /needs tokenSource: external/);
  t.regex(problems({ tokenSource: 'client' }), /tokenSource/);
  const ok = buildConfig(cfg({}), 'test');
  t.is(ok.wechat.apps[0]!.tokenSource, 'stable_token');
  t.is(ok.endpoints.phone, '/wx/phone');
});

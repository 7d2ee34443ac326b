import test, { type ExecutionContext } from 'ava';
import { startSimulator } from '../src/dev/simulator.js';
import { APPID, SECRET, login, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { request } from './helpers/http.js';
import { startRedis, type RedisServer } from './helpers/redis.js';
import { startUpstream, type Upstream } from './helpers/upstream.js';
import { fakeDate } from './helpers/clock.js';
import { sleep } from './helpers/wait.js';

/**
 * Idle and absolute expiry with short durations, against both stores. The memory store runs on a fake
 * date (moved at once; its tests are serial, as the whole process sees it); a Redis store's deadlines
 * are Redis's own TTLs, which no fake clock moves: real time there.
 */
let sim: Awaited<ReturnType<typeof startSimulator>>;
let redis: RedisServer;
let up: Upstream;

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
  redis = await startRedis();
  up = await startUpstream();
});
test.after.always(async () => {
  await up?.close();
  await redis?.close();
  await sim?.close();
});

async function gateway(store: 'memory' | 'redis', session: object): Promise<TestGateway> {
  return startTestGateway(
    testConfig({
      apiBase: sim.url,
      routes: [{ path: '/api', upstream: up.url }],
      session: { store, ...(store === 'redis' ? { redis: { url: redis.url, keyPrefix: `exp${Math.random().toString(36).slice(2, 8)}:` } } : {}), ...session },
    }),
  );
}

/** How the test lets time pass on `store`; install before the gateway starts. */
function timeOn(t: ExecutionContext, store: 'memory' | 'redis'): (ms: number) => Promise<void> {
  if (store === 'redis') return sleep;
  const clock = fakeDate();
  t.teardown(() => clock.restore());
  return async (ms) => clock.pass(ms);
}

const get = (gw: TestGateway, token: string) => request(gw.url, { path: '/api/x', headers: { authorization: `Bearer ${token}` } });

for (const store of ['memory', 'redis'] as const) {
  const register = store === 'memory' ? test.serial : test;
  register(`${store}: activity keeps a session alive past its idle ttl; idleness ends it`, async (t) => {
    const pass = timeOn(t, store);
    const gw = await gateway(store, { ttl: '1s', refreshInterval: '200ms', cache: { ttl: '300ms' } });
    t.teardown(() => gw.close());
    const token = await login(gw.url, `idle-${store}.1`);
    const start = Date.now();
    while (Date.now() - start < 2200) {
      t.is((await get(gw, token)).status, 200, `still alive after ${Date.now() - start} ms of activity`);
      await pass(250);
    }
    const s = await request(gw.url, { path: '/session', headers: { authorization: `Bearer ${token}` } });
    t.is(s.json.expires_in, 1, 'expires_in tells the idle truth');
    await pass(1400);
    t.is((await get(gw, token)).status, 401, 'idle longer than ttl: gone');
  });

  register(`${store}: the absolute lifetime ends a session however active`, async (t) => {
    const pass = timeOn(t, store);
    const gw = await gateway(store, { ttl: '10s', maxAge: '1500ms', refreshInterval: '100ms', cache: { ttl: '200ms' } });
    t.teardown(() => gw.close());
    const res = await request(gw.url, { method: 'POST', path: '/login', headers: { 'content-type': 'application/json' }, body: `{"code":"abs-${store}.1"}` });
    t.true(res.json.expires_in >= 1 && res.json.expires_in <= 2, `expires_in ${res.json.expires_in} is capped by maxAge (1.5 s)`);
    const token = res.json.token as string;
    const start = Date.now();
    let status = 200;
    while (status === 200 && Date.now() - start < 4000) {
      status = (await get(gw, token)).status;
      if (status === 200) await pass(100);
    }
    const lived = Date.now() - start;
    t.is(status, 401);
    // not before maxAge (1.5 s, less the expires_in rounding); after it, only the polling's delay
    t.true(lived >= 1300 && lived < 3000, `lived ${lived} ms`);
  });
}

import { randomBytes } from 'node:crypto';
import http from 'node:http';
import test from 'ava';
import { startSimulator } from '../../src/dev/simulator.js';
import { APPID, SECRET, login, startTestGateway, testConfig, type TestGateway } from '../helpers/gateway.js';
import { request, type Reply } from '../helpers/http.js';
import { metricValue, scrape } from '../helpers/metrics.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';

/**
 * What a client cannot grow: 100,000 requests with random paths and invalid tokens leave the number of
 * metric series and the session LRU as they were after the first 1,000, and a 30 KB request target
 * costs about what a short one does (no regular expression that backtracks on it).
 */
let sim: Awaited<ReturnType<typeof startSimulator>>;
let up: Upstream;
let gw: TestGateway;
let live: string[];

const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
const rand = (bytes = 6) => randomBytes(bytes).toString('base64url');
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const METHODS = ['GET', 'POST', 'DELETE', 'PATCH'];

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
  up = await startUpstream();
  gw = await startTestGateway(
    testConfig({
      apiBase: sim.url,
      server: { host: '127.0.0.1', port: 0, maxHeaderSize: '64kb' },
      session: { store: 'memory', cache: { max: 1000, negativeMax: 500 } },
      routes: [
        { path: '/api', upstream: up.url },
        { path: '/pub', upstream: up.url, auth: 'none' },
      ],
    }),
    { logLevel: 'info' },
  );
  live = [];
  for (let i = 0; i < 5; i++) live.push(await login(gw.url, `flat-live-${i}.1`));
});
test.after.always(async () => {
  agent.destroy();
  await gw?.close();
  await up?.close();
  await sim?.close();
});

/**
 * Request number i: its kind and method cycle (so the first 1,000 requests already show every route,
 * method and status there is), everything else in it is random.
 */
function nth(i: number): { method: string; path: string; headers: Record<string, string> } {
  const method = METHODS[Math.floor(i / 7) % METHODS.length]!;
  switch (i % 7) {
    case 0:
      return { method, path: `/${rand()}/${rand(3)}`, headers: {} }; // no route: 404
    case 1:
      return { method, path: `/api/${rand()}`, headers: bearer(rand(44)) }; // unknown token: 401
    case 2:
      return { method, path: `/API/${rand()}?${rand()}=${rand()}`, headers: {} }; // no token: 401
    case 3:
      return { method, path: `/api/${rand()}/..%2f${rand()}`, headers: {} }; // refused path: 400
    case 4:
      return { method, path: `/api/${rand()}`, headers: { authorization: `Bearer ${rand(20)}` } }; // malformed token: 401
    case 5:
      return { method, path: `/${rand(2)}/%${rand(1)}`, headers: {} }; // malformed escape (or no route)
    default:
      // one in ten of these is proxied (a live session, or the public route): 200
      if (Math.floor(i / 7) % 10 === 0) return { method, path: Math.floor(i / 70) % 2 ? `/pub/${rand()}` : `/api/${rand()}`, headers: bearer(live[i % live.length]!) };
      return { method, path: `/api/${rand()}`, headers: { ...bearer(rand(44)), 'x-openid': rand() } }; // unknown token, spoofed identity: 401
  }
}

async function send(from: number, to: number, concurrency = 32): Promise<Map<number, number>> {
  const statuses = new Map<number, number>();
  let next = from;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < to) {
        const res = await request(gw.url, { ...nth(next++), agent });
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      }
    }),
  );
  return statuses;
}

/** The gateway's own series (prom-client's process and nodejs series come and go with the runtime's state). */
function ownSeries(text: string): string[] {
  return text.split('\n').filter((l) => l.startsWith('wxgate_') && !/^wxgate_(process|nodejs)_/.test(l)).map((l) => l.slice(0, l.lastIndexOf(' ')));
}

test.serial('100,000 random paths and invalid tokens: no new metric series, no growth of the session LRU', async (t) => {
  t.timeout(180_000); // 100,000 sequential requests: ~15 s on a quiet machine, several times that on a busy shared one
  await scrape(gw.url); // the scrape's own series (route="metrics") exist from here on
  const first = await send(0, 1000);
  t.deepEqual([...first.keys()].sort(), [200, 400, 401, 404], 'every kind of answer is among the first 1,000');
  const text1 = await scrape(gw.url);
  const series1 = ownSeries(text1);
  const lru1 = metricValue(text1, 'wxgate_session_cache_entries', { cache: 'live' });
  t.is(lru1, live.length);

  const rest = await send(1000, 100_000);
  t.false(rest.has(500), 'no 500');
  const text2 = await scrape(gw.url);
  const series2 = ownSeries(text2);
  t.deepEqual(
    series2.filter((s) => !series1.includes(s)),
    [],
    'no series appeared after the first 1,000 requests',
  );
  t.is(series2.length, series1.length);
  t.is(metricValue(text2, 'wxgate_session_cache_entries', { cache: 'live' }), lru1, 'the LRU holds the live sessions only');
  t.true(metricValue(text2, 'wxgate_session_cache_entries', { cache: 'negative' }) <= 500, 'the negative cache stays within its max');
  t.false(text2.includes('/api/'), 'no raw path in any label');
  t.is(metricValue(text2, 'wxgate_http_requests_total', { route: 'unmatched', method: 'GET', status: '404' }) > 0, true);
});

/** Mean ms per request for `path`, over `n` sequential requests on a kept-alive connection. */
async function timePath(path: string, n: number, headers: Record<string, string> = {}): Promise<{ ms: number; last: Reply }> {
  let last!: Reply;
  const started = process.hrtime.bigint();
  for (let i = 0; i < n; i++) last = await request(gw.url, { path, headers, agent });
  return { ms: Number(process.hrtime.bigint() - started) / 1e6 / n, last };
}

test.serial('a 30 KB request target costs about what a short one does, whatever its shape', async (t) => {
  const K = 30 * 1024;
  const shapes: Array<[string, (len: number) => string, number]> = [
    ['plain letters, no token', (n) => `/api/${'a'.repeat(n)}`, 401],
    ['many segments, no route', (n) => `/${'ab/'.repeat(n / 3)}x`, 404],
    ['percent-encoded letters', (n) => `/api/${'%41'.repeat(n / 3)}`, 401],
    ['dot segments after many slashes', (n) => `/api${'/.a'.repeat(n / 3)}/.`, 400],
    ['a malformed escape at the very end', (n) => `/api/${'%41'.repeat(n / 3)}%`, 400],
    ['encoded slash at the end', (n) => `/api/${'a'.repeat(n)}%2f`, 400],
    ['long query', (n) => `/api/x?${'a=b&'.repeat(n / 4)}`, 401],
    ['semicolons in escapes', (n) => `/api/${'%3b'.repeat(n / 3)}`, 400],
  ];
  const REPS = 150;
  // warm up both sizes of every shape first (JIT, connections)
  for (const [, make] of shapes) {
    await timePath(make(30), 20);
    await timePath(make(K), 20);
  }
  for (const [name, make, status] of shapes) {
    const long = make(K);
    t.true(long.length >= K - 10, `${name}: ${long.length} bytes`);
    const short = await timePath(make(30), REPS);
    const big = await timePath(long, REPS);
    t.is(big.last.status, status, `${name}: status`);
    t.is(short.last.status, status, `${name}: status of the short one`);
    t.is(typeof big.last.json?.error, 'string', `${name}: a JSON error`);
    t.true(big.ms < short.ms * 20, `${name}: ${big.ms.toFixed(3)} ms vs ${short.ms.toFixed(3)} ms per request`);
    t.log(`${name}: long ${big.ms.toFixed(3)} ms, short ${short.ms.toFixed(3)} ms`);
  }
});

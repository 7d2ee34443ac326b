import http from 'node:http';
import test from 'ava';
import { buildConfig, ConfigError } from '../src/config/load.js';
import { RouteTargets, stripSegments } from '../src/proxy/upstreams.js';
import { startSimulator } from '../src/dev/simulator.js';
import { APPID, SECRET, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { request } from './helpers/http.js';
import { metricValue, scrape } from './helpers/metrics.js';
import { freePort } from './helpers/ports.js';
import { startUpstream, type Upstream } from './helpers/upstream.js';

/**
 * routes[].upstream as a list of targets: round-robin, passive health (routes[].failTimeout), a
 * bodiless request refused by its target sent once to the next one; routes[].stripPrefix and
 * routes[].headers. A real gateway in this process, real upstreams on loopback.
 */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const FAIL_TIMEOUT = 600;

let sim: Awaited<ReturnType<typeof startSimulator>>;
let ups: Upstream[];
let gw: TestGateway;
/** ports nothing listens on (yet) */
let deadA: number;
let deadB: number;
let revived: http.Server | undefined;
const revivedSeen: string[] = [];

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
  ups = await Promise.all([startUpstream(), startUpstream(), startUpstream()]);
  deadA = await freePort();
  deadB = await freePort();
  const [a, b, c] = ups.map((u) => u.url) as [string, string, string];
  gw = await startTestGateway(
    testConfig({
      apiBase: sim.url,
      routes: [
        { name: 'rr', path: '/rr', upstream: [a, b, c], auth: 'none' },
        { name: 'flaky', path: '/flaky', upstream: [a, `http://127.0.0.1:${deadA}`, b], auth: 'none', failTimeout: `${FAIL_TIMEOUT}ms` },
        { name: 'alldown', path: '/alldown', upstream: [`http://127.0.0.1:${deadB}`, 'http://127.0.0.1:1'], auth: 'none' },
        { name: 'bodies', path: '/bodies', upstream: [`http://127.0.0.1:${deadB}`, a], auth: 'none' },
        { name: 'bodiless', path: '/bodiless', upstream: [`http://127.0.0.1:${deadB}`, a], auth: 'none' },
        { name: 'strip', path: '/api/v1', upstream: c, auth: 'none', stripPrefix: true },
        { name: 'keep', path: '/api/v2', upstream: c, auth: 'none' },
        { name: 'hdrs', path: '/hdrs', upstream: c, auth: 'none', headers: { 'X-Tenant': 'acme', 'x-service-key': 'k-123', 'X-Build': 42 } },
      ],
    }),
  );
});
test.after.always(async () => {
  await gw?.close();
  for (const u of ups ?? []) await u.close();
  await new Promise((r) => (revived ? revived.close(r) : r(undefined)));
  await sim?.close();
});

/** Which of the three upstreams saw the request with this marker (0, 1, 2; -1: none). */
const whoSaw = (marker: string) => ups.findIndex((u) => u.seen.some((s) => s.url.includes(marker)));

test.serial('round-robin over three targets: each gets every third request, in turn', async (t) => {
  const order: number[] = [];
  for (let i = 0; i < 9; i++) {
    const res = await request(gw.url, { path: `/rr/x?m=rr-${i}` });
    t.is(res.status, 200);
    order.push(whoSaw(`m=rr-${i}`));
  }
  t.deepEqual(order.slice(3), [...order.slice(0, 3), ...order.slice(0, 3)], `in turn: ${order}`);
  t.deepEqual([...order.slice(0, 3)].sort(), [0, 1, 2], `all three: ${order}`);
  t.is(ups[0]!.seen.filter((s) => s.url.includes('m=rr-')).length, 3);
});

test.serial('a dead target: the refused request goes to the next one, the target is skipped for failTimeout, then tried again', async (t) => {
  const target = `127.0.0.1:${deadA}`;
  const retries = () => scrape(gw.url).then((m) => metricValue(m, 'wxgate_upstream_retries_total', { route: 'flaky' }));
  t.is(metricValue(await scrape(gw.url), 'wxgate_upstream_target_up', { route: 'flaky', target }), 1, 'listed before any request, up');

  // three in turn: a, the dead one (refused, sent on to b), b
  const statuses: number[] = [];
  for (let i = 0; i < 3; i++) statuses.push((await request(gw.url, { path: `/flaky/get?m=fl1-${i}` })).status);
  t.deepEqual(statuses, [200, 200, 200], 'the client never sees the dead target');
  t.is(await retries(), 1, 'one request was sent on');
  const m = await scrape(gw.url);
  t.is(metricValue(m, 'wxgate_upstream_target_up', { route: 'flaky', target }), 0, 'the dead target is shown skipped');
  t.is(metricValue(m, 'wxgate_upstream_target_up', { route: 'flaky', target: `127.0.0.1:${ups[0]!.port}` }), 1);
  t.true(gw.logs.some((l) => l.includes('upstream target failed') && l.includes(target)), 'logged once');

  // while skipped: no request is tried on it (no more retries), a and b share the load
  for (let i = 0; i < 6; i++) t.is((await request(gw.url, { path: `/flaky/get?m=fl2-${i}` })).status, 200);
  t.is(await retries(), 1, 'the skipped target was not tried');
  const shares = [0, 1].map((u) => ups[u]!.seen.filter((s) => s.url.includes('m=fl2-')).length);
  t.deepEqual(shares, [3, 3], 'the two live targets take turns');

  // it comes back: after failTimeout it is tried again and takes its turn
  revived = http.createServer((req, res) => {
    revivedSeen.push(req.url!);
    res.end('revived');
  });
  await new Promise<void>((r) => revived!.listen(deadA, '127.0.0.1', r));
  await sleep(FAIL_TIMEOUT + 100); // real time: the target is tried again only once failTimeout has passed
  for (let i = 0; i < 3; i++) t.is((await request(gw.url, { path: `/flaky/get?m=fl3-${i}` })).status, 200);
  t.is(revivedSeen.filter((u) => u.includes('m=fl3-')).length, 1, 'the revived target got its turn');
  t.is(metricValue(await scrape(gw.url), 'wxgate_upstream_target_up', { route: 'flaky', target }), 1);
});

test.serial('every target down: 502 upstream_unavailable, after one attempt on the next target', async (t) => {
  const before = metricValue(await scrape(gw.url), 'wxgate_upstream_retries_total', { route: 'alldown' });
  const res = await request(gw.url, { path: '/alldown/x' });
  t.is(res.status, 502);
  t.deepEqual(res.json, { error: 'upstream_unavailable', message: 'The upstream service could not be reached.' });
  const m = await scrape(gw.url);
  t.is(metricValue(m, 'wxgate_upstream_retries_total', { route: 'alldown' }) - before, 1, 'sent on once, not more');
  t.is(metricValue(m, 'wxgate_upstream_errors_total', { route: 'alldown', kind: 'refused' }), 1);
  // both skipped now: tried anyway (there is nothing else), still a clean 502
  const again = await request(gw.url, { path: '/alldown/y' });
  t.is(again.status, 502);
  t.is(metricValue(await scrape(gw.url), 'wxgate_upstream_target_up', { route: 'alldown', target: '127.0.0.1:1' }), 0);
});

test.serial('a request with a body is not sent on after a refusal (it is answered 502); a bodiless POST is', async (t) => {
  // targets in turn: dead, a, dead, a, ...; failTimeout (10 s) skips the dead one after its first refusal
  const withBody = await request(gw.url, { method: 'POST', path: '/bodies/p?m=body-1', headers: { 'content-type': 'text/plain' }, body: 'payload' });
  t.is(withBody.status, 502, 'refused with a body: not resent');
  t.is(whoSaw('m=body-1'), -1);
  const next = await request(gw.url, { method: 'POST', path: '/bodies/p?m=body-2', headers: { 'content-type': 'text/plain' }, body: 'payload' });
  t.is(next.status, 200, 'the next one goes to the live target');
  t.is(ups[0]!.seen.find((s) => s.url.includes('m=body-2'))?.body, 'payload');
  // nothing of a bodiless request (Content-Length: 0) can be lost: sent on to the next target
  const bodiless = await request(gw.url, { method: 'POST', path: '/bodiless/p?m=body-3', headers: { 'content-length': '0' } });
  t.is(bodiless.status, 200);
  t.is(whoSaw('m=body-3'), 0);
});

test('stripPrefix: the upstream gets the path after the prefix, encoded as sent, query kept', async (t) => {
  const cases: Array<[string, string]> = [
    ['/api/v1/orders/7?m=s1&x=%2F', '/orders/7?m=s1&x=%2F'],
    ['/api/v1?m=s2', '/?m=s2'],
    ['/api/v1/?m=s3', '/?m=s3'],
    ['/API/V1/Mixed/Case?m=s4', '/Mixed/Case?m=s4'],
    ['/ap%69/v1/enc%20oded/%E4%BD%A0?m=s5', '/enc%20oded/%E4%BD%A0?m=s5'],
    ['/api/%76%31/x?m=s6', '/x?m=s6'],
  ];
  for (const [sent, expected] of cases) {
    const res = await request(gw.url, { path: sent });
    t.is(res.status, 200, sent);
    const marker = /m=s\d/.exec(sent)![0];
    t.is(ups[2]!.seen.find((s) => s.url.includes(marker))?.url, expected, sent);
  }
  // the bare prefix without a query
  await request(gw.url, { path: '/api/v1' });
  t.true(ups[2]!.seen.some((s) => s.url === '/'));
  // still refused before anything is rewritten
  t.is((await request(gw.url, { path: '/api/v1/a%2Fb?m=s7' })).status, 400);
  t.is((await request(gw.url, { path: '/api/v1/../v2/x?m=s8' })).status, 400);
  t.false(ups[2]!.seen.some((s) => /m=s[78]/.test(s.url)));
  // without stripPrefix the path goes as it came
  await request(gw.url, { path: '/api/v2/x?m=s9' });
  t.is(ups[2]!.seen.find((s) => s.url.includes('m=s9'))?.url, '/api/v2/x?m=s9');
});

test('stripSegments and round-robin, unit', (t) => {
  t.is(stripSegments('/a/b/c?q', 2), '/c?q');
  t.is(stripSegments('/a/b', 2), '/');
  t.is(stripSegments('/a/b?q=/x/y', 2), '/?q=/x/y');
  t.is(stripSegments('/a/b/', 2), '/');
  t.is(stripSegments('/a', 0), '/a');
  let now = 1000;
  const route = buildConfig({ wechat: { apps: [{ appid: APPID, secret: 's' }] }, routes: [{ path: '/x', upstream: ['http://a:1', 'http://b:2', 'http://c:3'], failTimeout: '5s' }] }, 't', {}).routes[0]!;
  const rt = new RouteTargets(route, undefined, () => now);
  const labels = () => Array.from({ length: 6 }, () => rt.pick()!.label);
  t.deepEqual(labels(), ['a:1', 'b:2', 'c:3', 'a:1', 'b:2', 'c:3']);
  t.true(rt.failed(rt.targets[1]!));
  t.false(rt.failed(rt.targets[1]!), 'already skipped: not reported again');
  t.deepEqual(labels(), ['a:1', 'c:3', 'a:1', 'c:3', 'a:1', 'c:3']);
  t.is(rt.pick(rt.targets[0])!.label, 'c:3', 'the next target after a refusal, never the same one');
  for (const tg of rt.targets) rt.failed(tg);
  t.is(new Set(labels()).size, 3, 'all skipped: taken in turn anyway');
  now += 5001;
  t.deepEqual(labels().slice(0, 3).sort(), ['a:1', 'b:2', 'c:3'], 'back after failTimeout');
  const one = new RouteTargets({ ...route, upstreams: ['http://solo:9'] });
  t.is(one.single?.label, 'solo:9');
  t.is(one.pick(one.single), undefined, 'a one-target route has no other target to send on to');
});

test('routes[].headers: set after the client\'s are stripped, replacing a client header of the same name', async (t) => {
  const res = await request(gw.url, { path: '/hdrs/x?m=h1', headers: [['X-Tenant', 'evil'], ['x-tenant', 'evil2'], ['X-Other', 'kept']] });
  t.is(res.status, 200);
  const seen = ups[2]!.seen.find((s) => s.url.includes('m=h1'))!;
  t.is(seen.headers['x-tenant'], 'acme');
  t.is(seen.rawHeaders.filter((h) => h.toLowerCase() === 'x-tenant').length, 1, 'one X-Tenant line, the configured one');
  t.is(seen.headers['x-service-key'], 'k-123');
  t.is(seen.headers['x-build'], '42', 'a number in YAML is sent as its text');
  t.is(seen.headers['x-other'], 'kept');
});

test('config: upstream lists and routes[].headers are checked, each problem naming its key', (t) => {
  const problems = (route: Record<string, unknown>): string[] => {
    try {
      buildConfig({ wechat: { apps: [{ appid: APPID, secret: 's' }] }, routes: [{ path: '/x', ...route }] }, 't', {});
      return [];
    } catch (err) {
      return (err as ConfigError).problems;
    }
  };
  const has = (list: string[], text: string) => t.true(list.some((p) => p.startsWith(text)), `${text}\n  in: ${list.join('\n  ')}`);
  has(problems({}), 'routes[0].upstream: is required');
  has(problems({ upstream: 7 }), 'routes[0].upstream: must be an http(s) URL or a list of them');
  has(problems({ upstream: [] }), 'routes[0].upstream: must list at least one URL');
  has(problems({ upstream: ['http://a', 'ftp://b'] }), 'routes[0].upstream[1]: must be an http(s) URL');
  has(problems({ upstream: ['http://a/', 'http://a'] }), 'routes[0].upstream: lists the same URL twice');
  has(problems({ upstream: 'http://a', failTimeout: '10' }), 'routes[0].failTimeout: must be a duration');
  const forbidden: Array<[string, string]> = [
    ['X-Openid', 'identity header'],
    ['x_unionid', 'identity header'],
    ['X-Appid', 'identity header'],
    ['X-Wx-Phone', 'identity header'],
    ['Connection', 'hop-by-hop'],
    ['Keep-Alive', 'hop-by-hop'],
    ['TE', 'hop-by-hop'],
    ['Upgrade', 'hop-by-hop'],
    ['Proxy-Authorization', 'hop-by-hop'],
    ['Host', 'frames the request'],
    ['Content-Length', 'frames the request'],
    ['Transfer-Encoding', 'frames the request'],
    ['Authorization', "client's credentials"],
    ['Cookie', "client's credentials"],
    ['Sec-WebSocket-Key', 'WebSocket handshake'],
  ];
  for (const [name, why] of forbidden) {
    const list = problems({ upstream: 'http://a', headers: { [name]: 'v' } });
    has(list, `routes[0].headers.${name}: cannot be set: it `);
    t.true(list.some((p) => p.includes(why)), `${name}: ${list.join('; ')}`);
  }
  has(problems({ upstream: 'http://a', headers: { 'Bad Name': 'v' } }), 'routes[0].headers.Bad Name: is not a valid header name');
  has(problems({ upstream: 'http://a', headers: { 'X-A': 'line\r\nX-Injected: 1' } }), 'routes[0].headers.X-A: must not contain control characters');
  has(problems({ upstream: 'http://a', headers: { 'X-A': 'v', 'x-a': 'w' } }), 'routes[0].headers.x-a: is given twice');
  t.deepEqual(problems({ upstream: ['http://a', 'https://b:8443'], headers: { 'X-Ok': 'v' }, stripPrefix: true, failTimeout: '0s' }), []);
  const c = buildConfig({ wechat: { apps: [{ appid: APPID, secret: 's' }] }, routes: [{ path: '/x', upstream: ['http://a/', 'http://b'] }, { path: '/y', upstream: 'http://c/' }] }, 't', {});
  t.deepEqual(
    c.routes.map((r) => [r.upstream, r.upstreams, r.failTimeout, r.websocket.maxLifetime]),
    [
      ['http://a', ['http://a', 'http://b'], 10_000, 3_600_000],
      ['http://c', ['http://c'], 10_000, 3_600_000],
    ],
  );
});

test('an upstream target label is host:port, default ports included', (t) => {
  const route = buildConfig({ wechat: { apps: [{ appid: APPID, secret: 's' }] }, routes: [{ path: '/x', upstream: ['http://a', 'https://b', 'http://[::1]:81'] }] }, 't', {}).routes[0]!;
  t.deepEqual(
    new RouteTargets(route).targets.map((x) => [x.label, x.hostname, x.port]),
    [
      ['a:80', 'a', 80],
      ['b:443', 'b', 443],
      ['[::1]:81', '::1', 81],
    ],
  );
});

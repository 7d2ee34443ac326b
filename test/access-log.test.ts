import test from 'ava';
import { startSimulator } from '../src/dev/simulator.js';
import { APPID, SECRET, login, startTestGateway, testConfig } from './helpers/gateway.js';
import { request } from './helpers/http.js';
import { startUpstream, type Upstream } from './helpers/upstream.js';

/** The access log: one JSON line per request, request ids kept or made and passed on, log.openid and log.access. */
let up1: Upstream;
let up2: Upstream;
let sim: Awaited<ReturnType<typeof startSimulator>>;

test.before(async () => {
  [up1, up2, sim] = await Promise.all([startUpstream(), startUpstream(), startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } })]);
});
test.after.always(() => Promise.all([up1?.close(), up2?.close(), sim?.close()]));

/** A configuration with these routes, logging at info (the access log's level). */
const raw = (routes: object[], extra: Record<string, unknown> = {}) => testConfig({ apiBase: sim.url, routes, log: { level: 'info' }, ...extra });

test.serial('access log: one JSON line per request with request id, route, status, duration, upstream and a hashed user; X-Request-Id passes on', async (t) => {
  const gw = await startTestGateway(
    raw([
      { path: '/api', upstream: up1.url },
      { path: '/pub', upstream: up1.url, auth: 'none' },
      { path: '/rr', upstream: [up1.url, up2.url], auth: 'none' },
    ]),
    { logLevel: 'info' },
  );
  t.teardown(() => gw.close());
  const token = await login(gw.url, 'ivy.1');
  const me = (await request(gw.url, { path: '/session', headers: { authorization: `Bearer ${token}` } })).json;
  await request(gw.url, { path: '/api/orders?secret=1', headers: { authorization: `Bearer ${token}`, 'x-request-id': 'lb-42.a' } });
  t.is(up1.seen.at(-1)!.headers['x-request-id'], 'lb-42.a', 'a plain request id is kept and forwarded');
  await request(gw.url, { path: '/pub/named', headers: { connection: 'keep-alive, X-Request-Id', 'x-request-id': 'lb-43' } });
  t.is(up1.seen.at(-1)!.headers['x-request-id'], 'lb-43', 'naming it in Connection does not drop it');
  await request(gw.url, { path: '/pub/x', headers: { 'x-request-id': 'bad id with spaces' } });
  const generated = up1.seen.at(-1)!.headers['x-request-id'] as string;
  t.regex(generated, /^[0-9a-f-]{36}$/, 'a malformed one is replaced by a new UUID');
  await request(gw.url, { path: '/api/x' }); // 401
  const own = await request(gw.url, { path: '/healthz', headers: { 'x-request-id': 'hc-1' } });
  t.is(own.headers['x-request-id'], 'hc-1', 'own endpoints answer with it');

  await request(gw.url, { path: '/rr/1' });
  await request(gw.url, { path: '/rr/2' });
  const lines = gw.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'request');
  t.deepEqual(lines.filter((l) => l.route === 'rr').map((l) => l.upstream).sort(), [up1.url, up2.url].sort(), 'the target that answered, each in turn');
  const api = lines.find((l) => l.req_id === 'lb-42.a')!;
  t.like(api, { part: 'access', route: 'api', method: 'GET', path: '/api/orders', status: 200, upstream: up1.url, appid: APPID });
  t.is(typeof api.ms, 'number');
  t.regex(String(api.user), /^[A-Za-z0-9_-]{16}$/);
  t.false(gw.logs.some((l) => l.includes(me.openid)), 'no openid in any log line');
  t.false(gw.logs.some((l) => l.includes('secret=1')), 'no query string');
  t.like(lines.find((l) => l.req_id === generated)!, { route: 'pub', status: 200 });
  t.truthy(lines.find((l) => l.route === 'api' && l.status === 401));
  t.like(lines.find((l) => l.req_id === 'hc-1')!, { route: 'healthz', status: 200 });
  const logins = lines.filter((l) => l.route === 'login');
  t.is(logins.length, 1);
  t.is(logins[0]!.user, api.user, 'the same user, the same hash');

  const quiet = await startTestGateway(raw([{ path: '/api', upstream: up1.url }], { log: { level: 'info', openid: 'omit' } }), { logLevel: 'info' });
  t.teardown(() => quiet.close());
  const tok = await login(quiet.url, 'ivy.2');
  await request(quiet.url, { path: '/api/x', headers: { authorization: `Bearer ${tok}` } });
  const q = quiet.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'request' && l.route === 'api');
  t.is(q.length, 1);
  t.false('user' in q[0]!, 'log.openid: omit');
  const off = await startTestGateway(raw([{ path: '/pub', upstream: up1.url, auth: 'none' }], { log: { level: 'info', access: false } }), { logLevel: 'info' });
  t.teardown(() => off.close());
  await request(off.url, { path: '/pub/x' });
  t.false(off.logs.some((l) => JSON.parse(l).msg === 'request'), 'log.access: false');
});

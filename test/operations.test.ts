import { renameSync, writeFileSync } from 'node:fs';
import test from 'ava';
import { stringify } from 'yaml';
import { startSimulator } from '../src/dev/simulator.js';
import { APPID, SECRET, login, runCli, spawnGateway, startTestGateway, testConfig, writeConfig, type GatewayProcess } from './helpers/gateway.js';
import { rawConnect, request } from './helpers/http.js';
import { metricValue, scrape } from './helpers/metrics.js';
import { startUpstream, type Upstream } from './helpers/upstream.js';
import { sleep, waitFor } from './helpers/wait.js';

/**
 * What operators get beyond the request path: hot reload (file watch and SIGHUP) on the real process,
 * the access log and request ids, check-config and check-route.
 */
let up1: Upstream;
let up2: Upstream;
let sim: Awaited<ReturnType<typeof startSimulator>>;

test.before(async () => {
  up1 = await startUpstream();
  up2 = await startUpstream();
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
});
test.after.always(async () => {
  await up1?.close();
  await up2?.close();
  await sim?.close();
});


function raw(routes: object[], extra: Record<string, unknown> = {}) {
  return testConfig({ apiBase: sim.url, routes, log: { level: 'info' }, ...extra });
}
/** Rewrites the config the way careful tools do: a new file renamed over the old one. */
function replace(file: string, config: Record<string, unknown> | string): void {
  writeFileSync(`${file}.tmp`, typeof config === 'string' ? config : stringify(config));
  renameSync(`${file}.tmp`, file);
}
const logLines = (p: GatewayProcess) => p.stdout.flatMap((l) => { try { return [JSON.parse(l) as Record<string, unknown>]; } catch { return []; } });
const statusOf = async (p: GatewayProcess, path: string) => (await request(p.url, { path })).status;

test.serial('hot reload: a changed file swaps the routes in; an invalid one is refused with the start-up message and the old config keeps serving', async (t) => {
  const a = { path: '/a', upstream: up1.url, auth: 'none' };
  const p = await spawnGateway(raw([a]));
  t.teardown(() => void p.stop('SIGKILL'));
  t.is(await statusOf(p, '/a/x'), 200);
  t.is(await statusOf(p, '/b/x'), 404);
  const t0 = metricValue(await scrape(p.url), 'wxgate_config_last_reload_success_timestamp_seconds');
  t.is(metricValue(await scrape(p.url), 'wxgate_config_last_reload_success'), 1);

  replace(p.file, raw([a, { path: '/b', upstream: up2.url, auth: 'none' }]));
  await waitFor(async () => (await statusOf(p, '/b/x')) === 200, { message: 'the new route serves' });
  t.is(up2.seen.at(-1)!.url, '/b/x');
  const after = await scrape(p.url);
  t.is(metricValue(after, 'wxgate_config_last_reload_success'), 1);
  t.true(metricValue(after, 'wxgate_config_last_reload_success_timestamp_seconds') > t0);

  // invalid: refused, named as at start, old routes keep serving
  replace(p.file, raw([a, { path: '/b', upstream: 'not a url', auth: 'none' }]));
  await waitFor(async () => metricValue(await scrape(p.url), 'wxgate_config_last_reload_success') === 0, { message: 'the metric says so' });
  const rejected = logLines(p).find((l) => l.msg === 'config reload rejected; the previous configuration keeps serving');
  t.truthy(rejected);
  t.regex(JSON.stringify(rejected), /routes\[1\]\.upstream: must be an http\(s\) URL/);
  t.is(await statusOf(p, '/b/x'), 200, 'the old config keeps serving');

  // a setting that needs a restart: refused, naming it
  replace(p.file, raw([a], { server: { host: '127.0.0.1', port: 1, maxHeaderSize: '32kb' } }));
  await waitFor(() => logLines(p).some((l) => /server\.port, server\.maxHeaderSize/.test(JSON.stringify(l))), { message: 'the keys are named' });
  t.is(await statusOf(p, '/b/x'), 200);

  // valid again: taken
  replace(p.file, raw([{ ...a, path: '/c' }]));
  await waitFor(async () => (await statusOf(p, '/c/x')) === 200, { message: 'the reload took effect' });
  t.is(await statusOf(p, '/b/x'), 404);
  t.is(metricValue(await scrape(p.url), 'wxgate_config_last_reload_success'), 1);
});

test.serial('hot reload keeps in-flight requests and open connections; SIGHUP reloads when watching is off', async (t) => {
  const a = { path: '/a', upstream: up1.url, auth: 'none' };
  const p = await spawnGateway(raw([a]), { WXGATE_WATCH: '0' });
  t.teardown(() => void p.stop('SIGKILL'));
  const conn = await rawConnect(p.url);
  conn.write('GET /a/first HTTP/1.1\r\nHost: x\r\n\r\n');
  await conn.waitFor(/"url":"\/a\/first"/, 3000);
  const slow = request(p.url, { path: '/a/slow?ms=700' });
  await waitFor(() => up1.seen.some((s) => s.url === '/a/slow?ms=700'), { message: 'the slow request reached the upstream' });

  replace(p.file, raw([a, { path: '/b', upstream: up2.url, auth: 'none' }]));
  await sleep(800); // the watcher would have reloaded by now, were it on
  t.is(await statusOf(p, '/b/x'), 404, 'with WXGATE_WATCH=0 a change waits for SIGHUP');
  p.child.kill('SIGHUP');
  await waitFor(async () => (await statusOf(p, '/b/x')) === 200, { message: 'SIGHUP reloaded' });
  t.is((await slow).status, 200, 'the request in flight during the reload was answered');
  conn.write('GET /b/second HTTP/1.1\r\nHost: x\r\n\r\n');
  await conn.waitFor(/"url":"\/b\/second"/, 3000);
  const reply = await conn.done(300);
  t.is(reply.responses.length, 2, 'the connection opened before the reload serves the new routes');
});

test.serial('a half-written file is never loaded', async (t) => {
  const a = { path: '/a', upstream: up1.url, auth: 'none' };
  const p = await spawnGateway(raw([a]));
  t.teardown(() => void p.stop('SIGKILL'));
  const full = stringify(raw([a, { path: '/b', upstream: up2.url, auth: 'none' }, { path: '/c', upstream: up2.url, auth: 'none' }]));
  // written in place, in three parts; the first part alone is a valid configuration with fewer routes
  const cut = full.indexOf('  - path: /c');
  // a slow writer: real time passes between the parts
  writeFileSync(p.file, full.slice(0, cut));
  await sleep(60);
  writeFileSync(p.file, full.slice(0, cut + 5));
  await sleep(60);
  writeFileSync(p.file, full);
  await waitFor(async () => (await statusOf(p, '/c/x')) === 200, { message: 'the reload took effect' });
  const reloads = logLines(p).filter((l) => l.msg === 'config reloaded' || l.msg === 'config reload rejected; the previous configuration keeps serving');
  t.deepEqual(reloads.map((l) => [l.msg, l.routes]), [['config reloaded', 3]], 'one reload, of the whole file');
});

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

function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; out: string; err: string }> {
  const child = runCli(args, env);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((r) => child.once('exit', (code) => r({ code, out, err })));
}

test('check-config prints the configuration with defaults, secrets never shown; check-route says what a request would get', async (t) => {
  const file = writeConfig(
    raw([
      { path: '/api', upstream: 'http://api.internal:9001', apps: [APPID], timeout: '5s' },
      { path: '/api/public', upstream: 'http://api.internal:9001', auth: 'none' },
      { path: '/v1/items', upstream: ['http://a.internal:1', 'http://b.internal:2'], stripPrefix: true, auth: 'none' },
    ], {
      session: { store: 'redis', redis: { url: 'redis://:hunter2-password@redis.internal:6379' } },
      admin: { port: 9465, token: 'admin-token-0123456789-abcdef' },
    }),
  );
  const checked = await cli(['check-config', file]);
  t.is(checked.code, 0, checked.err);
  t.regex(checked.out, /valid \(3 routes, redis session store\)/);
  t.regex(checked.out, /secret: \$\{WXGATE_WECHAT_APPS_0_SECRET\}/, 'a secret written into the file is shown as a variable (test/check-commands.test.ts)');
  t.regex(checked.out, /redis:\/\/:\$\{WXGATE_SESSION_REDIS_URL_PASSWORD\}@redis\.internal:6379/);
  t.regex(checked.out, /ttl: 2h/, 'defaults filled in, as a file has them');
  for (const s of [SECRET, 'hunter2-password', 'admin-token-0123456789-abcdef']) t.false(checked.out.includes(s), s);

  const route = async (method: string, path: string) => (await cli(['check-route', file, method, path])).out;
  t.regex(await route('GET', '/api/orders/1'), /route "api" \(path \/api\)[\s\S]*upstream: http:\/\/api\.internal:9001\/api\/orders\/1[\s\S]*auth: +required[\s\S]*apps: +wx0123456789abcdef[\s\S]*timeout: +5000 ms/);
  t.regex(await route('GET', '/API/Public/x'), /route "api_public"[\s\S]*auth: +none/, 'case-insensitive, longest prefix');
  t.regex(await route('GET', '/api/%2e%2e/admin'), /refused, 400 bad_path/);
  t.regex(await route('GET', '/v1/items/7?q=1'), /upstream: one of http:\/\/a\.internal:1, http:\/\/b\.internal:2 \(in turn; a failing one skipped for 10000 ms\), path \/7\?q=1/);
  t.regex(await route('POST', '/login'), /answered by the gateway itself/);
  t.regex(await route('GET', '/other'), /no route, 404/);
  t.is((await cli(['check-route', file])).code, 2);
});

import http from 'node:http';
import { readFileSync, writeFileSync } from 'node:fs';
import test from 'ava';
import { stringify } from 'yaml';
import { startSimulator } from '../src/dev/simulator.js';
import { APPID, SECRET, exited, login, runCli, spawnGateway, testConfig, type GatewayProcess, writeConfig } from './helpers/gateway.js';
import { request, type Reply } from './helpers/http.js';
import { metricValue, scrape } from './helpers/metrics.js';
import { freePort } from './helpers/ports.js';
import { startRedis, type RedisServer } from './helpers/redis.js';
import { sleep, waitFor } from './helpers/wait.js';
import { startUpstream, type Upstream } from './helpers/upstream.js';

/**
 * server.workers: 2, as its own process (the built CLI: a primary and two node:cluster workers) on a
 * real redis-server, the simulator as WeChat and a real upstream. Each answer says which worker gave it
 * (X-Wxgate-Worker, only with WXGATE_TEST_WORKER_HEADER=1); the primary hands new connections to the
 * workers in turn, so a request on a new connection is retried until the wanted worker answers it.
 */
const ENV = { WXGATE_TEST_WORKER_HEADER: '1', WXGATE_WATCH: '0' };
const ADMIN_TOKEN = 'admin-token-0123456789-abcdef';
const SHUTDOWN = 8000;

let redis: RedisServer;
let sim: Awaited<ReturnType<typeof startSimulator>>;
let up: Upstream;
let gw: GatewayProcess;
let metricsUrl: string;
let raw: Record<string, unknown>;
let users = 0;

const workerOf = (r: Reply) => r.headers['x-wxgate-worker'] as string | undefined;
const pidOf = (r: Reply) => Number(r.headers['x-wxgate-worker-pid']);
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** Sends `send()` on new connections until worker `slot` answers (the workers take connections in turn). */
async function on(slot: string, send: () => Promise<Reply>): Promise<Reply> {
  for (let i = 0; i < 40; i++) {
    const r = await send();
    if (workerOf(r) === slot) return r;
  }
  throw new Error(`worker ${slot} never answered`);
}

/** A kept-alive connection that worker `slot` took (for a request that must be sent once, to that worker). */
async function agentOn(slot: string): Promise<http.Agent> {
  for (let i = 0; i < 40; i++) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    if (workerOf(await request(gw.url, { path: '/healthz', agent })) === slot) return agent;
    agent.destroy();
  }
  throw new Error(`worker ${slot} never took a connection`);
}

function gatewayConfig(over: Record<string, unknown> = {}) {
  return testConfig({
    apiBase: sim.url,
    wechat: { apiBase: sim.url, timeout: '5s', apps: [{ appid: APPID, secret: SECRET }] },
    session: { store: 'redis', redis: { url: redis.url, keyPrefix: `w${Math.random().toString(36).slice(2, 8)}:` } },
    routes: [{ path: '/api', upstream: up.url }],
    server: { host: '127.0.0.1', port: 0, workers: 2, shutdownTimeout: `${SHUTDOWN}ms` },
    log: { level: 'info' },
    ...over,
  });
}

test.before(async () => {
  redis = await startRedis();
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
  up = await startUpstream();
  const [mport, aport] = await Promise.all([freePort(), freePort()]);
  metricsUrl = `http://127.0.0.1:${mport}`;
  raw = gatewayConfig({
    metrics: { port: mport },
    admin: { port: aport, token: ADMIN_TOKEN },
    web: { publicUrl: 'http://127.0.0.1', scan: { checkPath: false, envVersion: 'develop' } },
  });
  gw = await spawnGateway(raw, ENV);
});
test.after.always(async () => {
  await gw?.stop('SIGKILL');
  await up?.close();
  await sim?.close();
  await redis?.close();
});

test.serial('both workers answer, each its own process, and the primary announces them once', async (t) => {
  const a = await on('1', () => request(gw.url, { path: '/healthz' }));
  const b = await on('2', () => request(gw.url, { path: '/healthz' }));
  t.is(a.status, 200);
  t.is(b.status, 200);
  t.not(pidOf(a), pidOf(b));
  t.not(pidOf(a), gw.child.pid);
  t.is(gw.stdout.filter((l) => l.includes('"msg":"wxgate listening"')).length, 1);
  t.is(gw.stdout.filter((l) => l.includes('"msg":"wxgate worker listening"')).length, 2);
});

test.serial('a token from worker 1 is honoured by worker 2, and a logout on worker 1 is seen by worker 2 (its cached copy dropped)', async (t) => {
  const user = `wuser${++users}`;
  const token = await login(gw.url, `${user}.1`);
  const one = await on('1', () => request(gw.url, { path: '/session', headers: bearer(token) }));
  const two = await on('2', () => request(gw.url, { path: '/session', headers: bearer(token) }));
  t.is(one.status, 200);
  t.is(two.status, 200, 'the other worker knows the session (Redis)');
  t.is(two.json.openid, one.json.openid);
  const proxied = await on('2', () => request(gw.url, { path: '/api/x', headers: bearer(token) }));
  t.is(proxied.status, 200);
  t.is(proxied.json.openid, one.json.openid, 'identity forwarded by worker 2');

  // both now hold the session in their LRU (cache ttl 10 s): only the revocation can make worker 2 refuse it
  const agent = await agentOn('1');
  t.teardown(() => agent.destroy());
  const out = await request(gw.url, { method: 'POST', path: '/logout', headers: bearer(token), agent });
  t.is(workerOf(out), '1');
  t.is(out.status, 204, out.text);
  const refused = async () => (await on('2', () => request(gw.url, { path: '/session', headers: bearer(token) }))).status === 401;
  await waitFor(refused, { message: 'worker 2 refuses the token, well within the cache ttl (10 s) of the logout on worker 1' });
  t.pass();
});

test.serial('the admin API is one listener (worker 1); a revocation through it is seen by worker 2', async (t) => {
  const token = await login(gw.url, `admin${++users}.1`);
  const two = await on('2', () => request(gw.url, { path: '/session', headers: bearer(token) }));
  t.is(two.status, 200);
  const adminUrl = `http://127.0.0.1:${(raw.admin as { port: number }).port}`;
  const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
  const path = `/users/${APPID}/${two.json.openid}/sessions`;
  const listed = await request(adminUrl, { path, headers: auth });
  t.is(listed.status, 200, listed.text);
  const announced = gw.stdout.filter((l) => l.includes('"msg":"wxgate worker listening"')).map((l) => JSON.parse(l) as { worker: number; admin: string });
  t.deepEqual(announced.filter((l) => l.admin !== 'off').map((l) => l.worker), [1], 'only worker 1 opened it');
  t.is(listed.json.sessions.length, 1);
  const revoked = await request(adminUrl, { method: 'DELETE', path, headers: auth });
  t.is(revoked.status, 200, revoked.text);
  await waitFor(async () => (await on('2', () => request(gw.url, { path: '/session', headers: bearer(token) }))).status === 401, { message: 'worker 2 dropped its cached copy' });
});

test.serial('/metrics (the primary, metrics.port) adds up the workers: requests answered by either are all counted', async (t) => {
  const before = metricValue(await scrape(metricsUrl), 'wxgate_http_requests_total', { route: 'healthz', method: 'GET', status: '200' });
  const seen = new Set<string>();
  for (let i = 0; i < 10; i++) seen.add(workerOf(await request(gw.url, { path: '/healthz' }))!);
  t.deepEqual([...seen].sort(), ['1', '2'], 'both workers answered some');
  const text = await scrape(metricsUrl);
  t.is(metricValue(text, 'wxgate_http_requests_total', { route: 'healthz', method: 'GET', status: '200' }) - before, 10);
  t.is(metricValue(text, 'wxgate_workers'), 2);
  t.is(metricValue(text, 'wxgate_session_store_up'), 1, 'a gauge of every worker is not summed (min)');
  t.is(metricValue(text, 'wxgate_config_last_reload_success'), 1);
  t.is((await request(gw.url, { path: '/metrics' })).status, 404, 'not on the main listener when metrics.port is set');
});

test.serial('one budget across workers: the access_token is fetched once, a code replayed on the other worker gets the same token, a scan ticket made on one is found by the other', async (t) => {
  // access_token: both workers need it at once; one fetch from WeChat (the Redis lock)
  const before = (await request(sim.url, { path: '/dev/token-stats' })).json as { stable_token: number };
  const tokens = await Promise.all([1, 2].map((i) => login(gw.url, `phoneuser${i}.1`)));
  const phones = await Promise.all(
    Array.from({ length: 6 }, (_, i) =>
      request(gw.url, { method: 'POST', path: '/wx/phone', headers: { ...bearer(tokens[i % 2]!), 'content-type': 'application/json' }, body: JSON.stringify({ code: `phone-1380013800${i}` }) }),
    ),
  );
  t.deepEqual(phones.map((p) => p.status), [200, 200, 200, 200, 200, 200], phones.map((p) => p.text).join(' '));
  t.deepEqual(new Set(phones.map(workerOf)).size, 2, 'both workers asked for the number');
  const after = (await request(sim.url, { path: '/dev/token-stats' })).json as { stable_token: number };
  t.is(after.stable_token - before.stable_token, 1, 'one access_token fetch for both workers');

  // the code replay: same code, answered by each worker, one token (one WeChat call)
  const code = `replay${++users}.1`;
  const post = () => request(gw.url, { method: 'POST', path: '/login', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code }) });
  const first = await post();
  const other = workerOf(first) === '1' ? '2' : '1';
  const second = await on(other, post);
  t.is(first.status, 200);
  t.is(second.status, 200);
  t.is(second.json.token, first.json.token, 'the other worker answers the replayed code with the same token');

  // scan ticket: created on worker 1, polled by its page on worker 2
  const created = await on('1', () => request(gw.url, { method: 'POST', path: '/scan/tickets' }));
  t.is(created.status, 201, created.text);
  const polled = await on('2', () => request(gw.url, { path: `/scan/tickets/${created.json.ticket}`, headers: { 'x-scan-secret': created.json.secret } }));
  t.is(polled.status, 200, polled.text);
  t.deepEqual(polled.json, { status: 'pending' });
});

test.serial('the login rate limit is one budget across both workers; /metrics on the main listener (no metrics.port) is the whole process; the primary watches the file for both', async (t) => {
  const limitedRaw = gatewayConfig({ limits: { login: { perIp: 3, window: '1m' } } });
  // this one watches its file (the primary does; the workers do not)
  const limited = await spawnGateway(limitedRaw, { ...ENV, WXGATE_WATCH: '1' });
  t.teardown(() => void limited.stop('SIGKILL'));
  const answers: Reply[] = [];
  for (let i = 0; i < 8; i++) {
    answers.push(await request(limited.url, { method: 'POST', path: '/login', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: `limited${i}.1` }) }));
  }
  t.deepEqual(answers.map((a) => a.status), [200, 200, 200, 429, 429, 429, 429, 429]);
  t.deepEqual(new Set(answers.slice(3).map(workerOf)).size, 2, 'both workers refuse: they count in one budget');
  t.deepEqual(new Set(answers.slice(0, 3).map(workerOf)).size, 2, 'both workers let logins through');
  // any worker answers /metrics with every worker's counts
  for (const slot of ['1', '2']) {
    const m = await on(slot, () => request(limited.url, { path: '/metrics' }));
    t.is(m.status, 200);
    t.is(metricValue(m.text, 'wxgate_logins_total', { result: 'ok' }), 3, `worker ${slot}: logins of both`);
    t.is(metricValue(m.text, 'wxgate_rate_limited_total', { endpoint: 'login' }), 5, `worker ${slot}: refusals of both`);
  }
  // the file changes: the primary's watcher takes it, and both workers serve the new route
  writeFileSync(limited.file, stringify({ ...limitedRaw, routes: [...(limitedRaw.routes as object[]), { path: '/v3', upstream: up.url, auth: 'none' }] }));
  for (const slot of ['1', '2']) {
    await waitFor(
      async () => {
        const r = await request(limited.url, { path: '/v3/x' });
        return workerOf(r) === slot && r.status === 200;
      },
      { timeout: 8000, interval: 100, message: `worker ${slot} reloaded the changed file` },
    );
  }
  t.is(limited.stdout.filter((l) => l.includes('config accepted; every worker reloads it')).length, 1, 'the primary took the change once');
  t.is(await limited.stop('SIGTERM'), 0);
});

test.serial('SIGHUP reaches every worker; a rejected file is rejected once (by the primary) and both keep the old configuration', async (t) => {
  const token = await login(gw.url, `hup${++users}.1`);
  for (const slot of ['1', '2']) t.is((await on(slot, () => request(gw.url, { path: '/v2/x', headers: bearer(token) }))).status, 404);
  writeFileSync(gw.file, stringify({ ...raw, routes: [...(raw.routes as object[]), { path: '/v2', upstream: up.url }] }));
  gw.child.kill('SIGHUP');
  for (const slot of ['1', '2']) {
    await waitFor(async () => (await on(slot, () => request(gw.url, { path: '/v2/x', headers: bearer(token) }))).status === 200, { interval: 50, message: `worker ${slot} serves the new route` });
  }

  const mark = gw.stdout.length;
  writeFileSync(gw.file, 'server: { port: "not a port" }\n');
  gw.child.kill('SIGHUP');
  await waitFor(() => gw.stdout.slice(mark).some((l) => l.includes('config reload rejected')), { message: 'the rejection logged' });
  await sleep(500); // a second rejection (by a worker) would be logged by now
  const rejected = gw.stdout.slice(mark).filter((l) => l.includes('config reload rejected'));
  t.is(rejected.length, 1, 'one rejection logged, not one per worker');
  t.regex(rejected[0]!, /server\.port/);
  for (const slot of ['1', '2']) t.is((await on(slot, () => request(gw.url, { path: '/v2/x', headers: bearer(token) }))).status, 200, `worker ${slot} keeps the last good one`);
  t.is(metricValue(await scrape(metricsUrl), 'wxgate_config_last_reload_success'), 0, 'the rejection shows in /metrics');
  writeFileSync(gw.file, stringify({ ...raw, routes: [...(raw.routes as object[]), { path: '/v2', upstream: up.url }] }));
});

test.serial('a killed worker is replaced (logged, counted), with the configuration the others run (not the file, broken meanwhile), and serves sessions made before', async (t) => {
  const token = await login(gw.url, `kill${++users}.1`);
  const old = await on('2', () => request(gw.url, { path: '/session', headers: bearer(token) }));
  const oldPid = pidOf(old);
  // the file on disk is broken now (not reloaded): the replacement must not read it
  const good = readFileSync(gw.file, 'utf8');
  writeFileSync(gw.file, 'server: { port: "not a port" }\n');
  t.teardown(() => writeFileSync(gw.file, good));
  process.kill(oldPid, 'SIGKILL');
  const fresh = await waitFor(
    async () => {
      const r = await request(gw.url, { path: '/session', headers: bearer(token) }).catch(() => undefined);
      return r && workerOf(r) === '2' && pidOf(r) !== oldPid ? r : undefined;
    },
    { timeout: 10_000, interval: 50, message: 'a new worker 2 answers' },
  );
  t.is(fresh.status, 200, 'with the session made before');
  const v2 = await on('2', () => request(gw.url, { path: '/v2/x', headers: bearer(token) }));
  t.is(v2.status, 200, 'with the route the last accepted reload added');
  writeFileSync(gw.file, good);
  t.is(metricValue(await scrape(metricsUrl), 'wxgate_worker_restarts_total'), 1);
  t.true(gw.stdout.some((l) => l.includes('worker died; starting a new one') && l.includes(`"pid":${oldPid}`)));
  t.is(metricValue(await scrape(metricsUrl), 'wxgate_workers'), 2);
});

test.serial('SIGTERM drains every worker: requests in flight on both complete, then the process exits 0 within shutdownTimeout', async (t) => {
  const token = await login(gw.url, `drain${++users}.1`);
  const seenBefore = up.seen.length;
  const inflight = Array.from({ length: 4 }, (_, i) => request(gw.url, { path: `/api/slow?ms=1500&i=${i}`, headers: bearer(token) }));
  await waitFor(() => up.seen.length - seenBefore >= 4, { interval: 10, message: 'all four reached the upstream' });
  t.is(up.seen.length - seenBefore, 4, 'all four reached the upstream');
  const signalled = Date.now();
  const exit = gw.stop('SIGTERM');
  const answers = await Promise.all(inflight);
  t.deepEqual(answers.map((a) => a.status), [200, 200, 200, 200]);
  t.is(new Set(answers.map(workerOf)).size, 2, 'the requests were on both workers');
  t.is(await exit, 0);
  const took = Date.now() - signalled;
  t.true(took < SHUTDOWN, `exited ${took} ms after SIGTERM (shutdownTimeout ${SHUTDOWN} ms)`);
  t.is(gw.stdout.filter((l) => l.includes('"msg":"stopped"')).length, 3, 'both workers and the primary stopped');
});

test('session.store: memory with server.workers > 1 is refused, naming the key', async (t) => {
  for (const workers of [2, 'auto']) {
    const file = writeConfig({ ...testConfig({ apiBase: 'http://127.0.0.1:1' }), server: { workers } });
    const child = runCli(['check-config', file]);
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    const [code] = await exited(child);
    t.is(code, 1);
    t.regex(err, new RegExp(`session\\.store: must be "redis" with server\\.workers: ${workers}: the memory store keeps sessions inside one process`));
  }
});

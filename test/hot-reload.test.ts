import { renameSync, writeFileSync } from 'node:fs';
import test from 'ava';
import { stringify } from 'yaml';
import { startSimulator } from '../src/dev/simulator.js';
import { APPID, SECRET, spawnGateway, testConfig, type GatewayProcess } from './helpers/gateway.js';
import { rawConnect, request } from './helpers/http.js';
import { metricValue, scrape } from './helpers/metrics.js';
import { startUpstream, type Upstream } from './helpers/upstream.js';
import { sleep, waitFor } from './helpers/wait.js';

/** Hot reload on the real process: a watched file, SIGHUP when watching is off, a half-written file. */
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

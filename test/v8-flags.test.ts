import test from 'ava';
import { startSimulator } from '../src/dev/simulator.js';
import { APPID, SECRET, login, spawnGateway, testConfig } from './helpers/gateway.js';
import { startUpstream, type Upstream } from './helpers/upstream.js';

/**
 * The gateway process runs without V8's allocation-site pretenuring (src/v8-flags.ts; why: BENCHMARKS.md,
 * "The warm-path regression"). V8 traces the pretenuring feedback it processes at each scavenge
 * (--trace-pretenuring-statistics); with pretenuring off it processes none. The same run with
 * WXGATE_V8_PRETENURING=1 (V8's default) is the control: it shows that the load below does reach
 * scavenges that would decide, so silence is the setting's doing and not a quiet heap.
 */
let sim: Awaited<ReturnType<typeof startSimulator>>;
let up: Upstream;

test.before(async () => {
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
  up = await startUpstream();
});
test.after.always(async () => {
  await up?.close();
  await sim?.close();
});

/** Lines of V8's pretenuring trace the gateway printed after it started listening, under a burst of requests in flight. */
async function pretenuringTraceUnderLoad(env: NodeJS.ProcessEnv, user: string): Promise<number> {
  // a 1 MB young generation: scavenges every few hundred requests
  const gw = await spawnGateway(testConfig({ apiBase: sim.url, routes: [{ path: '/api', upstream: up.url }], log: { level: 'info' } }), env, ['--trace-pretenuring-statistics', '--max-semi-space-size=1']);
  try {
    const from = gw.stdout.findIndex((l) => l.includes('wxgate listening'));
    const token = await login(gw.url, `${user}.1`);
    const get = (path: string) => fetch(`${gw.url}${path}`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.text());
    // what made V8 tenure per-request objects: many requests in flight while the heap is collected
    const slow = Promise.all(Array.from({ length: 300 }, () => get('/api/slow?ms=300')));
    for (let i = 0; i < 20; i++) await Promise.all(Array.from({ length: 50 }, () => get('/api/items')));
    await slow;
    return gw.stdout.slice(from + 1).filter((l) => l.includes('pretenuring:')).length;
  } finally {
    await gw.stop();
  }
}

test('the gateway process runs without allocation-site pretenuring; WXGATE_V8_PRETENURING=1 keeps V8\'s default', async (t) => {
  const control = await pretenuringTraceUnderLoad({ WXGATE_V8_PRETENURING: '1' }, 'pretenuring-on');
  t.true(control > 0, 'with V8\'s default the same load makes V8 weigh allocation sites for pretenuring');
  t.is(await pretenuringTraceUnderLoad({}, 'pretenuring-off'), 0, 'as shipped, V8 weighs none');
  t.log(`pretenuring trace lines under load: ${control} with V8's default, 0 as shipped`);
});

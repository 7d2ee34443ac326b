import test from 'ava';
import { buildConfig } from '../src/config/load.js';
import { accountId } from '../src/session/accounts.js';
import { hashToken } from '../src/session/tokens.js';
import { eventSignature } from '../src/events/events.js';
import { simulatedOpenid, simulatedUnionid, startSimulator } from '../src/dev/simulator.js';
import { APPID, SECRET, login, startTestGateway, testConfig, type TestGateway } from './helpers/gateway.js';
import { request } from './helpers/http.js';
import { metricValue, scrape } from './helpers/metrics.js';
import { sleep, waitFor } from './helpers/wait.js';
import { startRedis, type RedisServer } from './helpers/redis.js';
import { startUpstream, type Seen, type Upstream } from './helpers/upstream.js';

/**
 * Login events (issue 16 item 4) end to end: replicas on one real redis-server, the simulator as WeChat,
 * a real HTTP receiver (test/helpers/upstream.ts) that can be made to fail and recover. Deliveries are
 * waited for, never timed.
 */
const EVENT_SECRET = 'events-secret-0123456789abcdef';

let redis: RedisServer;
let sim: Awaited<ReturnType<typeof startSimulator>>;
let hooks: Upstream;
let a: TestGateway;
let b: TestGateway;
let prefixes = 0;
let users = 0;

function config(events: Record<string, unknown>, prefix = 'ev:') {
  return testConfig({
    apiBase: sim.url,
    session: { store: 'redis', redis: { url: redis.url, keyPrefix: prefix } },
    events: { secret: EVENT_SECRET, backoff: '50ms', timeout: '1s', ...events },
  });
}

test.before(async () => {
  redis = await startRedis();
  sim = await startSimulator(0, '127.0.0.1', { apps: { [APPID]: SECRET } });
  hooks = await startUpstream();
  [a, b] = await Promise.all([startTestGateway(config({ url: `${hooks.url}/hooks` })), startTestGateway(config({ url: `${hooks.url}/hooks` }))]);
});
test.after.always(async () => {
  await Promise.all([a?.close(), b?.close()]);
  await hooks?.close();
  await sim?.close();
  await redis?.close();
});

interface Delivered {
  seen: Seen;
  event: { id: string; type: string; created_at: string; data: Record<string, unknown> };
}
const delivered = (path = '/hooks'): Delivered[] =>
  hooks.seen.filter((s) => s.url === path).map((seen) => ({ seen, event: JSON.parse(seen.body) }));

/** Waits (up to 10 s) until `pick` finds what it looks for among the deliveries. */
const delivery = <T>(pick: () => T | undefined, what: string) => waitFor(pick, { timeout: 10_000, message: `not delivered: ${what}` });
const about = (openid: string, type: string) => () => {
  const found = delivered().filter((d) => d.event.type === type && d.event.data.openid === openid);
  return found.length ? found : undefined;
};

test.serial('a first login: user.created then session.created, signed; the next login on the other replica: session.created only; logouts: session.revoked', async (t) => {
  const name = `union-ev${++users}`;
  const openid = simulatedOpenid(APPID, name);
  const token = await login(a.url, `${name}.1`);
  const [created] = await delivery(about(openid, 'user.created'), 'user.created');
  const [session] = await delivery(about(openid, 'session.created'), 'session.created');
  const person = accountId({ appid: APPID, openid, unionid: simulatedUnionid(name) });
  t.deepEqual(created!.event.data, { user_id: person, appid: APPID, openid, unionid: simulatedUnionid(name), new_identity: true, new_person: true });
  t.like(session!.event.data, { user_id: person, appid: APPID, openid, flow: 'miniprogram', session: hashToken(token) });
  t.true(created!.event.created_at <= session!.event.created_at, 'user.created made first (deliveries run 4 at a time: in any order)');
  for (const d of [created!, session!]) {
    t.regex(d.event.id, /^evt_[A-Za-z0-9_-]{22}$/);
    t.is(d.seen.headers['x-wxgate-event-id'], d.event.id);
    t.is(d.seen.headers['x-wxgate-event-type'], d.event.type);
    t.is(d.seen.method, 'POST');
    t.regex(String(d.seen.headers['content-type']), /application\/json/);
    const sig = String(d.seen.headers['x-wxgate-signature']);
    const ts = Number(/^t=(\d+),v1=[0-9a-f]{64}$/.exec(sig)?.[1]);
    t.true(Math.abs(ts - Date.now() / 1000) < 60, 'a recent timestamp');
    t.is(sig, eventSignature(EVENT_SECRET, ts, d.seen.body), 'HMAC-SHA256 of "t.body" with events.secret');
    t.not(sig, eventSignature('another-secret-0123456789', ts, d.seen.body));
    t.false(d.seen.body.includes(token), 'no token in an event');
  }

  // the same person again, on B: not new (the marker is in Redis), one more session
  const second = await login(b.url, `${name}.2`);
  await delivery(() => about(openid, 'session.created')()?.find((d) => d.event.data.session === hashToken(second)), 'the second session.created');
  await sleep(100); // a second user.created, were one made, would be delivered by now
  t.is(about(openid, 'user.created')()!.length, 1, 'user.created once, across replicas');

  const out = await request(b.url, { method: 'POST', path: '/logout', headers: { authorization: `Bearer ${token}` } });
  t.is(out.status, 204);
  const [revoked] = await delivery(about(openid, 'session.revoked'), 'session.revoked');
  t.deepEqual(revoked!.event.data, { appid: APPID, openid, user_id: person, sessions: [hashToken(token)], count: 1, reason: 'logout' });
  const all = await request(a.url, { method: 'POST', path: '/logout', headers: { authorization: `Bearer ${second}`, 'content-type': 'application/json' }, body: '{"all":true}' });
  t.is(all.status, 204);
  const both = await delivery(() => (about(openid, 'session.revoked')()?.length === 2 ? about(openid, 'session.revoked')() : undefined), 'logout all');
  t.like(both[1]!.event.data, { appid: APPID, openid, user_id: person, count: 1, reason: 'logout_all' });
  for (const line of [...a.logs, ...b.logs]) t.false(line.includes(EVENT_SECRET), 'the secret is in no log line');
});

test.serial('a receiver that fails: the login is answered all the same; the event is retried with the same id and delivered once it recovers', async (t) => {
  const name = `ev-retry${++users}`;
  const openid = simulatedOpenid(APPID, name);
  const failedBefore = metricValue(await scrape(a.url), 'wxgate_event_deliveries_total', { outcome: 'http_5xx' });
  hooks.status = 503;
  try {
    const token = await login(a.url, `${name}.1`);
    t.is((await request(a.url, { path: '/session', headers: { authorization: `Bearer ${token}` } })).status, 200, 'logged in while the receiver fails');
    await delivery(() => (about(openid, 'session.created')()?.length ?? 0) >= 2 || undefined, 'two failed attempts');
  } finally {
    hooks.status = undefined;
  }
  const m = await scrape(a.url);
  t.true(metricValue(m, 'wxgate_event_deliveries_total', { outcome: 'http_5xx' }) - failedBefore >= 2, 'failures are metrics');
  // recovered: the next attempt gets through, with the same id
  await delivery(() => {
    const ok = delivered().filter((d) => d.event.data.openid === openid && d.event.type === 'session.created');
    return ok.length >= 3 ? ok : undefined;
  }, 'the retry after recovery');
  const attempts = about(openid, 'session.created')()!;
  t.is(new Set(attempts.map((d) => d.event.id)).size, 1, 'one id through every attempt');
  await waitFor(async () => metricValue(await scrape(a.url), 'wxgate_events_pending', {}) === 0, { message: 'nothing pending' });
});

test.serial('a 4xx is not retried (rejected); a receiver down for good is given up after events.attempts; both are metrics and logins go on', async (t) => {
  const prefix = `ev${++prefixes}:`;
  const gw = await startTestGateway(config({ url: `${hooks.url}/strict`, attempts: 3 }, prefix));
  try {
    hooks.status = 400;
    const name = `ev-4xx${++users}`;
    await login(gw.url, `${name}.1`);
    await delivery(() => delivered('/strict').find((d) => d.event.type === 'session.created' && d.event.data.openid === simulatedOpenid(APPID, name)), 'one attempt');
    await sleep(300); // a retry (backoff 50 ms) would have come by now
    t.is(delivered('/strict').filter((d) => d.event.type === 'session.created').length, 1, 'no retry after a 400');
    t.true(metricValue(await scrape(gw.url), 'wxgate_events_total', { type: 'session.created', outcome: 'rejected' }) >= 1);

    hooks.status = 500;
    const other = `ev-down${++users}`;
    const token = await login(gw.url, `${other}.1`);
    t.truthy(token);
    const attempts = () => delivered('/strict').filter((d) => d.event.type === 'session.created' && d.event.data.openid === simulatedOpenid(APPID, other));
    await delivery(() => attempts().length >= 3 || undefined, 'three attempts');
    await waitFor(async () => metricValue(await scrape(gw.url), 'wxgate_events_total', { type: 'session.created', outcome: 'gave_up' }) >= 1, { message: 'given up' });
    t.is(metricValue(await scrape(gw.url), 'wxgate_events_total', { type: 'session.created', outcome: 'gave_up' }), 1);
    await sleep(300); // a fourth attempt (backoff 50 ms) would have come by now
    t.is(attempts().length, 3, 'events.attempts, then no more');
    t.true(gw.logs.some((l) => l.includes('a login event was not delivered')), 'a warning');
  } finally {
    hooks.status = undefined;
    await gw.close();
  }
});

test.serial('a full queue drops new events (counted), never a login: events.queue bounds what waits', async (t) => {
  const prefix = `ev${++prefixes}:`;
  // the receiver never answers: the first events stay in flight and fill the queue
  const gw = await startTestGateway(config({ url: `${hooks.url}/x/hang`, queue: 2, timeout: '5s', attempts: 1 }, prefix));
  try {
    for (let i = 0; i < 6; i++) t.truthy(await login(gw.url, `ev-full${++users}.1`), `login ${i}`);
    await waitFor(async () => metricValue(await scrape(gw.url), 'wxgate_events_total', { type: 'session.created', outcome: 'dropped_queue_full' }) >= 1, { message: 'an event dropped' });
    const m = await scrape(gw.url);
    t.true(metricValue(m, 'wxgate_events_total', { type: 'session.created', outcome: 'dropped_queue_full' }) >= 1);
    t.true(metricValue(m, 'wxgate_events_pending', {}) <= 2);
    t.true(gw.logs.some((l) => l.includes('login events queue is full')));
  } finally {
    await gw.close();
  }
});

test('events config: url and a secret of 16+ characters, every problem named by its key', (t) => {
  const base = { server: { port: 0 }, wechat: { apps: [{ appid: APPID, secret: SECRET }] } };
  const err = t.throws(() => buildConfig({ ...base, events: { url: 'ftp://x', secret: 'short', attempts: 0, queue: -1 } }, 'test'));
  for (const key of ['events.url', 'events.secret', 'events.attempts', 'events.queue']) t.true(err!.message.includes(key), `${key}: ${err!.message}`);
  const ok = buildConfig({ ...base, events: { url: 'https://hooks.example/wx', secret: 'x'.repeat(16) } }, 'test');
  t.like(ok.events, { url: 'https://hooks.example/wx', timeout: 5000, attempts: 8, backoff: 1000, queue: 10_000 });
});

import test from 'ava';
import { createMetrics } from '../src/metrics/metrics.js';
import { MemoryStore } from '../src/session/memory-store.js';
import { Sessions } from '../src/session/sessions.js';
import { hashToken } from '../src/session/tokens.js';

const silent = { warn() {} };
const opts = { ttl: 60_000, maxAge: 600_000, refreshInterval: 10_000, maxPerUser: 10, cache: { max: 100, ttl: 60_000 } };

/** A memory store that counts reads and answers slowly, as a remote store would. */
class CountingStore extends MemoryStore {
  reads = 0;
  override async get(tokenHash: string) {
    this.reads++;
    await new Promise((r) => setTimeout(r, 30)); // the slow answer: a remote store's round trip
    return super.get(tokenHash);
  }
}

test('concurrent checks of one uncached token make one store read', async (t) => {
  const store = new CountingStore();
  const a = new Sessions(store, opts, createMetrics({ defaultMetrics: false }), silent);
  const { token } = await a.create({ appid: 'wx0123456789abcdef', openid: 'o-1' }, 'k', 'miniprogram');
  // a second replica on the same store: its LRU is cold
  const b = new Sessions(store, opts, createMetrics({ defaultMetrics: false }), silent);
  const results = await Promise.all(Array.from({ length: 50 }, () => b.authenticate(token)));
  t.true(results.every((r) => r?.openid === 'o-1'));
  t.is(store.reads, 1);
  await b.authenticate(token);
  t.is(store.reads, 1, 'then answered from the LRU');
  await store.close();
});

test('a revocation drops the cached copy at once', async (t) => {
  const store = new MemoryStore();
  const s = new Sessions(store, opts, createMetrics({ defaultMetrics: false }), silent);
  const { token } = await s.create({ appid: 'wx0123456789abcdef', openid: 'o-2' }, 'k', 'miniprogram');
  t.truthy(await s.authenticate(token));
  await store.revoke(hashToken(token));
  t.is(await s.authenticate(token), undefined);
  await store.close();
});

test('activity writes the idle deadline at most once per refreshInterval', async (t) => {
  let now = 1_000_000;
  const store = new MemoryStore(() => now);
  let touches = 0;
  const touch = store.touch.bind(store);
  store.touch = async (h, at) => {
    touches++;
    return touch(h, at);
  };
  const s = new Sessions(store, opts, createMetrics({ defaultMetrics: false }), silent, () => now);
  const { token } = await s.create({ appid: 'wx0123456789abcdef', openid: 'o-3' }, 'k', 'miniprogram');
  for (let i = 0; i < 100; i++) {
    now += 500; // 50 s of requests every half second
    t.truthy(await s.authenticate(token));
  }
  t.is(touches, 5, 'one write per 10 s');
  await store.close();
});

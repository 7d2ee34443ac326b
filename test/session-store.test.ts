import { randomBytes } from 'node:crypto';
import test from 'ava';
import { Redis } from 'ioredis';
import { MemoryStore } from '../src/session/memory-store.js';
import { RedisStore } from '../src/session/redis-store.js';
import { hashToken, newToken } from '../src/session/tokens.js';
import { StoreUnavailableError, type Invalidation, type SessionStore } from '../src/session/types.js';
import { startRedis, type RedisServer } from './helpers/redis.js';
import { ready, record, sleep, storeCases } from './helpers/store-cases.js';

/** The same cases run against both stores: they must behave alike. */
let redis: RedisServer;
test.before(async () => {
  redis = await startRedis();
});
test.after.always(async () => {
  await redis?.close();
});

function redisStore(prefix = `t${randomBytes(4).toString('hex')}:`): RedisStore {
  return new RedisStore({ url: redis.url, keyPrefix: prefix, connectTimeout: 1000, commandTimeout: 300 });
}

const stores: Record<string, () => Promise<SessionStore>> = {
  memory: async () => new MemoryStore(),
  redis: async () => {
    const s = redisStore();
    await ready(s);
    return s;
  },
};

for (const [kind, make] of Object.entries(stores)) storeCases(kind, make);

test('redis: a revocation on one replica reaches another within 200 ms', async (t) => {
  const prefix = `rep${randomBytes(3).toString('hex')}:`;
  const a = redisStore(prefix);
  const b = redisStore(prefix);
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  await ready(a);
  await ready(b);
  await sleep(100); // subscriptions in place
  const h = hashToken(newToken());
  await a.create(h, record('o-pub'), 'k', { maxPerUser: 10 });
  const got = new Promise<number>((resolve) => {
    const start = Date.now();
    b.onInvalidate((inv) => inv !== 'all' && inv.includes(h) && resolve(Date.now() - start));
  });
  await a.revoke(h);
  const ms = await Promise.race([got, sleep(1000).then(() => Infinity)]);
  t.log(`replica B heard of the revocation after ${ms} ms`);
  t.true(ms <= 200);
});

test('redis: the token itself is never stored, only its hash', async (t) => {
  const prefix = `raw${randomBytes(3).toString('hex')}:`;
  const store = redisStore(prefix);
  t.teardown(() => store.close());
  await ready(store);
  const token = newToken();
  await store.create(hashToken(token), record('o-raw'), 'sk', { maxPerUser: 10 });
  const client = new Redis(redis.url);
  t.teardown(() => client.disconnect());
  const keys = await client.keys(`${prefix}*`);
  t.true(keys.length >= 2);
  for (const k of keys) {
    t.false(k.includes(token));
    const type = await client.type(k);
    const dump = type === 'hash' ? JSON.stringify(await client.hgetall(k)) : String(await client.get(k));
    t.false(dump.includes(token));
  }
});

test.serial('redis: down → fast StoreUnavailableError; back → works again without a new store, caches told to drop all', async (t) => {
  const store = redisStore();
  t.teardown(() => store.close());
  await ready(store);
  const seen: Invalidation[] = [];
  store.onInvalidate((inv) => seen.push(inv));
  const h = hashToken(newToken());
  await store.create(h, record('o-down'), 'k', { maxPerUser: 10 });

  await redis.stop();
  const start = Date.now();
  const err = await t.throwsAsync(store.get(h), { instanceOf: StoreUnavailableError });
  t.true(Date.now() - start < 1000, `failed in ${Date.now() - start} ms`);
  t.notRegex(err!.message, new RegExp(h));

  await redis.start();
  const deadline = Date.now() + 8000;
  let back = false;
  while (!back && Date.now() < deadline) {
    try {
      await store.ping();
      back = true;
    } catch {
      await sleep(50);
    }
  }
  t.true(back, 'reconnected by itself');
  t.is(await store.get(h), undefined, 'redis kept nothing (no persistence in tests)');
  t.true(seen.includes('all'));
});

test.serial('redis: blackholed (no answer, no RST) → StoreUnavailableError after commandTimeout, not a hang', async (t) => {
  const store = redisStore();
  t.teardown(() => store.close());
  await ready(store);
  const h = hashToken(newToken());
  await store.create(h, record('o-blackhole'), 'k', { maxPerUser: 10 });
  redis.pause();
  try {
    const start = Date.now();
    await t.throwsAsync(store.get(h), { instanceOf: StoreUnavailableError });
    const took = Date.now() - start;
    t.true(took >= 250 && took < 1000, `gave up after ${took} ms (commandTimeout 300 ms)`);
  } finally {
    redis.resume();
  }
  let back;
  for (let i = 0; i < 100 && !back; i++) {
    back = await store.get(h).catch(() => undefined);
    if (!back) await sleep(50);
  }
  t.is(back?.openid, 'o-blackhole', 'the session Redis kept is still there');
});

test.serial('redis: memory per stored session (10,000 sessions of distinct users)', async (t) => {
  const prefix = 'w:';
  const store = redisStore(prefix);
  t.teardown(() => store.close());
  await ready(store);
  const client = new Redis(redis.url);
  t.teardown(() => client.disconnect());
  await client.flushall();
  const used = async () => Number(/used_memory:(\d+)/.exec(await client.info('memory'))![1]);
  const before = await used();
  const n = 10_000;
  for (let i = 0; i < n; i += 200) {
    await Promise.all(
      Array.from({ length: 200 }, (_, j) =>
        store.create(hashToken(newToken()), { ...record(`o${randomBytes(20).toString('base64url').slice(0, 27)}`), unionid: undefined }, randomBytes(16).toString('base64'), { maxPerUser: 10 }),
      ),
    );
  }
  const perSession = ((await used()) - before) / n;
  t.log(`redis used_memory per session: ${perSession.toFixed(0)} bytes`);
  t.true(perSession < 600, `${perSession} bytes`);
});

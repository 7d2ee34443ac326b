import { randomBytes } from 'node:crypto';
import test, { type ExecutionContext } from 'ava';
import { Redis } from 'ioredis';
import { MemoryStore } from '../src/session/memory-store.js';
import { RedisStore } from '../src/session/redis-store.js';
import { hashToken, newToken } from '../src/session/tokens.js';
import { StoreUnavailableError, type Invalidation, type SessionRecord, type SessionStore } from '../src/session/types.js';
import { startRedis, type RedisServer } from './helpers/redis.js';

/** The same cases run against both stores: they must behave alike. */
let redis: RedisServer;
test.before(async () => {
  redis = await startRedis();
});
test.after.always(async () => {
  await redis?.close();
});

const APP = 'wx0123456789abcdef';
const OTHER_APP = 'wxfedcba9876543210';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function redisStore(prefix = `t${randomBytes(4).toString('hex')}:`): RedisStore {
  return new RedisStore({ url: redis.url, keyPrefix: prefix, connectTimeout: 1000, commandTimeout: 300 });
}

async function ready(store: SessionStore): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      return await store.ping();
    } catch {
      await sleep(20);
    }
  }
}

function record(openid: string, opts: { appid?: string; idleMs?: number; maxMs?: number; createdAt?: number } = {}): SessionRecord {
  const now = opts.createdAt ?? Date.now();
  return {
    appid: opts.appid ?? APP,
    openid,
    createdAt: now,
    expiresAt: now + (opts.maxMs ?? 60_000),
    idleExpiresAt: now + Math.min(opts.idleMs ?? 30_000, opts.maxMs ?? 60_000),
  };
}

const stores: Record<string, () => Promise<SessionStore>> = {
  memory: async () => new MemoryStore(),
  redis: async () => {
    const s = redisStore();
    await ready(s);
    return s;
  },
};

type Case = (t: ExecutionContext, store: SessionStore) => Promise<void>;
const cases: Record<string, Case> = {
  'create then get returns the record; an unknown hash is undefined': async (t, store) => {
    const h = hashToken(newToken());
    const r = { ...record('o-alice'), unionid: 'o-union-alice' };
    await store.create(h, r, 'key-1', { maxPerUser: 10 });
    t.deepEqual(await store.get(h), r);
    t.is(await store.get(hashToken(newToken())), undefined);
  },
  'past the idle deadline a session is gone': async (t, store) => {
    const h = hashToken(newToken());
    await store.create(h, record('o-idle', { idleMs: 300 }), 'k', { maxPerUser: 10 });
    t.truthy(await store.get(h));
    await sleep(450);
    t.is(await store.get(h), undefined);
  },
  'past the absolute deadline a session is gone, whatever its idle deadline': async (t, store) => {
    const h = hashToken(newToken());
    const r = record('o-abs', { idleMs: 5000, maxMs: 300 });
    await store.create(h, { ...r, idleExpiresAt: r.createdAt + 5000 }, 'k', { maxPerUser: 10 });
    await sleep(450);
    t.is(await store.get(h), undefined);
  },
  'touch moves the idle deadline; touching a missing session is false': async (t, store) => {
    const h = hashToken(newToken());
    const r = record('o-touch', { idleMs: 300 });
    await store.create(h, r, 'k', { maxPerUser: 10 });
    t.true(await store.touch(h, Date.now() + 1000));
    await sleep(450);
    const got = await store.get(h);
    t.truthy(got, 'alive past the old idle deadline');
    t.true(got!.idleExpiresAt > r.idleExpiresAt);
    t.false(await store.touch(hashToken(newToken()), Date.now() + 1000));
  },
  'revoke kills a session and tells the listeners': async (t, store) => {
    const seen: Invalidation[] = [];
    store.onInvalidate((inv) => seen.push(inv));
    const h = hashToken(newToken());
    await store.create(h, record('o-rev'), 'k', { maxPerUser: 10 });
    t.true(await store.revoke(h));
    t.is(await store.get(h), undefined);
    t.false(await store.revoke(h));
    t.true(seen.some((inv) => inv !== 'all' && inv.includes(h)));
  },
  'revokeAll kills every session of one user only: (appid, openid) is the identity': async (t, store) => {
    const mine = [hashToken(newToken()), hashToken(newToken())];
    const otherUser = hashToken(newToken());
    const sameOpenidOtherApp = hashToken(newToken());
    for (const h of mine) await store.create(h, record('o-all'), 'k', { maxPerUser: 10 });
    await store.create(otherUser, record('o-someone'), 'k', { maxPerUser: 10 });
    await store.create(sameOpenidOtherApp, record('o-all', { appid: OTHER_APP }), 'k', { maxPerUser: 10 });
    t.is(await store.revokeAll(APP, 'o-all'), 2);
    for (const h of mine) t.is(await store.get(h), undefined);
    t.truthy(await store.get(otherUser));
    t.truthy(await store.get(sameOpenidOtherApp));
    t.is(await store.revokeAll(APP, 'o-nobody'), 0);
  },
  'beyond maxPerUser the oldest sessions are revoked and returned': async (t, store) => {
    const hs = [1, 2, 3, 4].map(() => hashToken(newToken()));
    const now = Date.now();
    const evicted: string[] = [];
    for (const [i, h] of hs.entries()) evicted.push(...(await store.create(h, record('o-max', { createdAt: now + i }), 'k', { maxPerUser: 2 })));
    t.deepEqual(evicted, [hs[0], hs[1]]);
    t.is(await store.get(hs[0]!), undefined);
    t.deepEqual(
      (await store.list(APP, 'o-max')).map((s) => s.tokenHash),
      [hs[2], hs[3]],
      'list is oldest first, live only',
    );
  },
  'the session_key is the one from the latest login': async (t, store) => {
    await store.create(hashToken(newToken()), record('o-key'), 'first-key', { maxPerUser: 10 });
    await store.create(hashToken(newToken()), record('o-key'), 'second-key', { maxPerUser: 10 });
    t.is(await store.getSessionKey(APP, 'o-key'), 'second-key');
    t.is(await store.getSessionKey(OTHER_APP, 'o-key'), undefined);
  },
};

for (const [kind, make] of Object.entries(stores)) {
  for (const [name, run] of Object.entries(cases)) {
    test(`${kind}: ${name}`, async (t) => {
      const store = await make();
      t.teardown(() => store.close());
      await run(t, store);
    });
  }
}

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

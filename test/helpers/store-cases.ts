import test, { type ExecutionContext } from 'ava';
import { hashToken, newToken } from '../../src/session/tokens.js';
import type { Invalidation, SessionRecord, SessionStore } from '../../src/session/types.js';

/** What every session store must do alike: registered against each store and each Redis topology. */
export const APP = 'wx0123456789abcdef';
export const OTHER_APP = 'wxfedcba9876543210';
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until a store answers (a Redis store connects in the background). */
export async function ready(store: SessionStore): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      return await store.ping();
    } catch {
      await sleep(25);
    }
  }
}

export function record(openid: string, opts: { appid?: string; idleMs?: number; maxMs?: number; createdAt?: number } = {}): SessionRecord {
  const now = opts.createdAt ?? Date.now();
  return {
    appid: opts.appid ?? APP,
    openid,
    createdAt: now,
    expiresAt: now + (opts.maxMs ?? 60_000),
    idleExpiresAt: now + Math.min(opts.idleMs ?? 30_000, opts.maxMs ?? 60_000),
  };
}

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
  'setPhone keeps the number with the session (with or without unionid), through touch, and tells the caches': async (t, store) => {
    const seen: Invalidation[] = [];
    store.onInvalidate((inv) => seen.push(inv));
    for (const r of [{ ...record('o-phone-u'), unionid: 'o-union-phone' }, record('o-phone')]) {
      const h = hashToken(newToken());
      await store.create(h, r, 'k', { maxPerUser: 10 });
      t.true(await store.setPhone(h, '+8613800138000'));
      t.deepEqual(await store.get(h), { ...r, phone: '+8613800138000' });
      t.true(await store.setPhone(h, '+12025550123'), 'a newer number replaces the old one');
      const idle = Date.now() + 45_000; // later than the 30 s it has, before the 60 s deadline
      t.true(await store.touch(h, idle));
      t.deepEqual(await store.get(h), { ...r, phone: '+12025550123', idleExpiresAt: idle });
      t.is((await store.list(r.appid, r.openid))[0]?.record.phone, '+12025550123');
      t.true(seen.some((inv) => inv !== 'all' && inv.includes(h)), 'the caches are told');
    }
    t.false(await store.setPhone(hashToken(newToken()), '+8613800138000'), 'no such session');
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

/** Registers every case against stores made by `make`. */
export function storeCases(kind: string, make: () => Promise<SessionStore>): void {
  for (const [name, run] of Object.entries(cases)) {
    test(`${kind}: ${name}`, async (t) => {
      const store = await make();
      t.teardown(() => store.close());
      await run(t, store);
    });
  }
}

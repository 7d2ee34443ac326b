import test, { type ExecutionContext } from 'ava';
import { accountId } from '../../src/session/accounts.js';
import { hashToken, newToken, userId } from '../../src/session/tokens.js';
import { sleep, waitFor } from './wait.js';
import { FLOWS, type Flow, type Invalidation, type KeptPhone, type SessionRecord, type SessionStore } from '../../src/session/types.js';

/** What every session store must do alike: registered against each store and each Redis topology. */
export const APP = 'wx0123456789abcdef';
export const OTHER_APP = 'wxfedcba9876543210';

/**
 * How a case lets time pass: a memory store runs on a fake clock (`new MemoryStore({ now })`), moved at
 * once; a Redis store's deadlines are Redis's own TTLs, which no fake clock moves: real time, kept short.
 */
export interface Clock {
  now(): number;
  pass(ms: number): Promise<void>;
}
export const realTime = (): Clock => ({ now: () => Date.now(), pass: (ms) => sleep(ms) });
export function fakeClock(): Clock {
  let now = Date.now();
  return { now: () => now, pass: async (ms) => void (now += Math.max(0, ms)) };
}
export type MakeStore = (clock: Clock) => Promise<SessionStore>;

/** Waits until a store answers (a Redis store connects in the background). */
export async function ready(store: SessionStore): Promise<void> {
  await waitFor(() => store.ping().then(() => true), { interval: 25, message: 'the store answers' });
}

/** The hash of a new token of the user (appid defaults to APP), as Sessions makes it at login. */
export function hashFor(openid: string, appid = APP): string {
  return hashToken(newToken({ appid, openid }));
}

export function record(openid: string, opts: { appid?: string; idleMs?: number; maxMs?: number; createdAt?: number; flow?: Flow } = {}): SessionRecord {
  const now = opts.createdAt ?? Date.now();
  return {
    appid: opts.appid ?? APP,
    openid,
    flow: opts.flow ?? 'miniprogram',
    createdAt: now,
    expiresAt: now + (opts.maxMs ?? 60_000),
    idleExpiresAt: now + Math.min(opts.idleMs ?? 30_000, opts.maxMs ?? 60_000),
  };
}

/** A number as WeChat gives it, kept with the user. */
export const PHONE: KeptPhone = { phoneNumber: '13800138000', purePhoneNumber: '13800138000', countryCode: '86', grantedAt: 1_700_000_000_000 };
export const OTHER_PHONE: KeptPhone = { phoneNumber: '+1 2025550123', purePhoneNumber: '2025550123', countryCode: '1', grantedAt: 1_700_000_100_000 };

export type Case = (t: ExecutionContext, store: SessionStore, clock: Clock) => Promise<void>;
const cases: Record<string, Case> = {
  'create then get returns the record; an unknown hash is undefined': async (t, store) => {
    const h = hashFor('o-alice');
    const r = { ...record('o-alice'), unionid: 'o-union-alice' };
    await store.create(h, r, 'key-1', { maxPerUser: 10 });
    t.deepEqual(await store.get(h), r);
    t.is(await store.get(hashFor('o-alice')), undefined, "another token of the same user's");
    t.is(await store.get(hashFor('o-nobody')), undefined, 'a token of an unknown user');
  },
  'past the idle deadline a session is gone': async (t, store, clock) => {
    const h = hashFor('o-idle');
    await store.create(h, record('o-idle', { idleMs: 300, createdAt: clock.now() }), 'k', { maxPerUser: 10 });
    t.truthy(await store.get(h));
    await clock.pass(450);
    t.is(await store.get(h), undefined);
  },
  'past the absolute deadline a session is gone, whatever its idle deadline': async (t, store, clock) => {
    const h = hashFor('o-abs');
    const r = record('o-abs', { idleMs: 5000, maxMs: 300, createdAt: clock.now() });
    await store.create(h, { ...r, idleExpiresAt: r.createdAt + 5000 }, 'k', { maxPerUser: 10 });
    await clock.pass(450);
    t.is(await store.get(h), undefined);
  },
  "setPhone keeps the number with the user: every session of theirs has it, a later one too, through touch and list; the caches are told": async (t, store) => {
    const seen: Invalidation[] = [];
    store.onInvalidate((inv) => seen.push(inv));
    const told = (h: string) => seen.some((inv) => inv !== 'all' && inv.includes(h));
    for (const r of [{ ...record('o-phone-u'), unionid: 'o-union-phone' }, record('o-phone')]) {
      const first = hashFor(r.openid);
      await store.create(first, r, 'k', { maxPerUser: 10 });
      t.is(await store.getPhone(r.appid, r.openid), undefined, 'none before it is granted');
      t.true(await store.setPhone(r.appid, r.openid, PHONE));
      t.deepEqual(await store.get(first), { ...r, phone: '+8613800138000' });
      t.deepEqual(await store.getPhone(r.appid, r.openid), PHONE);
      t.true(told(first), 'the caches are told');
      // a later session of the same user (another device) has it without asking
      const later = hashFor(r.openid);
      const r2 = { ...r, createdAt: r.createdAt + 1 };
      await store.create(later, r2, 'k2', { maxPerUser: 10 });
      t.deepEqual(await store.get(later), { ...r2, phone: '+8613800138000' });
      seen.length = 0;
      t.true(await store.setPhone(r.appid, r.openid, OTHER_PHONE), 'a newer number replaces the old one');
      t.true(told(first) && told(later), "the caches of every session of the user's are told");
      const idle = Date.now() + 45_000; // later than the 30 s it has, before the 60 s deadline
      t.true(await store.touch(first, idle));
      t.deepEqual(await store.get(first), { ...r, phone: '+12025550123', idleExpiresAt: idle });
      t.deepEqual(
        (await store.list(r.appid, r.openid)).map((s) => s.record.phone),
        ['+12025550123', '+12025550123'],
      );
      t.deepEqual(await store.getPhone(r.appid, r.openid), OTHER_PHONE);
    }
    // the user is (appid, openid): the same openid in another app is someone else
    const elsewhere = record('o-phone', { appid: OTHER_APP });
    const h = hashFor('o-phone', OTHER_APP);
    await store.create(h, elsewhere, 'k', { maxPerUser: 10 });
    t.deepEqual(await store.get(h), elsewhere);
    t.is(await store.getPhone(OTHER_APP, 'o-phone'), undefined);
    t.false(await store.setPhone(APP, 'o-phone-nobody', PHONE), 'no session of the user: nothing kept');
    t.is(await store.getPhone(APP, 'o-phone-nobody'), undefined);
  },
  "clearPhone forgets the user's number in every session; so do revokeAll and the user's last session ending": async (t, store) => {
    const seen: Invalidation[] = [];
    store.onInvalidate((inv) => seen.push(inv));
    const [one, two] = [hashFor('o-unphone'), hashFor('o-unphone')];
    const r = record('o-unphone');
    await store.create(one!, r, 'k', { maxPerUser: 10 });
    await store.create(two!, r, 'k', { maxPerUser: 10 });
    t.true(await store.setPhone(APP, 'o-unphone', PHONE));
    seen.length = 0;
    t.true(await store.clearPhone(APP, 'o-unphone'));
    t.true(seen.some((inv) => inv !== 'all' && inv.includes(one!) && inv.includes(two!)), 'the caches of every session are told');
    t.deepEqual(await store.get(one!), r);
    t.deepEqual(await store.get(two!), r);
    t.is(await store.getPhone(APP, 'o-unphone'), undefined);
    t.false(await store.clearPhone(APP, 'o-unphone'), 'nothing left to forget');
    t.false(await store.clearPhone(APP, 'o-unphone-nobody'));

    t.true(await store.setPhone(APP, 'o-unphone', PHONE));
    t.is(await store.revokeAll(APP, 'o-unphone'), 2);
    const next = hashFor('o-unphone');
    await store.create(next, r, 'k', { maxPerUser: 10 });
    t.is(await store.getPhone(APP, 'o-unphone'), undefined, 'gone with the revoked sessions');
    t.deepEqual(await store.get(next), r);

    t.true(await store.setPhone(APP, 'o-unphone', PHONE));
    t.true(await store.revoke(next));
    await store.create(hashFor('o-unphone'), r, 'k', { maxPerUser: 10 });
    t.is(await store.getPhone(APP, 'o-unphone'), undefined, "gone with the user's last session");
  },
  "every flow is kept with its session, through setPhone, touch and list (it decides what the session may do)": async (t, store) => {
    for (const flow of FLOWS) {
      const r = { ...record(`o-flow-${flow}`, { flow }), unionid: `o-union-${flow}` };
      const h = hashFor(r.openid);
      await store.create(h, r, flow === 'miniprogram' ? 'k' : undefined, { maxPerUser: 10 });
      t.deepEqual(await store.get(h), r, flow);
      t.true(await store.setPhone(r.appid, r.openid, PHONE));
      const idle = Date.now() + 45_000;
      t.true(await store.touch(h, idle));
      t.deepEqual(await store.get(h), { ...r, phone: '+8613800138000', idleExpiresAt: idle }, `${flow}: after setPhone and touch`);
      t.is((await store.list(r.appid, r.openid))[0]?.record.flow, flow, `${flow}: list`);
    }
  },
  "an account's identities: every identity that logged in with its unionid; an identity without one is its own account": async (t, store) => {
    const union = 'o-union-acct';
    const mini = { ...record('o-acct-mini'), unionid: union };
    const web = { ...record('o-acct-web', { appid: OTHER_APP, flow: 'mp' }), unionid: union };
    const solo = record('o-acct-solo');
    await store.create(hashFor(mini.openid), mini, 'k', { maxPerUser: 10 });
    await store.create(hashFor(web.openid, OTHER_APP), web, undefined, { maxPerUser: 10 });
    await store.create(hashFor(solo.openid), solo, 'k', { maxPerUser: 10 });
    const sort = <T extends { openid: string }>(l: T[]) => [...l].sort((x, y) => (x.openid < y.openid ? -1 : 1));
    t.deepEqual(
      sort(await store.identities(accountId(mini))),
      sort([{ appid: APP, openid: mini.openid, unionid: union }, { appid: OTHER_APP, openid: web.openid, unionid: union }]),
    );
    t.is(accountId(web), accountId(mini), 'one id for the unionid');
    t.deepEqual(await store.identities(accountId(solo)), [{ appid: APP, openid: solo.openid }]);
    t.deepEqual(await store.identities(accountId({ appid: APP, openid: mini.openid })), [], 'the identity has a unionid: not an account of its own');
    t.deepEqual(await store.identities(accountId({ appid: APP, openid: 'o-nobody' })), []);
    t.deepEqual(await store.identities(accountId({ appid: APP, openid: 'x', unionid: 'o-union-nobody' })), []);
    t.deepEqual(await store.identities('not an id'), []);
    t.is(await store.linkedUnionid(APP, mini.openid), union);
    t.is(await store.linkedUnionid(APP, solo.openid), undefined);
    t.is(await store.linkedUnionid(OTHER_APP, mini.openid), undefined, 'the same openid in another app is another identity');
    await store.revokeAll(APP, mini.openid);
    t.is(await store.linkedUnionid(APP, mini.openid), undefined, 'forgotten with its last session');
    t.deepEqual(await store.identities(accountId(mini)), [{ appid: OTHER_APP, openid: web.openid, unionid: union }], 'an identity is listed while it has a session');
  },
  'touch moves the idle deadline; touching a missing session is false': async (t, store, clock) => {
    const h = hashFor('o-touch');
    const r = record('o-touch', { idleMs: 300, createdAt: clock.now() });
    await store.create(h, r, 'k', { maxPerUser: 10 });
    t.true(await store.touch(h, clock.now() + 1000));
    await clock.pass(450);
    const got = await store.get(h);
    t.truthy(got, 'alive past the old idle deadline');
    t.true(got!.idleExpiresAt > r.idleExpiresAt);
    t.false(await store.touch(hashFor('o-touch'), clock.now() + 1000));
  },
  'revoke kills a session and tells the listeners': async (t, store) => {
    const seen: Invalidation[] = [];
    store.onInvalidate((inv) => seen.push(inv));
    const h = hashFor('o-rev');
    await store.create(h, record('o-rev'), 'k', { maxPerUser: 10 });
    t.true(await store.revoke(h));
    t.is(await store.get(h), undefined);
    t.false(await store.revoke(h));
    t.true(seen.some((inv) => inv !== 'all' && inv.includes(h)));
  },
  'revokeAll kills every session of one user only: (appid, openid) is the identity': async (t, store) => {
    const mine = [hashFor('o-all'), hashFor('o-all')];
    const otherUser = hashFor('o-someone');
    const sameOpenidOtherApp = hashFor('o-all', OTHER_APP);
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
    const hs = [1, 2, 3, 4].map(() => hashFor('o-max'));
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
    await store.create(hashFor('o-key'), record('o-key'), 'first-key', { maxPerUser: 10 });
    await store.create(hashFor('o-key'), record('o-key'), 'second-key', { maxPerUser: 10 });
    t.is(await store.getSessionKey(APP, 'o-key'), 'second-key');
    t.is(await store.getSessionKey(OTHER_APP, 'o-key'), undefined);
  },
  "a hash that names another user's id is refused at create, and that user is left intact": async (t, store) => {
    const mine = hashFor('o-col-a');
    const r = { ...record('o-col-a'), unionid: 'o-union-col-a' };
    await store.create(mine, r, 'key-a', { maxPerUser: 10 });
    // what a collision of the two users' ids would look like to the store: B's session under A's id
    const forged = userId(APP, 'o-col-a') + hashFor('o-col-b').slice(16);
    t.is(forged.slice(0, 16), mine.slice(0, 16));
    await t.throwsAsync(store.create(forged, record('o-col-b'), 'key-b', { maxPerUser: 1 }));
    t.deepEqual(await store.get(mine), r, "A's session is still A's");
    t.deepEqual((await store.list(APP, 'o-col-a')).map((s) => s.tokenHash), [mine], 'nothing was evicted, nothing added');
    t.is(await store.getSessionKey(APP, 'o-col-a'), 'key-a', "A's session_key is not B's");
    t.is(await store.get(forged), undefined);
    t.deepEqual(await store.list(APP, 'o-col-b'), []);
    t.is(await store.getSessionKey(APP, 'o-col-b'), undefined);
    await t.throwsAsync(store.create(hashFor('o-col-b').slice(0, 30), record('o-col-b'), 'key-b', { maxPerUser: 1 }), undefined, 'a truncated hash');
  },
  "a hash whose user id part is someone else's finds nothing, and changes nothing": async (t, store) => {
    const a = newToken({ appid: APP, openid: 'o-cross-a' });
    const b = newToken({ appid: APP, openid: 'o-cross-b' });
    const ra = record('o-cross-a');
    const rb = record('o-cross-b');
    await store.create(hashToken(a), ra, 'key-a', { maxPerUser: 10 });
    await store.create(hashToken(b), rb, 'key-b', { maxPerUser: 10 });
    const forgedHashes = [
      a.slice(0, 16) + hashToken(b).slice(16), // B's session looked up under A's id
      b.slice(0, 16) + hashToken(a).slice(16), // and the other way round
      hashToken(a.slice(0, 16) + b.slice(16)), // B's random part behind A's id, as a client could send it
      hashToken(b.slice(0, 16) + a.slice(16)),
    ];
    for (const h of forgedHashes) {
      t.is(await store.get(h), undefined);
      t.false(await store.touch(h, Date.now() + 45_000));
      t.false(await store.revoke(h));
    }
    t.deepEqual(await store.get(hashToken(a)), ra);
    t.deepEqual(await store.get(hashToken(b)), rb);
    t.is(await store.getSessionKey(APP, 'o-cross-a'), 'key-a');
    t.is(await store.getSessionKey(APP, 'o-cross-b'), 'key-b');
  },
  "after the user's last session is revoked or idles out, nothing of the user is left": async (t, store, clock) => {
    const [one, two] = [hashFor('o-last'), hashFor('o-last')];
    await store.create(one!, record('o-last'), 'k-last', { maxPerUser: 10 });
    await store.create(two!, record('o-last'), 'k-last', { maxPerUser: 10 });
    t.true(await store.revoke(one!));
    t.is(await store.getSessionKey(APP, 'o-last'), 'k-last', 'kept while a session lives');
    t.true(await store.revoke(two!));
    t.is(await store.getSessionKey(APP, 'o-last'), undefined, 'gone with the last session');
    t.deepEqual(await store.list(APP, 'o-last'), []);
    t.is(await store.revokeAll(APP, 'o-last'), 0);

    const idle = hashFor('o-idle-out');
    await store.create(idle, record('o-idle-out', { idleMs: 300, createdAt: clock.now() }), 'k-idle', { maxPerUser: 10 });
    t.is(await store.getSessionKey(APP, 'o-idle-out'), 'k-idle');
    await clock.pass(450);
    t.is(await store.getSessionKey(APP, 'o-idle-out'), undefined, 'gone at the idle deadline');
    t.deepEqual(await store.list(APP, 'o-idle-out'), []);
  },
};

/** Registers every case (and `more`) against stores made by `make`, on the clock `clock` makes. */
export function storeCases(kind: string, make: MakeStore, clock: () => Clock = realTime, more: Record<string, Case> = {}): void {
  for (const [name, run] of Object.entries({ ...cases, ...more })) {
    test(`${kind}: ${name}`, async (t) => {
      const c = clock();
      const store = await make(c);
      t.teardown(() => store.close());
      await run(t, store, c);
    });
  }
}

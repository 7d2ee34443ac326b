import { randomBytes } from 'node:crypto';
import type { Metrics } from '../metrics/metrics.js';
import type { RedisClient } from '../session/redis-store.js';
import { StoreUnavailableError } from '../session/types.js';
import type { AccessTokenAnswer, WechatClient } from './client.js';
import { hintFor, isPassing, isTokenError } from './errcodes.js';
import { WechatError } from './types.js';

/**
 * The apps' access_tokens (WeChat's credential for its server APIs), one per appid, shared by every
 * replica:
 *   - fetched with `cgi-bin/stable_token` (or `cgi-bin/token`, per app `tokenSource`), by one replica at a
 *     time: a lock in the store (SET NX PX) and the token read again after taking it;
 *   - kept in the process and in the store (Redis, or memory with the memory session store), so a
 *     restart or another replica reuses it instead of spending WeChat's daily quota;
 *   - refreshed in the background when less than min(5 min, half its life) is left; readers keep the
 *     still-valid token meanwhile and never wait for the lock;
 *   - when WeChat rejects it (40001, 40014, 42001), the stored token is deleted only if it is still the
 *     one that failed (compare-and-delete), it is fetched again once, and only if that does not help,
 *     with force_refresh (at most once per 30 s per app, across replicas);
 *   - tokenSource `external`: read from a Redis key or a URL another system owns; never fetched here.
 * Tokens and secrets are never logged.
 */

export type TokenSource = 'stable_token' | 'token' | 'external';

export interface TokenApp {
  appid: string;
  tokenSource?: TokenSource;
  externalToken?: { redisKey?: string; url?: string };
}

/** A token as kept in the store: times in ms since epoch. */
export interface StoredToken {
  token: string;
  expiresAt: number;
  /** when it was fetched from WeChat (by whichever replica) */
  fetchedAt: number;
}

/** The shared part: where the token, the refresh lock and the force_refresh rate limit live. */
export interface TokenStore {
  get(appid: string): Promise<StoredToken | undefined>;
  put(appid: string, t: StoredToken): Promise<void>;
  /** Deletes the stored token only if it is still `token`. True when it was deleted. */
  invalidate(appid: string, token: string): Promise<boolean>;
  /** Takes the app's refresh lock for `ms` (SET NX PX). */
  lock(appid: string, owner: string, ms: number): Promise<boolean>;
  /** Releases the lock if `owner` still holds it. */
  unlock(appid: string, owner: string): Promise<void>;
  /** True at most once per `ms` per app. */
  forceSlot(appid: string, ms: number): Promise<boolean>;
}

/** No usable access_token for the app (WeChat refused to give one, the external source has none, ...). */
export class AccessTokenError extends Error {
  constructor(
    readonly appid: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'AccessTokenError';
  }
}

const CAD_TOKEN = `local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v).t == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;
const CAD_LOCK = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

/** Tokens in Redis: `{prefix}wxtoken:{appid}` (JSON, expiring with the token), `…-lock:`, `…-force:`. */
export class RedisTokenStore implements TokenStore {
  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
  ) {}

  private key(kind: string, appid: string) {
    return `${this.prefix}wxtoken${kind}:${appid}`;
  }

  private async run<T>(op: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      // never the error itself: ioredis attaches the command's arguments (the token) to it
      throw new StoreUnavailableError(`redis ${op} failed${(err as Error)?.name ? ` (${(err as Error).name})` : ''}`);
    }
  }

  async get(appid: string): Promise<StoredToken | undefined> {
    const v = await this.run('token get', () => this.redis.get(this.key('', appid)));
    if (!v) return undefined;
    try {
      const o = JSON.parse(v) as { t?: unknown; e?: unknown; f?: unknown };
      if (typeof o.t !== 'string' || typeof o.e !== 'number' || typeof o.f !== 'number') return undefined;
      return { token: o.t, expiresAt: o.e, fetchedAt: o.f };
    } catch {
      return undefined;
    }
  }

  async put(appid: string, t: StoredToken): Promise<void> {
    const value = JSON.stringify({ t: t.token, e: t.expiresAt, f: t.fetchedAt });
    await this.run('token put', () => this.redis.set(this.key('', appid), value, 'PXAT', Math.floor(t.expiresAt)));
  }

  async invalidate(appid: string, token: string): Promise<boolean> {
    return (await this.run('token invalidate', () => this.redis.eval(CAD_TOKEN, 1, this.key('', appid), token))) === 1;
  }

  async lock(appid: string, owner: string, ms: number): Promise<boolean> {
    return (await this.run('token lock', () => this.redis.set(this.key('-lock', appid), owner, 'PX', ms, 'NX'))) === 'OK';
  }

  async unlock(appid: string, owner: string): Promise<void> {
    await this.run('token unlock', () => this.redis.eval(CAD_LOCK, 1, this.key('-lock', appid), owner));
  }

  async forceSlot(appid: string, ms: number): Promise<boolean> {
    return (await this.run('token force', () => this.redis.set(this.key('-force', appid), '1', 'PX', ms, 'NX'))) === 'OK';
  }
}

/** The same in this process (memory session store: one replica). */
export class MemoryTokenStore implements TokenStore {
  private readonly tokens = new Map<string, StoredToken>();
  private readonly marks = new Map<string, { owner: string; until: number }>();

  private take(key: string, owner: string, ms: number): boolean {
    const m = this.marks.get(key);
    if (m && m.until > Date.now()) return false;
    this.marks.set(key, { owner, until: Date.now() + ms });
    return true;
  }

  async get(appid: string) {
    const t = this.tokens.get(appid);
    if (t && t.expiresAt <= Date.now()) this.tokens.delete(appid);
    return this.tokens.get(appid);
  }
  async put(appid: string, t: StoredToken) {
    this.tokens.set(appid, t);
  }
  async invalidate(appid: string, token: string) {
    if (this.tokens.get(appid)?.token !== token) return false;
    return this.tokens.delete(appid);
  }
  async lock(appid: string, owner: string, ms: number) {
    return this.take(`lock:${appid}`, owner, ms);
  }
  async unlock(appid: string, owner: string) {
    if (this.marks.get(`lock:${appid}`)?.owner === owner) this.marks.delete(`lock:${appid}`);
  }
  async forceSlot(appid: string, ms: number) {
    return this.take(`force:${appid}`, '', ms);
  }
}

interface Logger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface AccessTokenOptions {
  apps: ReadonlyArray<TokenApp>;
  wechat: WechatClient;
  store: TokenStore;
  metrics: Metrics;
  log: Logger;
  /** wechat.timeout, ms: bounds the lock's life and the external URL's answer */
  timeout: number;
  /** the session store's Redis, for externalToken.redisKey */
  redis?: RedisClient;
  /** refresh when less than min(this, half the token's life) is left; default 5 min (as WeChat's stable_token renews) */
  refreshBefore?: number;
  /** force_refresh at most this often per app; default 30 s (WeChat allows 20 a day) */
  forceInterval?: number;
  /** waits before the 2nd and 3rd stable_token try, ms (±50% jitter); default [200, 600] */
  retryDelays?: number[];
  /** how often an external token is read again, ms; default 60 s */
  externalRecheck?: number;
}

/** A token this replica uses, with its own schedule. */
interface Entry extends StoredToken {
  /** from then on a background refresh is due */
  refreshAt: number;
  /** after this the token is not handed out any more (a little before expiresAt) */
  usableUntil: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const jitter = (ms: number) => ms * (0.5 + Math.random());

export class AccessTokens {
  private readonly apps: Map<string, TokenApp>;
  private readonly local = new Map<string, Entry>();
  private readonly loading = new Map<string, Promise<Entry>>();
  private readonly refreshing = new Map<string, Promise<void>>();
  private readonly nextTry = new Map<string, number>();
  private readonly lockMs: number;
  private readonly refreshBefore: number;
  private readonly forceInterval: number;
  private readonly retryDelays: number[];
  private closed = false;

  constructor(private readonly opts: AccessTokenOptions) {
    this.apps = new Map(opts.apps.map((a) => [a.appid, a]));
    this.refreshBefore = opts.refreshBefore ?? 5 * 60_000;
    this.forceInterval = opts.forceInterval ?? 30_000;
    this.retryDelays = opts.retryDelays ?? [200, 600];
    // long enough for every stable_token try and the waits between them
    this.lockMs = (this.retryDelays.length + 1) * opts.timeout + this.retryDelays.reduce((a, b) => a + 1.5 * b, 0) + 1000;
  }

  has(appid: string): boolean {
    return this.apps.has(appid);
  }

  /**
   * A valid token for the app. Answered from the process when it holds one (starting a background
   * refresh when one is due); otherwise from the store, or fetched by one replica while the others wait.
   * Throws AccessTokenError, or StoreUnavailableError when the store cannot say.
   */
  async get(appid: string): Promise<StoredToken> {
    if (!this.apps.has(appid)) throw new AccessTokenError(appid, 'unknown appid');
    const now = Date.now();
    const local = this.local.get(appid);
    if (local && now < local.usableUntil) {
      if (now >= local.refreshAt) this.refreshInBackground(appid, local);
      return local;
    }
    let pending = this.loading.get(appid);
    if (!pending) {
      pending = this.load(appid).finally(() => this.loading.delete(appid));
      this.loading.set(appid, pending);
    }
    return pending;
  }

  /**
   * Calls `fn` with the app's token. When WeChat rejects the token: drops it (only if it is still the
   * stored one), gets a token again and calls `fn` once more; if that token is rejected too (or is the
   * same), a force_refresh (rate limited) and one last call. Other failures of `fn` pass through.
   */
  async withToken<T>(appid: string, fn: (token: string) => Promise<T>): Promise<T> {
    const first = await this.get(appid);
    try {
      return await fn(first.token);
    } catch (err) {
      if (!isTokenError(err)) throw err;
      this.opts.log.info({ appid, errcode: (err as WechatError).errcode }, 'WeChat rejected the access_token; getting it again');
    }
    await this.invalidate(appid, first.token);
    const second = await this.get(appid);
    let failed = first.token;
    if (second.token !== first.token) {
      try {
        return await fn(second.token);
      } catch (err) {
        if (!isTokenError(err)) throw err;
        await this.invalidate(appid, second.token);
        failed = second.token;
      }
    }
    const forced = await this.forceRefresh(appid, failed);
    if (forced) {
      try {
        return await fn(forced.token);
      } catch (err) {
        if (!isTokenError(err)) throw err;
        await this.invalidate(appid, forced.token);
      }
    }
    throw new AccessTokenError(appid, 'WeChat keeps rejecting the access_token');
  }

  /** Forgets `token` here, and in the store only if it is still the stored one (another replica may have replaced it). */
  async invalidate(appid: string, token: string): Promise<void> {
    if (this.local.get(appid)?.token === token) this.local.delete(appid);
    if (this.apps.get(appid)?.tokenSource === 'external') return;
    await this.opts.store.invalidate(appid, token);
  }

  /** Waits for background refreshes to end. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.refreshing.values(), ...this.loading.values()]);
  }

  private source(appid: string): TokenSource {
    return this.apps.get(appid)?.tokenSource ?? 'stable_token';
  }

  private adopt(appid: string, t: StoredToken): Entry {
    const now = Date.now();
    const life = Math.max(0, t.expiresAt - Math.min(t.fetchedAt, now));
    let refreshAt = t.expiresAt - Math.min(this.refreshBefore, life / 2);
    if (this.source(appid) === 'external') refreshAt = Math.min(refreshAt, now + (this.opts.externalRecheck ?? 60_000));
    const entry: Entry = { ...t, refreshAt, usableUntil: t.expiresAt - Math.min(30_000, life / 10) };
    this.local.set(appid, entry);
    this.opts.metrics.wechatTokenFetchedAt.set(appid, t.fetchedAt);
    return entry;
  }

  private usable(t: StoredToken, now = Date.now()): boolean {
    const life = Math.max(0, t.expiresAt - Math.min(t.fetchedAt, now));
    return now < t.expiresAt - Math.min(30_000, life / 10);
  }

  private dueForRefresh(t: StoredToken, now = Date.now()): boolean {
    const life = Math.max(0, t.expiresAt - Math.min(t.fetchedAt, now));
    return now >= t.expiresAt - Math.min(this.refreshBefore, life / 2);
  }

  /** No usable token here: the store's, or one fetched under the lock (others wait for it). */
  private async load(appid: string): Promise<Entry> {
    if (this.source(appid) === 'external') return this.adopt(appid, await this.readExternal(appid));
    const { store } = this.opts;
    const deadline = Date.now() + this.lockMs + 1000;
    for (;;) {
      const stored = await store.get(appid);
      if (stored && this.usable(stored)) {
        const entry = this.adopt(appid, stored);
        if (this.dueForRefresh(stored)) this.refreshInBackground(appid, entry);
        return entry;
      }
      const owner = randomBytes(12).toString('base64url');
      if (await store.lock(appid, owner, this.lockMs)) {
        try {
          const again = await store.get(appid);
          if (again && this.usable(again)) return this.adopt(appid, again);
          return await this.fetch(appid, false);
        } finally {
          await store.unlock(appid, owner).catch(() => {});
        }
      }
      if (Date.now() > deadline) throw new AccessTokenError(appid, 'no access_token appeared while another replica held the refresh lock');
      await sleep(jitter(60));
    }
  }

  private refreshInBackground(appid: string, current: Entry): void {
    if (this.refreshing.has(appid) || this.closed || Date.now() < (this.nextTry.get(appid) ?? 0)) return;
    const run = this.refresh(appid, current)
      .catch((err: Error) => {
        this.nextTry.set(appid, Date.now() + 5000);
        this.opts.log.warn({ appid, err: err.message }, 'background access_token refresh failed; the current token is used meanwhile');
      })
      .finally(() => this.refreshing.delete(appid));
    this.refreshing.set(appid, run);
  }

  private async refresh(appid: string, current: Entry): Promise<void> {
    if (this.source(appid) === 'external') {
      this.adopt(appid, await this.readExternal(appid));
      return;
    }
    const { store } = this.opts;
    const newer = (t: StoredToken | undefined): t is StoredToken => !!t && t.token !== current.token && this.usable(t) && !this.dueForRefresh(t);
    const stored = await store.get(appid);
    if (newer(stored)) return void this.adopt(appid, stored);
    const owner = randomBytes(12).toString('base64url');
    if (!(await store.lock(appid, owner, this.lockMs))) {
      // another replica is refreshing: look again in a moment
      this.nextTry.set(appid, Date.now() + 1000);
      return;
    }
    try {
      const again = await store.get(appid);
      if (newer(again)) return void this.adopt(appid, again);
      const fetched = await this.fetch(appid, false);
      // WeChat may answer the same token while it thinks it is good for longer: do not ask again at once
      if (this.dueForRefresh(fetched)) this.nextTry.set(appid, Date.now() + 30_000);
    } finally {
      await store.unlock(appid, owner).catch(() => {});
    }
  }

  /** After a normal refresh did not help: force_refresh, at most once per forceInterval per app (stable_token only). */
  private async forceRefresh(appid: string, failed: string): Promise<StoredToken | undefined> {
    if (this.source(appid) !== 'stable_token') return undefined;
    if (!(await this.opts.store.forceSlot(appid, this.forceInterval))) {
      const stored = await this.opts.store.get(appid);
      if (stored && stored.token !== failed && this.usable(stored)) return this.adopt(appid, stored);
      this.opts.log.warn({ appid }, 'access_token still rejected; force_refresh was used less than forceInterval ago');
      return undefined;
    }
    this.opts.log.warn({ appid }, 'access_token still rejected after a refresh; fetching with force_refresh');
    return this.fetch(appid, true);
  }

  /** Asks WeChat (stable_token: up to 3 tries with jittered waits on passing failures), stores and adopts the token. */
  private async fetch(appid: string, force: boolean): Promise<Entry> {
    const { wechat, metrics, log } = this.opts;
    const source = this.source(appid);
    const api = source === 'token' ? 'token' : 'stable_token';
    let answer: AccessTokenAnswer;
    try {
      if (source === 'token') answer = await wechat.token(appid);
      else {
        for (let attempt = 0; ; attempt++) {
          try {
            answer = await wechat.stableToken(appid, force);
            break;
          } catch (err) {
            if (!isPassing(err) || attempt >= this.retryDelays.length) throw err;
            await sleep(jitter(this.retryDelays[attempt]!));
          }
        }
      }
    } catch (err) {
      metrics.wechatTokenRefreshes.inc({ appid, outcome: 'error' });
      const w = err instanceof WechatError ? err : undefined;
      log.warn(
        { appid, api, kind: w?.kind, errcode: w?.errcode, errmsg: w?.errmsg, hint: hintFor(w?.errcode) },
        'could not get an access_token from WeChat',
      );
      throw new AccessTokenError(appid, `WeChat ${api} gave no access_token`, { cause: err });
    }
    metrics.wechatTokenRefreshes.inc({ appid, outcome: force ? 'forced' : 'ok' });
    const now = Date.now();
    const t: StoredToken = { token: answer!.accessToken, expiresAt: now + answer!.expiresIn * 1000, fetchedAt: now };
    // Keep the token we already had when WeChat answers the same one (stable_token does while it is good).
    const known = this.local.get(appid);
    if (known?.token === t.token) t.fetchedAt = known.fetchedAt;
    try {
      await this.opts.store.put(appid, t);
    } catch (err) {
      log.warn({ appid, err: (err as Error).message }, 'could not store the access_token; other replicas may fetch their own');
    }
    log.info({ appid, api, force, expires_in: answer!.expiresIn }, 'fetched an access_token');
    return this.adopt(appid, t);
  }

  /** The token another system keeps: a Redis key (a plain token or JSON {access_token, expires_in}) or a URL answering that JSON. */
  private async readExternal(appid: string): Promise<StoredToken> {
    const ext = this.apps.get(appid)?.externalToken ?? {};
    const now = Date.now();
    let token: unknown;
    let expiresAt: number | undefined;
    try {
      if (ext.redisKey !== undefined) {
        const redis = this.opts.redis;
        if (!redis) throw new Error('externalToken.redisKey needs session.store: redis');
        const [value, pttl] = await Promise.all([redis.get(ext.redisKey), redis.pttl(ext.redisKey)]);
        if (value?.startsWith('{')) ({ token, expiresAt } = parseExternal(JSON.parse(value), now));
        else token = value;
        if (pttl > 0) expiresAt = Math.min(expiresAt ?? Infinity, now + pttl);
      } else if (ext.url !== undefined) {
        const res = await fetch(ext.url, { signal: AbortSignal.timeout(this.opts.timeout), headers: { accept: 'application/json' } });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        ({ token, expiresAt } = parseExternal(await res.json(), now));
      }
    } catch (err) {
      this.opts.metrics.wechatTokenRefreshes.inc({ appid, outcome: 'error' });
      // only the error's name: messages of Redis or fetch errors may carry the key's value or the URL's query
      throw new AccessTokenError(appid, `the external access_token source failed (${(err as Error)?.name ?? 'error'})`);
    }
    if (typeof token !== 'string' || token === '') {
      this.opts.metrics.wechatTokenRefreshes.inc({ appid, outcome: 'error' });
      throw new AccessTokenError(appid, 'the external access_token source has no token');
    }
    this.opts.metrics.wechatTokenRefreshes.inc({ appid, outcome: 'external' });
    const known = this.local.get(appid);
    // without a deadline from the source, the token is trusted for 5 minutes at a time (read again every minute)
    return { token, expiresAt: expiresAt ?? now + 5 * 60_000, fetchedAt: known?.token === token ? known.fetchedAt : now };
  }
}

function parseExternal(body: unknown, now: number): { token: unknown; expiresAt?: number } {
  const o = (body ?? {}) as { access_token?: unknown; expires_in?: unknown };
  const e = Number(o.expires_in);
  return { token: o.access_token, ...(Number.isFinite(e) && e > 0 ? { expiresAt: now + e * 1000 } : {}) };
}

import type { Metrics } from '../metrics/metrics.js';
import type { RedisConnection } from '../redis/connection.js';
import type { WechatClient } from './client.js';
import { AccessTokenError, externalToken, isTokenError, jitter, sleep, tokenFromWechat, type TokenApp, type TokenSource } from './token-sources.js';
import { underLock, type StoredToken, type TokenStore } from './token-store.js';
import type { WechatError } from './types.js';

export { AccessTokenError } from './token-sources.js';

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
  /** the Redis connection, for externalToken.redisKey */
  redis?: RedisConnection;
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

  /**
   * A token's schedule: refreshed from min(refreshBefore, half its life) before it expires, not handed
   * out from min(30 s, a tenth of its life) before.
   */
  private schedule(t: StoredToken, now = Date.now()): { refreshAt: number; usableUntil: number } {
    const life = Math.max(0, t.expiresAt - Math.min(t.fetchedAt, now));
    return { refreshAt: t.expiresAt - Math.min(this.refreshBefore, life / 2), usableUntil: t.expiresAt - Math.min(30_000, life / 10) };
  }

  private adopt(appid: string, t: StoredToken): Entry {
    const now = Date.now();
    let { refreshAt, usableUntil } = this.schedule(t, now);
    if (this.source(appid) === 'external') refreshAt = Math.min(refreshAt, now + (this.opts.externalRecheck ?? 60_000));
    const entry: Entry = { ...t, refreshAt, usableUntil };
    this.local.set(appid, entry);
    this.opts.metrics.wechatTokenFetchedAt.set(appid, t.fetchedAt);
    return entry;
  }

  private usable(t: StoredToken, now = Date.now()): boolean {
    return now < this.schedule(t, now).usableUntil;
  }

  private dueForRefresh(t: StoredToken, now = Date.now()): boolean {
    return now >= this.schedule(t, now).refreshAt;
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
      const locked = await underLock(store, appid, this.lockMs, async () => {
        const again = await store.get(appid);
        return again && this.usable(again) ? this.adopt(appid, again) : this.fetch(appid, false);
      });
      if (locked) return locked.value;
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
    const locked = await underLock(store, appid, this.lockMs, async () => {
      const again = await store.get(appid);
      if (newer(again)) return void this.adopt(appid, again);
      const fetched = await this.fetch(appid, false);
      // WeChat may answer the same token while it thinks it is good for longer: do not ask again at once
      if (this.dueForRefresh(fetched)) this.nextTry.set(appid, Date.now() + 30_000);
    });
    // another replica is refreshing: look again in a moment
    if (!locked) this.nextTry.set(appid, Date.now() + 1000);
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

  /** Asks WeChat (token-sources.ts), stores and adopts the token. */
  private async fetch(appid: string, force: boolean): Promise<Entry> {
    const { wechat, metrics, log } = this.opts;
    const api = this.source(appid) === 'token' ? 'token' : 'stable_token';
    const answer = await tokenFromWechat(wechat, appid, api, force, this.retryDelays, log).catch((err: unknown) => {
      metrics.wechatTokenRefreshes.inc({ appid, outcome: 'error' });
      throw err;
    });
    metrics.wechatTokenRefreshes.inc({ appid, outcome: force ? 'forced' : 'ok' });
    const now = Date.now();
    const t: StoredToken = { token: answer.accessToken, expiresAt: now + answer.expiresIn * 1000, fetchedAt: now };
    // Keep the token we already had when WeChat answers the same one (stable_token does while it is good).
    const known = this.local.get(appid);
    if (known?.token === t.token) t.fetchedAt = known.fetchedAt;
    try {
      await this.opts.store.put(appid, t);
    } catch (err) {
      log.warn({ appid, err: (err as Error).message }, 'could not store the access_token; other replicas may fetch their own');
    }
    log.info({ appid, api, force, expires_in: answer.expiresIn }, 'fetched an access_token');
    return this.adopt(appid, t);
  }

  /** The token another system keeps (token-sources.ts). */
  private async readExternal(appid: string): Promise<StoredToken> {
    const now = Date.now();
    const { metrics, redis, timeout } = this.opts;
    const { token, expiresAt } = await externalToken(appid, this.apps.get(appid)?.externalToken ?? {}, redis, timeout, now).catch((err: unknown) => {
      metrics.wechatTokenRefreshes.inc({ appid, outcome: 'error' });
      throw err;
    });
    metrics.wechatTokenRefreshes.inc({ appid, outcome: 'external' });
    const known = this.local.get(appid);
    // without a deadline from the source, the token is trusted for 5 minutes at a time (read again every minute)
    return { token, expiresAt: expiresAt ?? now + 5 * 60_000, fetchedAt: known?.token === token ? known.fetchedAt : now };
  }
}

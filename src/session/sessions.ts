import { LRUCache } from 'lru-cache';
import type { Metrics } from '../metrics/metrics.js';
import { hashToken, newToken } from './tokens.js';
import type { Identity, SessionRecord, SessionStore } from './types.js';

export interface SessionOptions {
  /** idle lifetime, ms */
  ttl: number;
  /** absolute lifetime, ms */
  maxAge: number;
  /** minimum ms between two writes of a session's idle deadline */
  refreshInterval: number;
  maxPerUser: number;
  cache: { max: number; ttl: number };
}

interface Logger {
  warn(obj: object, msg: string): void;
}

/** A session as the request path sees it. */
export interface ActiveSession extends SessionRecord {
  tokenHash: string;
}

/**
 * Sessions: tokens, the in-process LRU in front of the store, sliding expiry. The request path calls
 * `authenticate`; the login handlers call `create` and `revoke`.
 */
export class Sessions {
  private readonly cache?: LRUCache<string, ActiveSession>;
  /** the lookup counter's series, looked up once instead of per request */
  private readonly lookups: Record<'lru' | 'store' | 'miss' | 'error', { inc(): void }>;

  constructor(
    readonly store: SessionStore,
    private readonly opts: SessionOptions,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {
    const lookup = (source: string) => metrics.sessionLookups.labels({ source });
    this.lookups = { lru: lookup('lru'), store: lookup('store'), miss: lookup('miss'), error: lookup('error') };
    if (opts.cache.max > 0) {
      this.cache = new LRUCache<string, ActiveSession>({
        max: opts.cache.max,
        ttl: opts.cache.ttl,
        // Concurrent misses for one token share this one store read (lru-cache's fetch coalesces them).
        fetchMethod: async (tokenHash) => withHash(tokenHash, await this.store.get(tokenHash)),
      });
    }
    store.onInvalidate((inv) => {
      if (!this.cache) return;
      if (inv === 'all') this.cache.clear();
      else for (const h of inv) this.cache.delete(h);
    });
  }

  /** Creates a session for a user who just logged in; returns the token to hand to the client. */
  async create(identity: Identity, sessionKey: string): Promise<{ token: string; session: ActiveSession }> {
    const now = this.now();
    const token = newToken();
    const tokenHash = hashToken(token);
    const expiresAt = now + this.opts.maxAge;
    const record: SessionRecord = {
      appid: identity.appid,
      openid: identity.openid,
      ...(identity.unionid ? { unionid: identity.unionid } : {}),
      createdAt: now,
      expiresAt,
      idleExpiresAt: Math.min(now + this.opts.ttl, expiresAt),
    };
    await this.store.create(tokenHash, record, sessionKey, { maxPerUser: this.opts.maxPerUser });
    const session = { ...record, tokenHash };
    this.cache?.set(tokenHash, session);
    return { token, session };
  }

  /**
   * The live session for a token, or undefined. Throws StoreUnavailableError when the store cannot
   * answer and the LRU does not hold the session (the caller answers 503, not 401).
   *
   * A session the LRU holds is answered synchronously, without a promise: the request then goes on to
   * the upstream in the same tick, as an unauthenticated one would (the await alone cost a visible share
   * of CPU per request in the bench). Callers `await` the result either way.
   */
  authenticate(token: string): ActiveSession | undefined | Promise<ActiveSession | undefined> {
    const tokenHash = hashToken(token);
    const now = this.now();
    if (this.cache) {
      const session = this.cache.get(tokenHash);
      if (session && this.alive(session, now)) {
        this.lookups.lru.inc();
        return this.slide(session, now);
      }
      // Not cached, or our copy says it lapsed (another replica may have kept it alive): ask the store.
      if (session) this.cache.delete(tokenHash);
    }
    return this.fromStoreChecked(tokenHash, now);
  }

  private async fromStoreChecked(tokenHash: string, now: number): Promise<ActiveSession | undefined> {
    const cache = this.cache;
    const session = await this.fromStore(cache ? () => cache.fetch(tokenHash) : async () => withHash(tokenHash, await this.store.get(tokenHash)));
    if (!session || !this.alive(session, now)) {
      if (session) cache?.delete(tokenHash);
      return undefined;
    }
    return this.slide(session, now);
  }

  /** Kills one session on this replica at once (and, through the store, everywhere). */
  async revoke(token: string): Promise<boolean> {
    const tokenHash = hashToken(token);
    this.cache?.delete(tokenHash);
    return this.store.revoke(tokenHash);
  }

  /** Kills every session of a user, on every replica. */
  async revokeAll(who: { appid: string; openid: string }): Promise<number> {
    return this.store.revokeAll(who.appid, who.openid);
  }

  /** Seconds until the session ends if the user stays idle from now. */
  expiresIn(s: SessionRecord, now = this.now()): number {
    return Math.max(0, Math.round((Math.min(s.idleExpiresAt, s.expiresAt) - now) / 1000));
  }

  private alive(r: SessionRecord, now: number): boolean {
    return now < r.idleExpiresAt && now < r.expiresAt;
  }

  private async fromStore(read: () => Promise<ActiveSession | undefined>): Promise<ActiveSession | undefined> {
    try {
      const session = await read();
      (session ? this.lookups.store : this.lookups.miss).inc();
      return session;
    } catch (err) {
      this.lookups.error.inc();
      throw err;
    }
  }

  /**
   * Sliding expiry: moves the idle deadline forward, writing to the store at most once per
   * refreshInterval per session (and per replica). The write is off the request's path.
   */
  private slide(session: ActiveSession, now: number): ActiveSession {
    const lastRefresh = session.idleExpiresAt - this.opts.ttl;
    if (now - lastRefresh < this.opts.refreshInterval) return session;
    const idleExpiresAt = Math.min(now + this.opts.ttl, session.expiresAt);
    if (idleExpiresAt <= session.idleExpiresAt) return session;
    const tokenHash = session.tokenHash;
    const updated = { ...session, idleExpiresAt };
    if (this.cache?.has(tokenHash)) this.cache.set(tokenHash, updated, { noUpdateTTL: true });
    this.store.touch(tokenHash, idleExpiresAt).then(
      (exists) => {
        if (!exists) this.cache?.delete(tokenHash);
      },
      (err: Error) => {
        this.metrics.sessionStoreErrors.inc({ op: 'touch' });
        this.log.warn({ err: err.message }, 'could not extend a session in the store');
      },
    );
    return updated;
  }
}

/** A stored record as the request path sees it: with the hash it is keyed by. */
function withHash(tokenHash: string, record: SessionRecord | undefined): ActiveSession | undefined {
  return record && { ...record, tokenHash };
}

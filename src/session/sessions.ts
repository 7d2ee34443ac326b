// Over 300 lines on purpose: one class, whose LRU, negative cache, reads in flight and sliding expiry share its state.
import { LRUCache } from 'lru-cache';
import type { Metrics } from '../metrics/metrics.js';
import { counterSeries } from '../metrics/series.js';
import type { RevokedSessions, RevokeReason } from '../events/events.js';
import { accountId } from './accounts.js';
import { UserBlockedError, type AccountControls, type Device } from './controls.js';
import { hashToken, newToken } from './tokens.js';
import { keptE164, type Flow, type Identity, type KeptPhone, type SessionRecord, type SessionStore } from './types.js';

export interface SessionOptions {
  /** idle lifetime, ms */
  ttl: number;
  /** absolute lifetime, ms */
  maxAge: number;
  /** minimum ms between two writes of a session's idle deadline */
  refreshInterval: number;
  maxPerUser: number;
  /**
   * The LRU of live sessions (max 0 = off), and the one of tokens the store did not know: a token found
   * unknown is answered 401 for `negativeTtl` ms without asking the store again (absent or 0 = off).
   */
  cache: { max: number; ttl: number; negativeMax?: number; negativeTtl?: number };
}

interface Logger {
  warn(obj: object, msg: string): void;
}

/** Who hears of sessions made and ended (the login events, events/events.ts); never waits, never throws. */
export interface SessionEventSink {
  sessionCreated(session: ActiveSession): void;
  sessionsRevoked(data: RevokedSessions): void;
}

/** A session as the request path sees it. */
export interface ActiveSession extends SessionRecord {
  tokenHash: string;
  /** The person's account id (accounts.ts; X-User-Id), worked out once when the session is cached. */
  accountId: string;
}

/**
 * Sessions: tokens, the in-process LRU in front of the store, sliding expiry. The request path calls
 * `authenticate`; the login handlers call `create` and `revoke`.
 */
export class Sessions {
  /** live sessions only: never a miss, never a read in flight (a flood of unknown tokens evicts nothing) */
  private readonly cache?: LRUCache<string, ActiveSession>;
  /** token hashes the store did not know, for a short while: a repeated unknown token costs no store read */
  private readonly negative?: LRUCache<string, true>;
  /** store reads in flight: concurrent checks of one uncached token share one read */
  private readonly reads = new Map<string, Promise<ActiveSession | undefined>>();
  /**
   * Account controls (blocks, audit trail, devices), when the gateway runs them: a blocked user gets no
   * session, and each new session's device and login are recorded.
   */
  controls?: AccountControls;
  /** the lookup counter's series, looked up once instead of per request */
  private readonly lookups: Record<'lru' | 'store' | 'negative' | 'miss' | 'error', { inc(): void }>;
  /** told of every session made and ended here (config `events`), when set */
  events?: SessionEventSink;

  constructor(
    readonly store: SessionStore,
    private readonly opts: SessionOptions,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {
    // every series exists from the start at 0, so a scrape never sees one appear later
    const lookup = (source: string) => counterSeries(metrics.sessionLookups, { source });
    this.lookups = { lru: lookup('lru'), store: lookup('store'), negative: lookup('negative'), miss: lookup('miss'), error: lookup('error') };
    if (opts.cache.max > 0) {
      // No fetchMethod: lru-cache's fetch() parks each read in flight in the cache, where a flood of
      // unknown tokens would push live sessions out. Reads in flight are in `reads` instead.
      this.cache = new LRUCache<string, ActiveSession>({ max: opts.cache.max, ttl: opts.cache.ttl });
    }
    const { negativeMax = 0, negativeTtl = 0 } = opts.cache;
    if (negativeMax > 0 && negativeTtl > 0) this.negative = new LRUCache<string, true>({ max: negativeMax, ttl: negativeTtl });
    metrics.sessionCacheSizes.set('live', () => this.cache?.size ?? 0);
    metrics.sessionCacheSizes.set('negative', () => this.negative?.size ?? 0);
    store.onInvalidate((inv) => {
      // A read in flight may predate the revocation: it must not put the session back in the cache.
      if (inv === 'all') {
        this.cache?.clear();
        this.reads.clear();
      } else {
        for (const h of inv) {
          this.cache?.delete(h);
          this.reads.delete(h);
        }
      }
    });
  }

  /**
   * Creates a session for a user who just logged in; returns the token to hand to the client. Without a
   * sessionKey (web logins: OAuth gives none) the user's current session_key, if any, stays as it is.
   * `flow` is how the session was made: it decides which endpoints it may use (see Flow). `device` is
   * the request's (user agent, client IP), for the device list and the audit trail.
   *
   * With account controls, a blocked user gets no session: UserBlockedError (403 user_blocked). The
   * block is checked before the session is written and again after (a block set meanwhile ends it).
   */
  async create(identity: Identity, sessionKey: string | undefined, flow: Flow, device: Device = {}): Promise<{ token: string; session: ActiveSession }> {
    const controls = this.controls;
    if (controls) await this.refuseBlocked(controls, identity, flow, device);
    // a login WeChat gives no unionid stays with the person an earlier login of the identity linked it to
    const unionid = identity.unionid || (await this.store.linkedUnionid(identity.appid, identity.openid));
    const now = this.now();
    const token = newToken(identity);
    const tokenHash = hashToken(token);
    const expiresAt = now + this.opts.maxAge;
    const record: SessionRecord = {
      appid: identity.appid,
      openid: identity.openid,
      ...(unionid ? { unionid } : {}),
      flow,
      createdAt: now,
      expiresAt,
      idleExpiresAt: Math.min(now + this.opts.ttl, expiresAt),
    };
    const evicted = await this.store.create(tokenHash, record, sessionKey, { maxPerUser: this.opts.maxPerUser });
    // the phone number the user granted earlier (another session, another device) is theirs in this one
    // too; read after the session is written, so a grant meanwhile either is read here or invalidates it
    const phone = await this.store.getPhone(identity.appid, identity.openid).then(
      (p) => p,
      () => null, // not known just now: the session is not cached, the request path reads it from the store
    );
    const session = withHash(tokenHash, record)!;
    if (phone) session.phone = keptE164(phone);
    if (controls) {
      if (await controls.blocked(identity)) {
        await this.store.revoke(tokenHash);
        await this.refuseBlocked(controls, identity, flow, device);
      }
      await controls.recordDevice(identity, tokenHash, device, expiresAt);
      await controls.audit({ event: 'login', appid: identity.appid, openid: identity.openid, flow, session: tokenHash, ...device });
    }
    if (this.events) {
      this.events.sessionCreated(session);
      const who = { appid: record.appid, openid: record.openid, user_id: session.accountId };
      if (evicted.length > 0) this.events.sessionsRevoked({ ...who, sessions: evicted, count: evicted.length, reason: 'evicted' });
    }
    // (a fresh 256-bit token cannot have been looked up before; kept correct all the same)
    this.negative?.delete(tokenHash);
    this.reads.delete(tokenHash);
    if (phone !== null) this.cache?.set(tokenHash, session);
    return { token, session };
  }

  private async refuseBlocked(controls: AccountControls, identity: Identity, flow: Flow, device: Device): Promise<void> {
    const block = await controls.blocked(identity);
    if (!block) return;
    await controls.audit({ event: 'login_failed', appid: identity.appid, openid: identity.openid, flow, error: 'user_blocked', by: 'gateway', ...device });
    throw new UserBlockedError(block);
  }

  /**
   * The live session for a token, or undefined. Throws StoreUnavailableError when the store cannot
   * answer and the LRU does not hold the session (the caller answers 503, not 401).
   *
   * A session the LRU holds is answered synchronously, without a promise: the request then goes on to
   * the upstream in the same tick, as an unauthenticated one would (the await alone cost a visible share
   * of CPU per request in the bench). Callers `await` the result either way. `tokenHash` is the token's
   * hashToken when the caller has it already (the proxy remembers it per connection: tokens.ts hashOnce).
   */
  authenticate(token: string, tokenHash: string = hashToken(token)): ActiveSession | undefined | Promise<ActiveSession | undefined> {
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
    if (this.negative?.get(tokenHash)) {
      this.lookups.negative.inc();
      return undefined;
    }
    return this.fromStoreChecked(tokenHash, now);
  }

  private async fromStoreChecked(tokenHash: string, now: number): Promise<ActiveSession | undefined> {
    const session = await this.fromStore(() => this.read(tokenHash));
    if (!session || !this.alive(session, now)) {
      if (session) this.cache?.delete(tokenHash);
      return undefined;
    }
    return this.slide(session, now);
  }

  /**
   * One store read per uncached token at a time. What it finds goes into the LRU, what it does not into
   * the negative cache, unless the token was revoked or created meanwhile (then the read is not current).
   */
  private read(tokenHash: string): Promise<ActiveSession | undefined> {
    const pending = this.reads.get(tokenHash);
    if (pending) return pending;
    const read: Promise<ActiveSession | undefined> = this.store.get(tokenHash).then(
      (record) => {
        const current = this.reads.get(tokenHash) === read;
        if (current) this.reads.delete(tokenHash);
        const session = withHash(tokenHash, record);
        if (current) {
          if (session) this.cache?.set(tokenHash, session);
          else this.negative?.set(tokenHash, true);
        }
        return session;
      },
      (err: unknown) => {
        if (this.reads.get(tokenHash) === read) this.reads.delete(tokenHash);
        throw err;
      },
    );
    this.reads.set(tokenHash, read);
    return read;
  }

  /**
   * Keeps the phone number the user granted with the user (routes[].forwardPhone): every session of
   * theirs, on every replica, now and later, has it; every replica's cached copies of the user's sessions
   * are dropped, this one's of `session` replaced. False when the store holds no session of the user.
   */
  async setPhone(session: ActiveSession, phone: KeptPhone): Promise<boolean> {
    const { tokenHash } = session;
    this.reads.delete(tokenHash);
    const kept = await this.store.setPhone(session.appid, session.openid, phone);
    if (kept && this.cache) this.cache.set(tokenHash, { ...session, phone: keptE164(phone) });
    return kept;
  }

  /** Forgets the user's phone number, on every replica. True when there was one. */
  async clearPhone(who: { appid: string; openid: string }): Promise<boolean> {
    return this.store.clearPhone(who.appid, who.openid);
  }

  /** Kills one session on this replica at once (and, through the store, everywhere). */
  async revoke(token: string, reason: RevokeReason = 'logout'): Promise<boolean> {
    const tokenHash = hashToken(token);
    // with events, whose session it was (a logout reads it once more; nothing else does)
    const was = this.events ? (this.cache?.get(tokenHash) ?? (await this.store.get(tokenHash).catch(() => undefined))) : undefined;
    this.cache?.delete(tokenHash);
    this.reads.delete(tokenHash);
    const done = await this.store.revoke(tokenHash);
    if (done && was) this.events?.sessionsRevoked({ appid: was.appid, openid: was.openid, user_id: accountId(was), sessions: [tokenHash], count: 1, reason });
    return done;
  }

  /** Kills one session by its id (the token's hash, as the admin API lists it) on this replica at once and everywhere. */
  async revokeById(tokenHash: string): Promise<boolean> {
    this.cache?.delete(tokenHash);
    this.reads.delete(tokenHash);
    return this.store.revoke(tokenHash);
  }

  /** Kills every session of a user, on every replica. */
  async revokeAll(who: { appid: string; openid: string; accountId?: string }, reason: RevokeReason = 'logout_all'): Promise<number> {
    const n = await this.store.revokeAll(who.appid, who.openid);
    this.events?.sessionsRevoked({ appid: who.appid, openid: who.openid, ...(who.accountId ? { user_id: who.accountId } : {}), count: n, reason });
    return n;
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
  if (!record) return undefined;
  // every cached session of one shape, its fields written out (a spread of the record made them larger)
  const s: ActiveSession = {
    appid: record.appid,
    openid: record.openid,
    unionid: record.unionid,
    flow: record.flow,
    createdAt: record.createdAt,
    expiresAt: record.expiresAt,
    idleExpiresAt: record.idleExpiresAt,
    phone: record.phone,
    tokenHash,
    accountId: accountId(record),
  };
  return s;
}

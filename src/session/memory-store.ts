// Just over 300 lines: one class, the in-process twin of the Redis store (redis-store.ts and its parts), passing the same cases.
import { accountId } from './accounts.js';
import { TOKEN_HASH_LENGTH, userId } from './tokens.js';
import { keptE164, type Identity, type Invalidation, type KeptPhone, type SessionRecord, type SessionStore } from './types.js';

/** A unionid's account: who logged in with it, until the latest absolute deadline of their sessions. */
interface Account {
  unionid: string;
  members: Map<string, { appid: string; openid: string }>;
  until: number;
}

interface User {
  /** the unionid of their latest login (see SessionStore.linkedUnionid) */
  unionid?: string;
  /** the session_key of the user's latest login; absent for users who have only web sessions (no wx.login) */
  sessionKey?: string;
  /** token hashes, oldest first */
  tokens: string[];
  /** the phone number the user granted (kept with the user, as in Redis) */
  phone?: KeptPhone;
  /**
   * the latest idle deadline of the user's sessions (never past their absolute deadline): the entry (and
   * its session_key) lives until then, as the user's key in Redis does; it goes with their last session
   */
  until: number;
}

export interface MemoryStoreOptions {
  /** clock, for tests */
  now?: () => number;
  /** how often expired entries are swept away (ms); default 30 s */
  sweepInterval?: number;
}

const userKey = (appid: string, openid: string) => `${appid}\n${openid}`;
const alive = (r: SessionRecord, now: number) => now < r.idleExpiresAt && now < r.expiresAt;
const deadline = (r: SessionRecord) => Math.min(r.idleExpiresAt, r.expiresAt);

/**
 * The embedded default: sessions in this process only (one replica; all sessions end with it).
 * Expired sessions are dropped when read and by a periodic sweep, so memory stays bounded.
 * Behaves like the Redis store, down to how long a user's session_key is kept (as long as one of their
 * sessions lives) and to refusing a token hash that is not one of the user's (see tokens.ts).
 */
export class MemoryStore implements SessionStore {
  readonly kind = 'memory' as const;
  private readonly sessions = new Map<string, SessionRecord>();
  private readonly users = new Map<string, User>();
  /** unionid accounts by id ("u…") */
  private readonly accounts = new Map<string, Account>();
  /** user keys by user id (tokens.ts), to find an identity's own account ("i…") */
  private readonly uids = new Map<string, string>();
  private readonly listeners: Array<(inv: Invalidation) => void> = [];
  private readonly sweeper: NodeJS.Timeout;
  private readonly now: () => number;

  /** `new MemoryStore()`, `new MemoryStore(clock)` or `new MemoryStore({ now, sweepInterval })`. */
  constructor(opts: MemoryStoreOptions | (() => number) = {}) {
    const o = typeof opts === 'function' ? { now: opts } : opts;
    this.now = o.now ?? Date.now;
    this.sweeper = setInterval(() => this.sweep(), o.sweepInterval ?? 30_000).unref();
  }

  /** The record if the session is alive; an expired one is dropped on the way. */
  private live(tokenHash: string, now = this.now()): SessionRecord | undefined {
    const r = this.sessions.get(tokenHash);
    if (r && !alive(r, now)) {
      this.drop(tokenHash, r);
      return undefined;
    }
    return r;
  }

  /**
   * Removes a session and its index entry; the user entry goes with their last live session, or else
   * lives until the latest deadline of those left.
   */
  private drop(tokenHash: string, r: SessionRecord, now = this.now()): void {
    this.sessions.delete(tokenHash);
    const key = userKey(r.appid, r.openid);
    const user = this.users.get(key);
    if (!user) return;
    user.tokens = user.tokens.filter((h) => h !== tokenHash);
    let until = 0;
    for (const h of user.tokens) {
      const o = this.sessions.get(h);
      if (o && alive(o, now)) until = Math.max(until, deadline(o));
    }
    if (until === 0) this.users.delete(key);
    else user.until = until;
  }

  private emit(hashes: string[]): void {
    if (hashes.length === 0) return;
    for (const l of this.listeners) {
      try {
        l(hashes);
      } catch {
        // a listener's failure is not the store's: the revocation itself happened
      }
    }
  }

  async create(tokenHash: string, record: SessionRecord, sessionKey: string | undefined, opts: { maxPerUser: number }): Promise<string[]> {
    if (tokenHash.length !== TOKEN_HASH_LENGTH || !tokenHash.startsWith(userId(record.appid, record.openid))) {
      throw new TypeError("the token hash is not one of this user's tokens");
    }
    const now = this.now();
    const key = userKey(record.appid, record.openid);
    let user = this.users.get(key);
    if (!user || now >= user.until) user = { tokens: [], until: 0 };
    if (sessionKey !== undefined) user.sessionKey = sessionKey;
    user.unionid = record.unionid;
    this.uids.set(userId(record.appid, record.openid), key);
    if (record.unionid) {
      const id = accountId(record);
      let account = this.accounts.get(id);
      if (!account || now >= account.until) account = { unionid: record.unionid, members: new Map(), until: 0 };
      account.members.set(key, { appid: record.appid, openid: record.openid });
      account.until = Math.max(account.until, record.expiresAt);
      this.accounts.set(id, account);
    }
    // lazy cleanup: only live sessions count towards maxPerUser
    const kept: string[] = [];
    for (const h of user.tokens) {
      const r = this.sessions.get(h);
      if (h === tokenHash || !r) continue;
      if (alive(r, now)) kept.push(h);
      else this.sessions.delete(h);
    }
    kept.push(tokenHash);
    this.sessions.set(tokenHash, { ...record });
    // the new session is the newest: beyond maxPerUser the oldest others go
    const evicted = kept.splice(0, Math.max(0, kept.length - Math.max(1, opts.maxPerUser)));
    for (const h of evicted) this.sessions.delete(h);
    user.tokens = kept;
    user.until = Math.max(...kept.map((h) => deadline(this.sessions.get(h)!)));
    this.users.set(key, user);
    this.emit(evicted);
    return evicted;
  }

  async get(tokenHash: string): Promise<SessionRecord | undefined> {
    const r = this.live(tokenHash);
    return r && this.withPhone(r);
  }

  /** A copy of the record, with the user's phone number when they granted one. */
  private withPhone(r: SessionRecord, user = this.users.get(userKey(r.appid, r.openid))): SessionRecord {
    return user?.phone ? { ...r, phone: keptE164(user.phone) } : { ...r };
  }

  async touch(tokenHash: string, idleExpiresAt: number): Promise<boolean> {
    const r = this.live(tokenHash);
    if (!r) return false;
    // never backwards, never beyond the absolute deadline
    r.idleExpiresAt = Math.min(Math.max(r.idleExpiresAt, idleExpiresAt), r.expiresAt);
    const user = this.users.get(userKey(r.appid, r.openid));
    if (user) user.until = Math.max(user.until, deadline(r));
    return true;
  }

  /** The user entry while one of their sessions may be alive. */
  private user(appid: string, openid: string): User | undefined {
    const user = this.users.get(userKey(appid, openid));
    return user && this.now() < user.until ? user : undefined;
  }

  async setPhone(appid: string, openid: string, phone: KeptPhone): Promise<boolean> {
    const user = this.user(appid, openid);
    if (!user) return false;
    user.phone = { ...phone };
    this.emit([...user.tokens]);
    return true;
  }

  async getPhone(appid: string, openid: string): Promise<KeptPhone | undefined> {
    const p = this.user(appid, openid)?.phone;
    return p && { ...p };
  }

  async clearPhone(appid: string, openid: string): Promise<boolean> {
    const user = this.user(appid, openid);
    if (!user) return false;
    let had = user.phone !== undefined;
    delete user.phone;
    for (const h of user.tokens) {
      const r = this.sessions.get(h);
      if (r?.phone !== undefined) {
        had = true;
        const { phone: _, ...rest } = r;
        this.sessions.set(h, rest);
      }
    }
    this.emit([...user.tokens]);
    return had;
  }

  async revoke(tokenHash: string): Promise<boolean> {
    const r = this.live(tokenHash);
    if (!r) return false;
    this.drop(tokenHash, r);
    this.emit([tokenHash]);
    return true;
  }

  async revokeAll(appid: string, openid: string): Promise<number> {
    const key = userKey(appid, openid);
    const user = this.users.get(key);
    if (!user) return 0;
    const now = this.now();
    const hashes: string[] = [];
    for (const h of user.tokens) {
      const r = this.sessions.get(h);
      if (r && alive(r, now)) hashes.push(h);
      this.sessions.delete(h);
    }
    this.users.delete(key);
    this.emit(hashes);
    return hashes.length;
  }

  async list(appid: string, openid: string): Promise<Array<{ tokenHash: string; record: SessionRecord }>> {
    const user = this.users.get(userKey(appid, openid));
    if (!user) return [];
    const now = this.now();
    const out = [];
    for (const h of [...user.tokens]) {
      const r = this.live(h, now);
      if (r) out.push({ tokenHash: h, record: this.withPhone(r) });
    }
    return out;
  }

  async getSessionKey(appid: string, openid: string): Promise<string | undefined> {
    const key = userKey(appid, openid);
    const user = this.users.get(key);
    if (!user) return undefined;
    if (this.now() >= user.until) {
      this.users.delete(key);
      return undefined;
    }
    return user.sessionKey;
  }

  async linkedUnionid(appid: string, openid: string): Promise<string | undefined> {
    const user = this.users.get(userKey(appid, openid));
    return user && this.now() < user.until ? user.unionid : undefined;
  }

  async identities(id: string): Promise<Identity[]> {
    const now = this.now();
    if (id.startsWith('u')) {
      const account = this.accounts.get(id);
      if (!account || now >= account.until) return [];
      const out: Identity[] = [];
      for (const [key, who] of account.members) {
        // gone with its sessions, or linked to another unionid since: not (or no longer) found here
        const user = this.users.get(key);
        if (!user || now >= user.until || user.unionid !== account.unionid) continue;
        out.push({ ...who, unionid: account.unionid });
      }
      return out;
    }
    const key = this.uids.get(id.slice(1));
    const user = key === undefined ? undefined : this.users.get(key);
    if (!key || !user || now >= user.until || user.unionid) return [];
    const [appid, openid] = key.split('\n') as [string, string];
    return [{ appid, openid }];
  }

  onInvalidate(listener: (inv: Invalidation) => void): void {
    this.listeners.push(listener);
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    clearInterval(this.sweeper);
  }

  /** Sessions held (for tests and metrics). */
  get size(): number {
    return this.sessions.size;
  }

  /** Users held (for tests): those with a session that may still be alive. */
  get userCount(): number {
    return this.users.size;
  }

  /** Drops every expired session and every user entry past its last deadline. */
  sweep(): void {
    const now = this.now();
    for (const [h, r] of this.sessions) if (!alive(r, now)) this.drop(h, r, now);
    for (const [k, u] of this.users) if (now >= u.until) this.users.delete(k);
    for (const [uid, k] of this.uids) if (!this.users.has(k)) this.uids.delete(uid);
    for (const [id, a] of this.accounts) if (now >= a.until) this.accounts.delete(id);
  }
}

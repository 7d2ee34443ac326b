import type { Invalidation, SessionRecord, SessionStore } from './types.js';

interface User {
  sessionKey: string;
  /** token hashes, oldest first */
  tokens: string[];
}

const userKey = (appid: string, openid: string) => `${appid}\n${openid}`;

/**
 * The embedded default: sessions in this process only (one replica; all sessions end with it).
 * Expired sessions are dropped when read and by a periodic sweep, so memory stays bounded.
 */
export class MemoryStore implements SessionStore {
  readonly kind = 'memory' as const;
  private readonly sessions = new Map<string, SessionRecord>();
  private readonly users = new Map<string, User>();
  private readonly listeners: Array<(inv: Invalidation) => void> = [];
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly now: () => number = Date.now) {
    this.sweeper = setInterval(() => this.sweep(), 30_000).unref();
  }

  private live(tokenHash: string, now = this.now()): SessionRecord | undefined {
    const r = this.sessions.get(tokenHash);
    if (r && (now >= r.idleExpiresAt || now >= r.expiresAt)) {
      this.drop(tokenHash, r);
      return undefined;
    }
    return r;
  }

  private drop(tokenHash: string, r: SessionRecord): void {
    this.sessions.delete(tokenHash);
    const key = userKey(r.appid, r.openid);
    const user = this.users.get(key);
    if (!user) return;
    user.tokens = user.tokens.filter((h) => h !== tokenHash);
    if (user.tokens.length === 0) this.users.delete(key);
  }

  private emit(hashes: string[]): void {
    if (hashes.length === 0) return;
    for (const l of this.listeners) l(hashes);
  }

  async create(tokenHash: string, record: SessionRecord, sessionKey: string, opts: { maxPerUser: number }): Promise<string[]> {
    const key = userKey(record.appid, record.openid);
    const user = this.users.get(key) ?? { sessionKey, tokens: [] };
    user.sessionKey = sessionKey;
    user.tokens = user.tokens.filter((h) => this.live(h) !== undefined);
    this.sessions.set(tokenHash, { ...record });
    user.tokens.push(tokenHash);
    this.users.set(key, user);
    const evicted = user.tokens.splice(0, Math.max(0, user.tokens.length - opts.maxPerUser));
    for (const h of evicted) this.sessions.delete(h);
    this.emit(evicted);
    return evicted;
  }

  async get(tokenHash: string): Promise<SessionRecord | undefined> {
    const r = this.live(tokenHash);
    return r && { ...r };
  }

  async touch(tokenHash: string, idleExpiresAt: number): Promise<boolean> {
    const r = this.live(tokenHash);
    if (!r) return false;
    r.idleExpiresAt = Math.min(Math.max(r.idleExpiresAt, idleExpiresAt), r.expiresAt);
    return true;
  }

  async revoke(tokenHash: string): Promise<boolean> {
    const r = this.sessions.get(tokenHash);
    if (!r) return false;
    this.drop(tokenHash, r);
    this.emit([tokenHash]);
    return true;
  }

  async revokeAll(appid: string, openid: string): Promise<number> {
    const user = this.users.get(userKey(appid, openid));
    if (!user) return 0;
    const now = this.now();
    const hashes = user.tokens.filter((h) => this.live(h, now) !== undefined);
    for (const h of user.tokens) this.sessions.delete(h);
    user.tokens = [];
    this.emit(hashes);
    return hashes.length;
  }

  async list(appid: string, openid: string): Promise<Array<{ tokenHash: string; record: SessionRecord }>> {
    const user = this.users.get(userKey(appid, openid));
    if (!user) return [];
    const out = [];
    for (const h of [...user.tokens]) {
      const r = this.live(h);
      if (r) out.push({ tokenHash: h, record: { ...r } });
    }
    return out;
  }

  async getSessionKey(appid: string, openid: string): Promise<string | undefined> {
    return this.users.get(userKey(appid, openid))?.sessionKey;
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

  private sweep(): void {
    const now = this.now();
    for (const [h, r] of this.sessions) if (now >= r.idleExpiresAt || now >= r.expiresAt) this.drop(h, r);
  }
}

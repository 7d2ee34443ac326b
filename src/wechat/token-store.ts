import { randomBytes } from 'node:crypto';
import type { RedisClient } from '../redis/client.js';
import type { RedisConnection } from '../redis/connection.js';

/**
 * Where the apps' access_tokens are shared (access-token.ts): the token, the refresh lock and the
 * force_refresh rate limit, in Redis (shared by every replica) or in this process (memory store).
 */

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

const CAD_TOKEN = `local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v).t == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;
const CAD_LOCK = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

/** Tokens in Redis: `{prefix}wxtoken:{appid}` (JSON, expiring with the token), `…-lock:`, `…-force:`. */
export class RedisTokenStore implements TokenStore {
  constructor(private readonly conn: RedisConnection) {}

  private key(kind: string, appid: string) {
    return `${this.conn.keyPrefix}wxtoken${kind}:${appid}`;
  }

  /** (the connection's run(): never the error itself, which carries the command's arguments, the token) */
  private run<T>(op: string, fn: (redis: RedisClient) => Promise<T>): Promise<T> {
    return this.conn.run(op, fn);
  }

  async get(appid: string): Promise<StoredToken | undefined> {
    const v = await this.run('token get', (r) => r.get(this.key('', appid)));
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
    await this.run('token put', (r) => r.set(this.key('', appid), value, 'PXAT', Math.floor(t.expiresAt)));
  }

  async invalidate(appid: string, token: string): Promise<boolean> {
    return (await this.run('token invalidate', (r) => r.eval(CAD_TOKEN, 1, this.key('', appid), token))) === 1;
  }

  async lock(appid: string, owner: string, ms: number): Promise<boolean> {
    return (await this.run('token lock', (r) => r.set(this.key('-lock', appid), owner, 'PX', ms, 'NX'))) === 'OK';
  }

  async unlock(appid: string, owner: string): Promise<void> {
    await this.run('token unlock', (r) => r.eval(CAD_LOCK, 1, this.key('-lock', appid), owner));
  }

  async forceSlot(appid: string, ms: number): Promise<boolean> {
    return (await this.run('token force', (r) => r.set(this.key('-force', appid), '1', 'PX', ms, 'NX'))) === 'OK';
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

/** Runs `fn` holding the app's refresh lock for at most `ms`; undefined when another replica holds it. */
export async function underLock<T>(store: TokenStore, appid: string, ms: number, fn: () => Promise<T>): Promise<{ value: T } | undefined> {
  const owner = randomBytes(12).toString('base64url');
  if (!(await store.lock(appid, owner, ms))) return undefined;
  try {
    return { value: await fn() };
  } finally {
    await store.unlock(appid, owner).catch(() => {});
  }
}

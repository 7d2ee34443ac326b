import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { Metrics } from '../metrics/metrics.js';
import { StoreUnavailableError, type Invalidation, type SessionRecord, type SessionStore } from './types.js';

export interface RedisStoreOptions {
  url: string;
  /** Sentinel addresses ("host:port") and master name, instead of url */
  sentinels?: ReadonlyArray<string>;
  name?: string;
  /** Cluster seed nodes (redis:// URLs), instead of url */
  cluster?: ReadonlyArray<string>;
  keyPrefix: string;
  connectTimeout: number;
  commandTimeout: number;
  metrics?: Metrics;
  logger?: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
}

/*
 * Key layout (every command touches one key, so it also works where keys live on different nodes):
 *   {prefix}s:{tokenHash}        string "appid\topenid\tunionid\tcreatedAt\texpiresAt\tidleExpiresAt"
 *                                (times in base 36 ms), PEXPIREAT = idle deadline (never past expiresAt)
 *   {prefix}u:{appid}:{openid}   hash: "k" → the user's current session_key, tokenHash → createdAt;
 *                                expires with the user's last session
 *   {prefix}invalidate           pub/sub channel: revoked token hashes, comma-separated
 */
const SEP = '\t';

function encode(r: SessionRecord): string {
  return [r.appid, r.openid, r.unionid ?? '', r.createdAt.toString(36), r.expiresAt.toString(36), r.idleExpiresAt.toString(36)].join(SEP);
}

function decode(v: string): SessionRecord | undefined {
  const f = v.split(SEP);
  if (f.length !== 6) return undefined;
  const [appid, openid, unionid, created, expires, idle] = f as [string, string, string, string, string, string];
  return {
    appid,
    openid,
    ...(unionid ? { unionid } : {}),
    createdAt: parseInt(created, 36),
    expiresAt: parseInt(expires, 36),
    idleExpiresAt: parseInt(idle, 36),
  };
}

/** Moves a session's idle deadline if the session still exists: one key, one round trip. */
const TOUCH = `
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local head = string.match(v, '^(.*\\t)[^\\t]*$')
redis.call('SET', KEYS[1], head .. ARGV[2], 'PXAT', ARGV[1])
return 1`;

export type RedisClient = Redis | Cluster;

/** Reconnect forever, with capped exponential backoff and ±20% jitter (replicas must not reconnect in step). */
export function backoff(times: number): number {
  return Math.round(Math.min(50 * 2 ** Math.min(times, 6), 2000) * (0.8 + Math.random() * 0.4));
}

/** Builds the ioredis client for one node, a Sentinel-watched master, or a Cluster (ioredis's own support). */
export function createRedisClient(o: Pick<RedisStoreOptions, 'url' | 'sentinels' | 'name' | 'cluster'>, opts: RedisOptions): RedisClient {
  const u = new URL(o.url);
  const auth = {
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
  };
  if (o.cluster) {
    const nodes = o.cluster.map((n) => {
      const nu = new URL(n);
      return { host: nu.hostname, port: Number(nu.port || 6379) };
    });
    return new Cluster(nodes, {
      redisOptions: { ...opts, ...auth },
      enableOfflineQueue: opts.enableOfflineQueue,
      clusterRetryStrategy: backoff,
    });
  }
  if (o.sentinels) {
    const sentinels = o.sentinels.map((s) => {
      const i = s.lastIndexOf(':');
      return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
    });
    return new Redis({ ...opts, ...auth, sentinels, name: o.name, sentinelRetryStrategy: backoff });
  }
  return new Redis(o.url, opts);
}

/**
 * Sessions in Redis, shared by every replica. Fails fast: while Redis is away every call rejects at once
 * with StoreUnavailableError (no offline queue), a slow Redis after commandTimeout; it reconnects by itself
 * with capped, jittered backoff. Revocations are published so other replicas drop their cached copies.
 */
export class RedisStore implements SessionStore {
  readonly kind = 'redis' as const;
  readonly redis: RedisClient;
  private readonly sub: RedisClient;
  private readonly listeners: Array<(inv: Invalidation) => void> = [];
  private readonly channel: string;
  private wasReady = false;
  private subWasReady = false;
  private outage = false;

  constructor(private readonly opts: RedisStoreOptions) {
    const base: RedisOptions = {
      connectTimeout: opts.connectTimeout,
      commandTimeout: opts.commandTimeout,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: backoff,
      reconnectOnError: (err) => /READONLY/.test(err.message),
    };
    this.channel = `${opts.keyPrefix}invalidate`;
    this.redis = createRedisClient(opts, base);
    this.redis.defineCommand('wxgateTouch', { numberOfKeys: 1, lua: TOUCH });
    // The subscriber may queue its SUBSCRIBE until connected; it sends nothing else.
    this.sub = createRedisClient(opts, { ...base, enableOfflineQueue: true, commandTimeout: undefined });
    opts.metrics?.sessionStoreUp.set(0);

    this.redis.on('ready', () => {
      opts.metrics?.sessionStoreUp.set(1);
      if (this.outage) opts.logger?.info({}, 'redis is back');
      this.outage = false;
      // After a drop we may have missed invalidations: cached sessions are not to be trusted.
      if (this.wasReady) this.emit('all');
      this.wasReady = true;
    });
    const down = (err?: Error) => {
      opts.metrics?.sessionStoreUp.set(0);
      if (!this.outage) {
        this.outage = true;
        opts.logger?.warn({ err: err?.message ?? 'connection closed' }, 'redis is unavailable; requests that need it answer 503');
      }
    };
    this.redis.on('error', (err: Error) => down(err));
    this.redis.on('close', () => {
      if (this.wasReady) down();
    });
    this.sub.on('error', () => {});
    this.sub.on('ready', () => {
      if (this.subWasReady) this.emit('all');
      this.subWasReady = true;
    });
    this.sub.on('message', (_channel: string, message: string) => {
      if (message) this.emit(message.split(','));
    });
    this.sub.subscribe(this.channel).catch(() => {});
  }

  private sKey(tokenHash: string) {
    return `${this.opts.keyPrefix}s:${tokenHash}`;
  }
  private uKey(appid: string, openid: string) {
    return `${this.opts.keyPrefix}u:${appid}:${openid}`;
  }

  private emit(inv: Invalidation): void {
    for (const l of this.listeners) l(inv);
  }

  /** Runs Redis commands; any failure becomes StoreUnavailableError (never mistaken for "no session"). */
  private async run<T>(op: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      this.opts.metrics?.sessionStoreErrors.inc({ op });
      throw new StoreUnavailableError(`redis ${op} failed: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Deletes sessions one key at a time (keys may live on different cluster nodes); returns how many existed. */
  private async delEach(hashes: string[]): Promise<number> {
    const n = await Promise.all(hashes.map((h) => this.redis.del(this.sKey(h))));
    return n.reduce((a, b) => a + b, 0);
  }

  /** Tells every replica (this one too) to drop these sessions from their caches. */
  private async publish(hashes: string[]): Promise<void> {
    if (hashes.length === 0) return;
    this.emit(hashes);
    await this.redis.publish(this.channel, hashes.join(','));
  }

  async create(tokenHash: string, record: SessionRecord, sessionKey: string, opts: { maxPerUser: number }): Promise<string[]> {
    return this.run('create', async () => {
      const uKey = this.uKey(record.appid, record.openid);
      await this.redis.set(this.sKey(tokenHash), encode(record), 'PXAT', Math.min(record.idleExpiresAt, record.expiresAt));
      const members = await this.redis.hgetall(uKey);
      const others = Object.entries(members).filter(([f]) => f !== 'k' && f !== tokenHash);
      const exists = await Promise.all(others.map(([f]) => this.redis.exists(this.sKey(f))));
      const live: Array<[string, number]> = [];
      const dead: string[] = [];
      others.forEach(([f, created], i) => {
        if (exists[i] === 1) live.push([f, Number(created)]);
        else dead.push(f);
      });
      live.push([tokenHash, record.createdAt]);
      live.sort((a, b) => a[1] - b[1]);
      const evicted = live.slice(0, Math.max(0, live.length - opts.maxPerUser)).map(([f]) => f);
      const tx = this.redis.multi();
      if (dead.length || evicted.length) tx.hdel(uKey, ...dead, ...evicted);
      tx.hset(uKey, 'k', sessionKey, tokenHash, String(record.createdAt));
      tx.pexpireat(uKey, record.expiresAt, 'GT');
      tx.pexpireat(uKey, record.expiresAt, 'NX');
      await tx.exec();
      if (evicted.length) {
        await this.delEach(evicted);
        await this.publish(evicted);
      }
      return evicted;
    });
  }

  async get(tokenHash: string): Promise<SessionRecord | undefined> {
    const v = await this.run('get', () => this.redis.get(this.sKey(tokenHash)));
    if (v === null) return undefined;
    const r = decode(v);
    const now = Date.now();
    return r && now < r.idleExpiresAt && now < r.expiresAt ? r : undefined;
  }

  async touch(tokenHash: string, idleExpiresAt: number): Promise<boolean> {
    const done = await this.run('touch', () =>
      (this.redis as unknown as { wxgateTouch(k: string, at: string, at36: string): Promise<number> }).wxgateTouch(
        this.sKey(tokenHash),
        String(idleExpiresAt),
        idleExpiresAt.toString(36),
      ),
    );
    return done === 1;
  }

  async revoke(tokenHash: string): Promise<boolean> {
    return this.run('revoke', async () => {
      const key = this.sKey(tokenHash);
      const v = await this.redis.get(key);
      if (v === null) return false;
      await this.redis.del(key);
      const r = decode(v);
      if (r) await this.redis.hdel(this.uKey(r.appid, r.openid), tokenHash);
      await this.publish([tokenHash]);
      return true;
    });
  }

  async revokeAll(appid: string, openid: string): Promise<number> {
    return this.run('revokeAll', async () => {
      const uKey = this.uKey(appid, openid);
      const hashes = (await this.redis.hkeys(uKey)).filter((f) => f !== 'k');
      if (hashes.length === 0) return 0;
      const deleted = await this.delEach(hashes);
      await this.redis.hdel(uKey, ...hashes);
      await this.publish(hashes);
      return deleted;
    });
  }

  async list(appid: string, openid: string): Promise<Array<{ tokenHash: string; record: SessionRecord }>> {
    return this.run('list', async () => {
      const hashes = (await this.redis.hkeys(this.uKey(appid, openid))).filter((f) => f !== 'k');
      if (hashes.length === 0) return [];
      const values = await Promise.all(hashes.map((h) => this.redis.get(this.sKey(h))));
      const now = Date.now();
      const out: Array<{ tokenHash: string; record: SessionRecord }> = [];
      hashes.forEach((tokenHash, i) => {
        const v = values[i];
        const record = v ? decode(v) : undefined;
        if (record && now < record.idleExpiresAt && now < record.expiresAt) out.push({ tokenHash, record });
      });
      return out.sort((a, b) => a.record.createdAt - b.record.createdAt);
    });
  }

  async getSessionKey(appid: string, openid: string): Promise<string | undefined> {
    return (await this.run('getSessionKey', () => this.redis.hget(this.uKey(appid, openid), 'k'))) ?? undefined;
  }

  onInvalidate(listener: (inv: Invalidation) => void): void {
    this.listeners.push(listener);
  }

  async ping(): Promise<void> {
    await this.run('ping', () => this.redis.ping());
  }

  async close(): Promise<void> {
    for (const c of [this.sub, this.redis]) {
      try {
        await c.quit();
      } catch {
        c.disconnect();
      }
    }
  }
}

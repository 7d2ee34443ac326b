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
  /**
   * A connection that has commands waiting and receives nothing for this long is declared dead and
   * replaced (a Redis that vanished without closing the TCP connection). Default max(4 × commandTimeout, 2 s).
   * (A revocation may go unheard for up to subscriberCheckInterval + socketTimeout; the session cache's ttl
   * bounds that anyway.)
   */
  socketTimeout?: number;
  /** How often the subscriber connection is checked with PING, so a dead one is noticed (ms). Default 5 s. */
  subscriberCheckInterval?: number;
  metrics?: Metrics;
  logger?: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
}

/*
 * Key layout (Redis ≥ 7.0):
 *   {prefix}s:{tokenHash}        string "appid\topenid\tunionid\tcreatedAt\texpiresAt\tidleExpiresAt"
 *                                (times in base 36 ms; unionid may be empty), PEXPIREAT = the idle deadline,
 *                                which is never past expiresAt. The token itself is never stored. Once the
 *                                user grants their phone number, it stands as a 4th field after unionid
 *                                ("…\tunionid\t+8613800138000\tcreatedAt…"); sessions without one keep 6.
 *   {prefix}u:{appid}:{openid}   hash: "k" → the user's current session_key, tokenHash → createdAt (ms);
 *                                PEXPIREAT = the latest expiresAt of the user's sessions. Members whose
 *                                session key has expired are dropped at the user's next login.
 *   {prefix}invalidate           pub/sub channel: revoked token hashes, comma-separated
 * (appid never contains ":", config checks it, so "u:{appid}:{openid}" is unambiguous.)
 *
 * Measured with the default prefix on Redis 7.0 (test/session-store.test.ts): about 490 bytes of
 * used_memory per session when every user has one session, about 350 with three sessions per user.
 *
 * On a single node or behind Sentinel, create() is one Lua script: the limit of sessions per user holds
 * under concurrent logins, and a session is never outside its user's index. On a Cluster the session
 * key and the user's index live in different slots, so create() is a few single-key commands instead
 * (the limit may then be exceeded by concurrent logins of the same user, by one per racing login).
 */
const SEP = '\t';

function encode(r: SessionRecord): string {
  const unionid = r.unionid ?? '';
  if (r.appid.includes(SEP) || r.openid.includes(SEP) || unionid.includes(SEP) || r.phone?.includes(SEP)) {
    throw new TypeError('appid, openid, unionid and phone must not contain a tab');
  }
  const t = (ms: number) => Math.floor(ms).toString(36);
  return [r.appid, r.openid, unionid, ...(r.phone ? [r.phone] : []), t(r.createdAt), t(r.expiresAt), t(r.idleExpiresAt)].join(SEP);
}

function decode(v: string): SessionRecord | undefined {
  const f = v.split(SEP);
  if (f.length !== 6 && f.length !== 7) return undefined;
  const phone = f.length === 7 ? f.splice(3, 1)[0] : undefined;
  const [appid, openid, unionid, created, expires, idle] = f as [string, string, string, string, string, string];
  const r: SessionRecord = {
    appid,
    openid,
    ...(unionid ? { unionid } : {}),
    ...(phone ? { phone } : {}),
    createdAt: parseInt(created, 36),
    expiresAt: parseInt(expires, 36),
    idleExpiresAt: parseInt(idle, 36),
  };
  return Number.isFinite(r.createdAt) && Number.isFinite(r.expiresAt) && Number.isFinite(r.idleExpiresAt) ? r : undefined;
}

const alive = (r: SessionRecord, now: number) => now < r.idleExpiresAt && now < r.expiresAt;

/**
 * Moves a session's idle deadline forward (never back, never past expiresAt) if the session still exists.
 * KEYS: session. ARGV: new idle deadline in ms, the same in base 36. Returns 1, or 0 when the session is gone.
 */
const TOUCH = String.raw`
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local head, exp36, idle36 = string.match(v, '^(.*\t)([0-9a-z]+)\t([0-9a-z]+)$')
if not head then return 0 end
local exp = tonumber(exp36, 36)
local at, at36 = tonumber(ARGV[1]), ARGV[2]
if at >= exp then at, at36 = exp, exp36 end
if at <= tonumber(idle36, 36) then return 1 end
redis.call('SET', KEYS[1], head .. exp36 .. '\t' .. at36, 'PXAT', string.format('%.0f', at))
return 1`;

/**
 * Puts the phone number into a session's value (after unionid, replacing one there), keeping its expiry,
 * and publishes the hash so every replica drops its cached copy.
 * KEYS: session. ARGV: phone, invalidation channel, tokenHash. Returns 1, or 0 when the session is gone.
 */
const SET_PHONE = String.raw`
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local who, rest = string.match(v, '^([^	]*	[^	]*	[^	]*	)(.*)$')
local times = rest and string.match(rest, '([0-9a-z]+	[0-9a-z]+	[0-9a-z]+)$')
if not times then return 0 end
redis.call('SET', KEYS[1], who .. ARGV[1] .. '	' .. times, 'KEEPTTL')
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1`;

/**
 * A login, atomically: drops index members whose session has expired, revokes the oldest live sessions
 * beyond maxPerUser (the new one is the newest and always stays), writes the session, indexes it, sets the
 * session_key and the index's expiry, and publishes the evicted hashes. Returns them.
 * KEYS: user index, new session. ARGV: session value, its PXAT, tokenHash, createdAt, session_key,
 * index PXAT, maxPerUser (>= 1), session key prefix, invalidation channel.
 * (It touches the other sessions' keys too, not declared in KEYS: single node or Sentinel only.)
 */
const CREATE = String.raw`
local u, s, h, prefix = KEYS[1], KEYS[2], ARGV[3], ARGV[8]
local flat = redis.call('HGETALL', u)
local live, drop = {}, {}
for i = 1, #flat, 2 do
  local f = flat[i]
  if f ~= 'k' and f ~= h then
    if redis.call('EXISTS', prefix .. f) == 1 then
      live[#live + 1] = { f, tonumber(flat[i + 1]) or 0 }
    else
      drop[#drop + 1] = f
    end
  end
end
table.sort(live, function(a, b)
  if a[2] ~= b[2] then return a[2] < b[2] end
  return a[1] < b[1]
end)
local evicted = {}
for i = 1, #live + 1 - tonumber(ARGV[7]) do
  local f = live[i][1]
  evicted[#evicted + 1] = f
  drop[#drop + 1] = f
  redis.call('DEL', prefix .. f)
end
for i = 1, #drop, 500 do
  redis.call('HDEL', u, unpack(drop, i, math.min(i + 499, #drop)))
end
redis.call('SET', s, ARGV[1], 'PXAT', ARGV[2])
redis.call('HSET', u, 'k', ARGV[5], h, ARGV[4])
redis.call('PEXPIREAT', u, ARGV[6], 'GT')
redis.call('PEXPIREAT', u, ARGV[6], 'NX')
if #evicted > 0 then redis.call('PUBLISH', ARGV[9], table.concat(evicted, ',')) end
return evicted`;

interface Scripts {
  wxgateTouch(sKey: string, at: string, at36: string): Promise<number>;
  wxgateSetPhone(sKey: string, phone: string, channel: string, tokenHash: string): Promise<number>;
  wxgateCreate(uKey: string, sKey: string, ...argv: string[]): Promise<string[]>;
}

export type RedisClient = Redis | Cluster;

/** Reconnect forever, with capped exponential backoff and ±20% jitter (replicas must not reconnect in step). */
export function backoff(times: number): number {
  return Math.round(Math.min(50 * 2 ** Math.min(times, 6), 2000) * (0.8 + Math.random() * 0.4));
}

/**
 * After a failover the old master answers READONLY: behind Sentinel (or in a Cluster) a reconnection
 * finds the new one, so reconnect, but at most once a second (Sentinel may not have switched yet, and
 * every reconnection fails the commands in flight and empties the session caches). A plain `url` would
 * lead back to the same server: there the connection is kept, so that sessions are still read while
 * writes (logins) answer 503.
 */
function readonlyReconnect(): (err: Error) => boolean {
  let last = 0;
  return (err) => {
    if (!/^READONLY/.test(err.message) || Date.now() - last < 1000) return false;
    last = Date.now();
    return true;
  };
}

/** Redis refusing our credentials: reconnecting will not help until they match. */
const AUTH_REFUSED = /^(WRONGPASS|NOAUTH|ERR invalid password)/;

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
 * An error's message fit for logs and for StoreUnavailableError: first line only, no command arguments
 * (Redis echoes them in some errors), no long token-like strings (hashes, session keys, openids).
 */
export function safeMessage(err: unknown): string {
  const raw = err instanceof Error ? err.message : String(err);
  return (raw.split('\n')[0] ?? '')
    .replace(/(with args beginning with:).*$/i, '$1 …')
    .replace(/[A-Za-z0-9+/_=-]{24,}/g, '…')
    .slice(0, 200);
}

/** A copy of a Redis error without what ioredis attaches to it (the command and its arguments). */
function safeCause(err: unknown): Error {
  const e = new Error(safeMessage(err));
  if (err instanceof Error) e.name = err.name;
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string') Object.assign(e, { code });
  return e;
}

/**
 * Sessions in Redis, shared by every replica. Fails fast: while Redis is away every call rejects at once
 * with StoreUnavailableError (no offline queue), a slow Redis after commandTimeout; a connection that went
 * silent is replaced after socketTimeout; it reconnects by itself with capped, jittered backoff.
 * Revocations are published so other replicas drop their cached copies; whenever invalidations may have
 * been missed (a reconnection), listeners are told 'all'.
 */
export class RedisStore implements SessionStore {
  readonly kind = 'redis' as const;
  readonly redis: RedisClient;
  private readonly sub: RedisClient;
  private readonly listeners: Array<(inv: Invalidation) => void> = [];
  private readonly channel: string;
  private readonly subCheck?: NodeJS.Timeout;
  private wasReady = false;
  private subscribedOnce = false;
  private outage = false;
  private subRefused = false;
  private closed = false;

  constructor(private readonly opts: RedisStoreOptions) {
    const base: RedisOptions = {
      connectTimeout: opts.connectTimeout,
      commandTimeout: opts.commandTimeout,
      socketTimeout: opts.socketTimeout ?? Math.max(4 * opts.commandTimeout, 2000),
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: backoff,
      reconnectOnError: opts.sentinels || opts.cluster ? readonlyReconnect() : undefined,
    };
    this.channel = `${opts.keyPrefix}invalidate`;
    this.redis = createRedisClient(opts, base);
    this.redis.defineCommand('wxgateTouch', { numberOfKeys: 1, lua: TOUCH });
    this.redis.defineCommand('wxgateSetPhone', { numberOfKeys: 1, lua: SET_PHONE });
    this.redis.defineCommand('wxgateCreate', { numberOfKeys: 2, lua: CREATE });
    // The subscriber sends SUBSCRIBE itself at every 'ready' (and PINGs to notice a dead connection).
    this.sub = createRedisClient(opts, { ...base, commandTimeout: undefined });
    opts.metrics?.sessionStoreUp.set(0);

    this.redis.on('ready', () => {
      if (this.closed) return;
      opts.metrics?.sessionStoreUp.set(1);
      if (this.outage) opts.logger?.info({}, 'redis is back');
      this.outage = false;
      // After a drop we may have missed invalidations: cached sessions are not to be trusted.
      if (this.wasReady) this.emit('all');
      this.wasReady = true;
    });
    const down = (err?: unknown) => {
      if (this.closed) return;
      opts.metrics?.sessionStoreUp.set(0);
      if (!this.outage) {
        this.outage = true;
        const message = err ? safeMessage(err) : 'connection closed';
        opts.logger?.warn(
          { err: message },
          AUTH_REFUSED.test(message)
            ? 'redis refuses the credentials of session.redis.url; requests that need it answer 503 until it accepts them'
            : 'redis is unavailable; requests that need it answer 503',
        );
      }
    };
    this.redis.on('error', (err: Error) => down(err));
    this.redis.on('close', () => {
      if (this.wasReady) down();
    });

    this.sub.on('error', () => {}); // the main connection reports outages
    this.sub.on('ready', () => this.subscribe());
    this.sub.on('message', (_channel: string, message: string) => {
      if (message) this.emit(message.split(','));
    });
    if (this.sub instanceof Redis) {
      const sub = this.sub;
      this.subCheck = setInterval(() => {
        if (sub.status === 'ready') sub.ping().catch(() => {});
      }, opts.subscriberCheckInterval ?? 5000).unref();
    }
  }

  /**
   * (Re)subscribes after every connection. Once the subscription is in place, listeners hear 'all' if
   * invalidations may have been missed: after a reconnection, or when sessions could be read before.
   */
  private subscribe(): void {
    if (this.closed) return;
    this.sub.subscribe(this.channel).then(
      () => {
        const missed = this.subscribedOnce || this.wasReady;
        this.subscribedOnce = true;
        this.subRefused = false;
        if (missed && !this.closed) this.emit('all');
      },
      (err: unknown) => {
        // connection lost meanwhile: 'ready' comes again. Refused while connected (ACL?): try again shortly.
        if (this.closed || this.sub.status !== 'ready') return;
        if (!this.subRefused) this.opts.logger?.warn({ err: safeMessage(err) }, 'cannot subscribe to session invalidations; other replicas\' revocations go unheard');
        this.subRefused = true;
        setTimeout(() => this.subscribe(), backoff(5)).unref();
      },
    );
  }

  private sKey(tokenHash: string) {
    return `${this.opts.keyPrefix}s:${tokenHash}`;
  }
  private uKey(appid: string, openid: string) {
    return `${this.opts.keyPrefix}u:${appid}:${openid}`;
  }
  private get scripts(): Scripts {
    return this.redis as unknown as Scripts;
  }

  private emit(inv: Invalidation): void {
    if (inv !== 'all' && inv.length === 0) return;
    for (const l of this.listeners) {
      try {
        l(inv);
      } catch {
        // a listener's failure is not the store's
      }
    }
  }

  /** Runs Redis commands; any failure becomes StoreUnavailableError (never mistaken for "no session"). */
  private async run<T>(op: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      this.opts.metrics?.sessionStoreErrors.inc({ op });
      throw new StoreUnavailableError(`redis ${op} failed: ${safeMessage(err)}`, { cause: safeCause(err) });
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
    const value = encode(record);
    const max = Math.max(1, Math.floor(opts.maxPerUser));
    const sessionAt = Math.min(record.idleExpiresAt, record.expiresAt);
    if (this.redis instanceof Cluster) return this.run('create', () => this.createPerKey(tokenHash, record, value, sessionKey, max));
    return this.run('create', async () => {
      const evicted = await this.scripts.wxgateCreate(
        this.uKey(record.appid, record.openid),
        this.sKey(tokenHash),
        value,
        String(Math.floor(sessionAt)),
        tokenHash,
        String(Math.floor(record.createdAt)),
        sessionKey,
        String(Math.floor(record.expiresAt)),
        String(max),
        this.sKey(''),
        this.channel,
      );
      this.emit(evicted); // the script published them for the other replicas
      return evicted;
    });
  }

  /** create() in single-key commands, for a Cluster: the session first, so it is never unindexed for long. */
  private async createPerKey(tokenHash: string, record: SessionRecord, value: string, sessionKey: string, max: number): Promise<string[]> {
    const uKey = this.uKey(record.appid, record.openid);
    await this.redis.set(this.sKey(tokenHash), value, 'PXAT', Math.floor(Math.min(record.idleExpiresAt, record.expiresAt)));
    const members = await this.redis.hgetall(uKey);
    const others = Object.entries(members).filter(([f]) => f !== 'k' && f !== tokenHash);
    const exists = await Promise.all(others.map(([f]) => this.redis.exists(this.sKey(f))));
    const live: Array<[string, number]> = [];
    const dead: string[] = [];
    others.forEach(([f, created], i) => {
      if (exists[i] === 1) live.push([f, Number(created)]);
      else dead.push(f);
    });
    live.sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : 1));
    const evicted = live.slice(0, Math.max(0, live.length + 1 - max)).map(([f]) => f);
    const tx = this.redis.multi();
    if (dead.length || evicted.length) tx.hdel(uKey, ...dead, ...evicted);
    tx.hset(uKey, 'k', sessionKey, tokenHash, String(Math.floor(record.createdAt)));
    tx.pexpireat(uKey, Math.floor(record.expiresAt), 'GT');
    tx.pexpireat(uKey, Math.floor(record.expiresAt), 'NX');
    await tx.exec();
    if (evicted.length) {
      await this.delEach(evicted);
      await this.publish(evicted);
    }
    return evicted;
  }

  async get(tokenHash: string): Promise<SessionRecord | undefined> {
    const v = await this.run('get', () => this.redis.get(this.sKey(tokenHash)));
    if (v === null) return undefined;
    const r = decode(v);
    return r && alive(r, Date.now()) ? r : undefined;
  }

  async touch(tokenHash: string, idleExpiresAt: number): Promise<boolean> {
    const at = Math.floor(idleExpiresAt);
    const done = await this.run('touch', () => this.scripts.wxgateTouch(this.sKey(tokenHash), String(at), at.toString(36)));
    return done === 1;
  }

  async setPhone(tokenHash: string, phone: string): Promise<boolean> {
    if (phone.includes(SEP)) throw new TypeError('phone must not contain a tab');
    const done = await this.run('setPhone', () => this.scripts.wxgateSetPhone(this.sKey(tokenHash), phone, this.channel, tokenHash));
    if (done === 1) this.emit([tokenHash]); // the script published it for the other replicas
    return done === 1;
  }

  async revoke(tokenHash: string): Promise<boolean> {
    return this.run('revoke', async () => {
      const v = await this.redis.getdel(this.sKey(tokenHash));
      if (v === null) return false;
      const r = decode(v);
      await Promise.all([r ? this.redis.hdel(this.uKey(r.appid, r.openid), tokenHash) : undefined, this.publish([tokenHash])]);
      return true;
    });
  }

  async revokeAll(appid: string, openid: string): Promise<number> {
    return this.run('revokeAll', async () => {
      const uKey = this.uKey(appid, openid);
      const hashes = (await this.redis.hkeys(uKey)).filter((f) => f !== 'k');
      if (hashes.length === 0) return 0;
      const deleted = await this.delEach(hashes);
      await Promise.all([this.redis.hdel(uKey, ...hashes), this.publish(hashes)]);
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
        if (record && alive(record, now)) out.push({ tokenHash, record });
      });
      return out.sort((a, b) => a.record.createdAt - b.record.createdAt || (a.tokenHash < b.tokenHash ? -1 : 1));
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

  /** QUITs both connections (waiting at most commandTimeout), then drops them whatever happened. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.subCheck);
    await Promise.all(
      [this.sub, this.redis].map(async (c) => {
        let timer: NodeJS.Timeout | undefined;
        try {
          await Promise.race([c.quit(), new Promise((_, reject) => (timer = setTimeout(reject, this.opts.commandTimeout)))]);
        } catch {
          // down or slow: disconnecting is all there is to do
        } finally {
          clearTimeout(timer);
          c.disconnect();
        }
      }),
    );
  }
}

import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { Metrics } from '../metrics/metrics.js';
import { TOKEN_HASH_LENGTH, UID_LENGTH, userId } from './tokens.js';
import { accountId, isAccountId } from './accounts.js';
import { keptE164, StoreUnavailableError, type Flow, type Identity, type Invalidation, type KeptPhone, type SessionRecord, type SessionStore } from './types.js';

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
 * Key layout (Redis ≥ 7.0): one hash per user, found from the token.
 *   {prefix}u:{uid}      hash, uid = base64url of the first 96 bits of SHA-256("appid\nopenid") (16 chars):
 *                          "w"     → "appid\topenid" (who the hash belongs to; checked at every login, so two
 *                                    users whose ids collide are never merged: the login fails instead)
 *                          "n"     → the unionid from the user's latest login (absent when WeChat gave none)
 *                          "k"     → the user's current session_key (from their latest login)
 *                          "p"     → the phone number the user granted (POST /wx/phone), the user's, not a
 *                                    session's: "phoneNumber\tpurePhoneNumber\tcountryCode\tgrantedAt36";
 *                                    absent until granted (one field per user who did: no cost per session)
 *                          {field} → one per session: "[phone\t]createdAt\texpiresAt\tidleExpiresAt[\tF]" (times
 *                                    in base 36 ms; the phone number, E.164, only in fields an earlier
 *                                    version wrote when the user granted it in that session: still read,
 *                                    "p" wins, and dropped when the number is revoked;
 *                                    F: the flow that made the session, one capital letter (FLOW_CODES),
 *                                    absent for the mini-program's own logins and for records from before
 *                                    flows existed, which read as miniprogram)
 *                        PEXPIREAT = the latest idle deadline of the user's sessions (never past a session's
 *                        expiresAt): set at each login, moved forward (GT) by activity, tightened when a
 *                        session is revoked; the key is deleted with the user's last session. A session's
 *                        own deadlines are checked from its field (dead fields are dropped at the next login).
 *   {prefix}a:{account} hash, for a unionid's account only (accounts.ts: "u" + 96 bits of a hash of the unionid):
 *                          {uid} → "" (one per identity that logged in with the unionid: its user key's id)
 *                        PEXPIREAT = the latest absolute deadline of the sessions made for it (never earlier:
 *                        written at each login of a unionid, after the user's script: another key, so another
 *                        command, on a Cluster too). What the admin API lists a person's identities from (each
 *                        through its user key, while that lives); the request path never reads it. As small
 *                        as a key gets (measured at 100,000 sessions, half the users with a unionid: +103 B per
 *                        session with "appid\topenid" fields and the unionid, which broke the 400 B target;
 *                        uids only: see BENCHMARKS.md). An identity's own account ("i" + uid) has no key: its
 *                        user key is found from the id.
 *   {prefix}invalidate   pub/sub channel: revoked token hashes, comma-separated
 * A token is base64url(uid's 12 bytes ‖ 32 random bytes) (59 chars); its hash, what callers hold, is the
 * uid (16 chars) followed by {field} = base64url of the first 128 bits of SHA-256(token) (22 chars). The
 * token itself is never stored, nor anything of its random part but that hash (see tokens.ts).
 *
 * Every element stays well under hash-max-listpack-value (64 bytes; openids and unionids are 28
 * characters), so Redis keeps each user's hash as a compact listpack up to hash-max-listpack-entries (128)
 * fields, i.e. up to about 125 sessions per user; beyond that it still works, as a plain hash table.
 * One key per user instead of two keys per session: Redis's ~90 bytes of per-key bookkeeping (key,
 * dict entry, expiry entry) are paid once per user. Measured with the default prefix on Redis 7.0 (npm run
 * bench:memory, 1,000,000 sessions, half the users with a unionid): about 305 bytes of used_memory per
 * session when every user has one session (482 with the earlier two keys per session), about 140 with
 * three sessions per user.
 *
 * Every operation touches one key, so each is one command or one Lua script, atomic alike on a single
 * node, behind Sentinel and on a Cluster (the limit of sessions per user holds under concurrent logins
 * everywhere).
 *
 * Sessions written by the earlier layout ({prefix}s:{tokenHash} strings and {prefix}u:{appid}:{openid}
 * indexes, 43-character tokens) are not read: after the upgrade their tokens are refused (401) and users
 * log in again; the old keys expire by themselves.
 */
const SEP = '\t';

/** A session's flow in its field value: one capital letter (never a base-36 digit); none = miniprogram. */
const FLOW_CODES: Readonly<Record<Exclude<Flow, 'miniprogram'>, string>> = { mp: 'P', open: 'W', scan: 'S', mpqr: 'Q' };
const FLOW_OF: ReadonlyMap<string, Flow> = new Map(Object.entries(FLOW_CODES).map(([f, c]) => [c, f as Flow]));

/** A session's field value: "[phone\t]createdAt36\texpiresAt36\tidleExpiresAt36[\tF]". */
function encodeTimes(r: SessionRecord): string {
  if (r.phone?.includes(SEP)) throw new TypeError('phone must not contain a tab');
  const t = (ms: number) => Math.floor(ms).toString(36);
  const flow = r.flow === 'miniprogram' || r.flow === undefined ? '' : SEP + FLOW_CODES[r.flow];
  if (flow === `${SEP}undefined`) throw new TypeError(`unknown session flow ${JSON.stringify(r.flow)}`);
  return `${r.phone ? r.phone + SEP : ''}${t(r.createdAt)}${SEP}${t(r.expiresAt)}${SEP}${t(r.idleExpiresAt)}${flow}`;
}

/**
 * The record from a session's field value and the user's "w" and "n", or undefined when malformed (or of
 * a flow this version does not know: such a session is refused, never taken for a mini-program one).
 */
function decode(v: string, who: string, unionid: string | null): SessionRecord | undefined {
  let flow: Flow = 'miniprogram';
  if (v.length > 2 && v.charCodeAt(v.length - 2) === 9 && /[A-Z]/.test(v[v.length - 1]!)) {
    const known = FLOW_OF.get(v[v.length - 1]!);
    if (!known) return undefined;
    flow = known;
    v = v.slice(0, -2);
  }
  const f = v.split(SEP);
  if (f.length !== 3 && f.length !== 4) return undefined;
  const phone = f.length === 4 ? f.shift() : undefined;
  const w = who.split(SEP);
  if (w.length !== 2) return undefined;
  const [appid, openid] = w as [string, string];
  const [created, expires, idle] = f as [string, string, string];
  const r: SessionRecord = {
    appid,
    openid,
    ...(unionid ? { unionid } : {}),
    flow,
    ...(phone ? { phone } : {}),
    createdAt: parseInt(created, 36),
    expiresAt: parseInt(expires, 36),
    idleExpiresAt: parseInt(idle, 36),
  };
  return Number.isFinite(r.createdAt) && Number.isFinite(r.expiresAt) && Number.isFinite(r.idleExpiresAt) ? r : undefined;
}

/** "p": "phoneNumber\tpurePhoneNumber\tcountryCode\tgrantedAt36". */
function encodePhone(p: KeptPhone): string {
  const parts = [p.phoneNumber, p.purePhoneNumber, p.countryCode];
  if (parts.some((x) => x === '' || x.includes(SEP))) throw new TypeError('a phone number must be non-empty and without a tab');
  return [...parts, Math.floor(p.grantedAt).toString(36)].join(SEP);
}
function decodePhone(v: string): KeptPhone | undefined {
  const f = v.split(SEP);
  if (f.length !== 4) return undefined;
  const grantedAt = parseInt(f[3]!, 36);
  return Number.isFinite(grantedAt) ? { phoneNumber: f[0]!, purePhoneNumber: f[1]!, countryCode: f[2]!, grantedAt } : undefined;
}
/** The record with the user's kept number ("p") as its phone, when there is one (it wins over a session's own). */
function withKeptPhone(r: SessionRecord | undefined, p: string | null | undefined): SessionRecord | undefined {
  const kept = r && p ? decodePhone(p) : undefined;
  return kept ? { ...r!, phone: keptE164(kept) } : r;
}

const alive = (r: SessionRecord, now: number) => now < r.idleExpiresAt && now < r.expiresAt;

/**
 * What every script starts with. times(v): a session field's phone ('' if none), its three times in base
 * 36 and its flow suffix ('' or "\tF", kept as it is when the field is rewritten), or nil when malformed.
 * deadline(e36, i36): when the session ends if idle (ms). isSession(f): the user's fields that are
 * sessions (the others are one character).
 */
const PRELUDE = String.raw`
local function times(v)
  local body, fl = string.match(v, '^(.*)(\t[A-Z])$')
  if not body then body, fl = v, '' end
  local c, e, i = string.match(body, '^([0-9a-z]+)\t([0-9a-z]+)\t([0-9a-z]+)$')
  if c then return '', c, e, i, fl end
  local p
  p, c, e, i = string.match(body, '^([^\t]*)\t([0-9a-z]+)\t([0-9a-z]+)\t([0-9a-z]+)$')
  return p, c, e, i, fl
end
local function deadline(e36, i36)
  return math.min(tonumber(e36, 36), tonumber(i36, 36))
end
local function isSession(f)
  return #f > 1
end
`;

/**
 * A login, atomically: refuses a hash that belongs to another user (a uid collision), drops the user's
 * dead sessions, revokes the oldest live ones beyond maxPerUser (the new one is the newest and always
 * stays), writes the session, "w", "n" and "k", sets the key's expiry to the latest idle deadline of
 * the sessions kept, and publishes the evicted hashes. Returns them.
 * KEYS: user. ARGV: field, its value, its deadline (ms), "appid\topenid", unionid ('' if none),
 * session_key ('' if none: "k" is left as it is), maxPerUser (>= 1), now (ms), uid, invalidation channel.
 */
const CREATE = PRELUDE + String.raw`
local u, field, who, union = KEYS[1], ARGV[1], ARGV[4], ARGV[5]
local max, now, uid = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local flat = redis.call('HGETALL', u)
local live, drop = {}, {}
for i = 1, #flat, 2 do
  local f, v = flat[i], flat[i + 1]
  if f == 'w' then
    if v ~= who then return redis.error_reply('ERR wxgate: user id collision, login refused') end
  elseif isSession(f) and f ~= field then
    local _, c, e, d = times(v)
    if c and now < deadline(e, d) then
      live[#live + 1] = { f, tonumber(c, 36), deadline(e, d) }
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
local cut = #live + 1 - max
for i = 1, math.max(cut, 0) do
  drop[#drop + 1] = live[i][1]
  evicted[#evicted + 1] = uid .. live[i][1]
end
local latest = tonumber(ARGV[3])
for i = math.max(cut, 0) + 1, #live do
  if live[i][3] > latest then latest = live[i][3] end
end
-- HSET first: under maxmemory Redis refuses a script's first write if it may grow memory, and only that
-- one, so a login refused as out of memory changes nothing
local set = { 'w', who, field, ARGV[2] }
if ARGV[6] ~= '' then set[#set + 1], set[#set + 2] = 'k', ARGV[6] end
if union ~= '' then set[#set + 1], set[#set + 2] = 'n', union else drop[#drop + 1] = 'n' end
redis.call('HSET', u, unpack(set))
for i = 1, #drop, 500 do
  redis.call('HDEL', u, unpack(drop, i, math.min(i + 499, #drop)))
end
redis.call('PEXPIREAT', u, string.format('%.0f', latest))
if #evicted > 0 then redis.call('PUBLISH', ARGV[10], table.concat(evicted, ',')) end
return evicted`;

/**
 * Moves a session's idle deadline forward (never back, never past expiresAt) if the session is alive,
 * and the key's expiry with it (GT: never earlier than another session's deadline).
 * KEYS: user. ARGV: field, new idle deadline (ms), the same in base 36, now (ms).
 * Returns 1, or 0 when the session is gone.
 */
const TOUCH = PRELUDE + String.raw`
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local phone, c36, e36, i36, fl = times(v)
if not c36 or tonumber(ARGV[4]) >= deadline(e36, i36) then return 0 end
local exp = tonumber(e36, 36)
local at, at36 = tonumber(ARGV[2]), ARGV[3]
if at >= exp then at, at36 = exp, e36 end
if at <= tonumber(i36, 36) then return 1 end
if phone ~= '' then phone = phone .. '\t' end
redis.call('HSET', KEYS[1], ARGV[1], phone .. c36 .. '\t' .. e36 .. '\t' .. at36 .. fl)
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', at), 'GT')
return 1`;

/**
 * Keeps the user's phone number ("p") if the key is the user's ("w" matches), and publishes every session's
 * hash so every replica drops its cached copies. KEYS: user. ARGV: "appid\topenid", "p"'s value, uid,
 * invalidation channel. Returns { 1 or 0 when the store holds no session of the user, { hashes } }.
 */
const SET_PHONE = PRELUDE + String.raw`
local flat = redis.call('HGETALL', KEYS[1])
local hashes, mine = {}, false
for i = 1, #flat, 2 do
  local f = flat[i]
  if f == 'w' then mine = flat[i + 1] == ARGV[1]
  elseif isSession(f) then hashes[#hashes + 1] = ARGV[3] .. f end
end
if not mine or #hashes == 0 then return { 0, {} } end
redis.call('HSET', KEYS[1], 'p', ARGV[2])
redis.call('PUBLISH', ARGV[4], table.concat(hashes, ','))
return { 1, hashes }`;

/**
 * Forgets the user's phone number: "p", and the number in any session field an earlier version put it in
 * (the field keeps its times and flow); publishes every session's hash. KEYS: user. ARGV: "appid\topenid",
 * uid, invalidation channel. Returns { 1 when there was a number, else 0; { hashes } }.
 */
const CLEAR_PHONE = PRELUDE + String.raw`
local u = KEYS[1]
local flat = redis.call('HGETALL', u)
local hashes, mine, had, set = {}, false, 0, {}
for i = 1, #flat, 2 do
  local f, v = flat[i], flat[i + 1]
  if f == 'w' then mine = v == ARGV[1]
  elseif f == 'p' then had = 1
  elseif isSession(f) then
    hashes[#hashes + 1] = ARGV[2] .. f
    local phone, c, e, d, fl = times(v)
    if c and phone ~= '' then
      had = 1
      set[#set + 1], set[#set + 2] = f, c .. '\t' .. e .. '\t' .. d .. fl
    end
  end
end
if not mine then return { 0, {} } end
redis.call('HDEL', u, 'p')
if #set > 0 then redis.call('HSET', u, unpack(set)) end
if #hashes > 0 then redis.call('PUBLISH', ARGV[3], table.concat(hashes, ',')) end
return { had, hashes }`;

/**
 * Deletes one session, and the whole key when no live session is left (else the key's expiry becomes the
 * latest deadline of those left); publishes the hash. KEYS: user. ARGV: field, now (ms), invalidation
 * channel, tokenHash. Returns 1 when the session was alive, 0 when it was unknown or already dead.
 */
const REVOKE = PRELUDE + String.raw`
local u, now = KEYS[1], tonumber(ARGV[2])
local v = redis.call('HGET', u, ARGV[1])
if not v then return 0 end
redis.call('HDEL', u, ARGV[1])
local _, c36, e36, i36 = times(v)
local was = c36 and now < deadline(e36, i36)
local flat = redis.call('HGETALL', u)
local latest
for i = 1, #flat, 2 do
  if isSession(flat[i]) then
    local _, c, e, d = times(flat[i + 1])
    if c and now < deadline(e, d) and (not latest or deadline(e, d) > latest) then latest = deadline(e, d) end
  end
end
if latest then
  redis.call('PEXPIREAT', u, string.format('%.0f', latest))
else
  redis.call('DEL', u)
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
if was then return 1 end
return 0`;

/**
 * Deletes the user's key if it is theirs ("w" matches) and publishes every session's hash.
 * KEYS: user. ARGV: "appid\topenid", now (ms), uid, invalidation channel.
 * Returns { live sessions ended, { their hashes and the dead ones' } }.
 */
const REVOKE_ALL = PRELUDE + String.raw`
local flat = redis.call('HGETALL', KEYS[1])
local who, now, uid = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local mine, n, hashes = false, 0, {}
for i = 1, #flat, 2 do
  local f, v = flat[i], flat[i + 1]
  if f == 'w' then
    mine = v == who
  elseif isSession(f) then
    hashes[#hashes + 1] = uid .. f
    local _, c, e, d = times(v)
    if c and now < deadline(e, d) then n = n + 1 end
  end
end
if not mine then return { 0, {} } end
redis.call('DEL', KEYS[1])
if #hashes > 0 then redis.call('PUBLISH', ARGV[4], table.concat(hashes, ',')) end
return { n, hashes }`;

/**
 * Records an identity in its unionid's account and keeps the account at least until the session's
 * absolute deadline. KEYS: account. ARGV: the identity's uid, deadline (ms).
 */
const LINK = String.raw`
redis.call('HSET', KEYS[1], ARGV[1], '')
if redis.call('PEXPIRETIME', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIREAT', KEYS[1], ARGV[2]) end
return 1`;

interface Scripts {
  wxgateLink(aKey: string, uid: string, at: string): Promise<number>;
  wxgateCreate(uKey: string, ...argv: string[]): Promise<string[]>;
  wxgateTouch(uKey: string, field: string, at: string, at36: string, now: string): Promise<number>;
  wxgateSetPhone(uKey: string, who: string, value: string, uid: string, channel: string): Promise<[number, string[]]>;
  wxgateClearPhone(uKey: string, who: string, uid: string, channel: string): Promise<[number, string[]]>;
  wxgateRevoke(uKey: string, field: string, now: string, channel: string, tokenHash: string): Promise<number>;
  wxgateRevokeAll(uKey: string, who: string, now: string, uid: string, channel: string): Promise<[number, string[]]>;
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
    this.redis.defineCommand('wxgateCreate', { numberOfKeys: 1, lua: CREATE });
    this.redis.defineCommand('wxgateTouch', { numberOfKeys: 1, lua: TOUCH });
    this.redis.defineCommand('wxgateSetPhone', { numberOfKeys: 1, lua: SET_PHONE });
    this.redis.defineCommand('wxgateClearPhone', { numberOfKeys: 1, lua: CLEAR_PHONE });
    this.redis.defineCommand('wxgateRevoke', { numberOfKeys: 1, lua: REVOKE });
    this.redis.defineCommand('wxgateRevokeAll', { numberOfKeys: 1, lua: REVOKE_ALL });
    this.redis.defineCommand('wxgateLink', { numberOfKeys: 1, lua: LINK });
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

  /** The user's key and the session's field in it, from a token hash; undefined when malformed. */
  private split(tokenHash: string): { key: string; field: string } | undefined {
    if (tokenHash.length !== TOKEN_HASH_LENGTH) return undefined;
    return { key: `${this.opts.keyPrefix}u:${tokenHash.slice(0, UID_LENGTH)}`, field: tokenHash.slice(UID_LENGTH) };
  }
  private aKey(account: string) {
    return `${this.opts.keyPrefix}a:${account}`;
  }
  private uKey(uid: string) {
    return `${this.opts.keyPrefix}u:${uid}`;
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

  async create(tokenHash: string, record: SessionRecord, sessionKey: string | undefined, opts: { maxPerUser: number }): Promise<string[]> {
    const uid = userId(record.appid, record.openid);
    const at = this.split(tokenHash);
    if (!at || !tokenHash.startsWith(uid)) throw new TypeError("the token hash is not one of this user's tokens");
    const unionid = record.unionid ?? '';
    if (record.appid.includes(SEP) || record.openid.includes(SEP) || unionid.includes(SEP)) {
      throw new TypeError('appid, openid and unionid must not contain a tab');
    }
    const value = encodeTimes(record);
    const max = Math.max(1, Math.floor(opts.maxPerUser));
    const sessionAt = Math.floor(Math.min(record.idleExpiresAt, record.expiresAt));
    return this.run('create', async () => {
      const evicted = await this.scripts.wxgateCreate(
        at.key,
        at.field,
        value,
        String(sessionAt),
        record.appid + SEP + record.openid,
        unionid,
        sessionKey ?? '', // (none: "k" stays as it is)
        String(max),
        String(Date.now()),
        uid,
        this.channel,
      );
      this.emit(evicted); // the script published them for the other replicas
      if (record.unionid) {
        const at = String(Math.floor(record.expiresAt));
        await this.scripts.wxgateLink(this.aKey(accountId(record)), uid, at);
      }
      return evicted;
    });
  }

  async get(tokenHash: string): Promise<SessionRecord | undefined> {
    const at = this.split(tokenHash);
    if (!at) return undefined;
    const [v, who, unionid, phone] = await this.run('get', () => this.redis.hmget(at.key, at.field, 'w', 'n', 'p'));
    if (!v || !who) return undefined;
    const r = withKeptPhone(decode(v, who, unionid ?? null), phone);
    return r && alive(r, Date.now()) ? r : undefined;
  }

  async touch(tokenHash: string, idleExpiresAt: number): Promise<boolean> {
    const at = this.split(tokenHash);
    if (!at) return false;
    const ms = Math.floor(idleExpiresAt);
    const done = await this.run('touch', () => this.scripts.wxgateTouch(at.key, at.field, String(ms), ms.toString(36), String(Date.now())));
    return done === 1;
  }

  async setPhone(appid: string, openid: string, phone: KeptPhone): Promise<boolean> {
    const value = encodePhone(phone);
    const uid = userId(appid, openid);
    const [done, hashes] = await this.run('setPhone', () => this.scripts.wxgateSetPhone(this.uKey(uid), appid + SEP + openid, value, uid, this.channel));
    this.emit(hashes); // the script published them for the other replicas
    return done === 1;
  }

  async getPhone(appid: string, openid: string): Promise<KeptPhone | undefined> {
    const [p, who] = await this.run('getPhone', () => this.redis.hmget(this.uKey(userId(appid, openid)), 'p', 'w'));
    return p != null && who === appid + SEP + openid ? decodePhone(p) : undefined;
  }

  async clearPhone(appid: string, openid: string): Promise<boolean> {
    const uid = userId(appid, openid);
    const [had, hashes] = await this.run('clearPhone', () => this.scripts.wxgateClearPhone(this.uKey(uid), appid + SEP + openid, uid, this.channel));
    this.emit(hashes); // the script published them for the other replicas
    return had === 1;
  }

  async revoke(tokenHash: string): Promise<boolean> {
    const at = this.split(tokenHash);
    if (!at) return false;
    const done = await this.run('revoke', () => this.scripts.wxgateRevoke(at.key, at.field, String(Date.now()), this.channel, tokenHash));
    this.emit([tokenHash]); // the script published it for the other replicas (if it was there)
    return done === 1;
  }

  async revokeAll(appid: string, openid: string): Promise<number> {
    const uid = userId(appid, openid);
    const [n, hashes] = await this.run('revokeAll', () => this.scripts.wxgateRevokeAll(this.uKey(uid), appid + SEP + openid, String(Date.now()), uid, this.channel));
    this.emit(hashes); // the script published them for the other replicas
    return n;
  }

  async list(appid: string, openid: string): Promise<Array<{ tokenHash: string; record: SessionRecord }>> {
    const uid = userId(appid, openid);
    const fields = await this.run('list', () => this.redis.hgetall(this.uKey(uid)));
    const who = appid + SEP + openid;
    if (fields.w !== who) return []; // nobody, or another user whose id collides with this one's
    const now = Date.now();
    const out: Array<{ tokenHash: string; record: SessionRecord }> = [];
    for (const [f, v] of Object.entries(fields)) {
      if (f.length !== TOKEN_HASH_LENGTH - UID_LENGTH) continue;
      const record = withKeptPhone(decode(v, who, fields.n ?? null), fields.p);
      if (record && alive(record, now)) out.push({ tokenHash: uid + f, record });
    }
    return out.sort((a, b) => a.record.createdAt - b.record.createdAt || (a.tokenHash < b.tokenHash ? -1 : 1));
  }

  async linkedUnionid(appid: string, openid: string): Promise<string | undefined> {
    const [n, who] = await this.run('linkedUnionid', () => this.redis.hmget(this.uKey(userId(appid, openid)), 'n', 'w'));
    return n !== null && who === appid + SEP + openid ? n : undefined;
  }

  async identities(id: string): Promise<Identity[]> {
    if (!isAccountId(id)) return [];
    if (id.startsWith('i')) {
      const [who, n] = await this.run('identities', () => this.redis.hmget(this.uKey(id.slice(1)), 'w', 'n'));
      const w = who?.split(SEP);
      return w?.length === 2 && n === null ? [{ appid: w[0]!, openid: w[1]! }] : [];
    }
    const uids = await this.run('identities', () => this.redis.hkeys(this.aKey(id)));
    const out: Identity[] = [];
    for (const uid of uids) {
      const [who, n] = await this.run('identities', () => this.redis.hmget(this.uKey(uid), 'w', 'n'));
      const w = who?.split(SEP);
      // gone with its sessions, or linked to another unionid since: not (or no longer) found here
      if (w?.length !== 2 || n === null) continue;
      const identity = { appid: w[0]!, openid: w[1]!, unionid: n };
      if (accountId(identity) === id) out.push(identity);
    }
    return out;
  }

  async getSessionKey(appid: string, openid: string): Promise<string | undefined> {
    const [k, who] = await this.run('getSessionKey', () => this.redis.hmget(this.uKey(userId(appid, openid)), 'k', 'w'));
    return k !== null && who === appid + SEP + openid ? k : undefined;
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

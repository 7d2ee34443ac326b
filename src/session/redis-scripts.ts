import type { RedisClient } from '../redis/client.js';

/** The Lua scripts of the Redis session store (key layout: redis-codec.ts), each on one user's key. */

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

export interface Scripts {
  wxgateLink(aKey: string, uid: string, at: string): Promise<number>;
  wxgateCreate(uKey: string, ...argv: string[]): Promise<string[]>;
  wxgateTouch(uKey: string, field: string, at: string, at36: string, now: string): Promise<number>;
  wxgateSetPhone(uKey: string, who: string, value: string, uid: string, channel: string): Promise<[number, string[]]>;
  wxgateClearPhone(uKey: string, who: string, uid: string, channel: string): Promise<[number, string[]]>;
  wxgateRevoke(uKey: string, field: string, now: string, channel: string, tokenHash: string): Promise<number>;
  wxgateRevokeAll(uKey: string, who: string, now: string, uid: string, channel: string): Promise<[number, string[]]>;
}

/** Defines the scripts on the connection (EVALSHA, loaded again by ioredis when Redis lost them). */
export function sessionScripts(redis: RedisClient): Scripts {
  redis.defineCommand('wxgateCreate', { numberOfKeys: 1, lua: CREATE });
  redis.defineCommand('wxgateTouch', { numberOfKeys: 1, lua: TOUCH });
  redis.defineCommand('wxgateSetPhone', { numberOfKeys: 1, lua: SET_PHONE });
  redis.defineCommand('wxgateClearPhone', { numberOfKeys: 1, lua: CLEAR_PHONE });
  redis.defineCommand('wxgateRevoke', { numberOfKeys: 1, lua: REVOKE });
  redis.defineCommand('wxgateRevokeAll', { numberOfKeys: 1, lua: REVOKE_ALL });
  redis.defineCommand('wxgateLink', { numberOfKeys: 1, lua: LINK });
  return redis as unknown as Scripts;
}

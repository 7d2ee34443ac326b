import ipaddr from 'ipaddr.js';
import { LRUCache } from 'lru-cache';
import type { RedisConnection } from '../redis/connection.js';

/** What a limiter says about one more request from a client. */
export interface RateDecision {
  allowed: boolean;
  /** ms until the client may try again (its bucket holds a whole token again); 0 when allowed */
  retryAfterMs: number;
}

/**
 * A token bucket per client: `burst` tokens at most, refilled at `rate` tokens per `windowMs` (a
 * client idle long enough may send `burst` at once, then `rate` per window). Each request takes one.
 */
export interface RateLimiter {
  /** Takes one token of `client`; rejects when the bucket cannot be reached (the caller fails open). */
  hit(client: string): Promise<RateDecision>;
}

/**
 * The key a client is counted under: its IPv4 address, or the /64 of an IPv6 one (one subscriber's
 * network hands out a whole /64, so counting single IPv6 addresses would not limit anyone).
 */
export function clientKey(ip: string): string {
  if (!ipaddr.IPv6.isValid(ip)) return ip;
  const addr = ipaddr.IPv6.parse(ip);
  if (addr.isIPv4MappedAddress()) return addr.toIPv4Address().toString();
  return `${addr.parts.slice(0, 4).map((p) => p.toString(16)).join(':')}::/64`;
}

/**
 * One atomic call per request, on Redis's clock (replicas' clocks do not matter): refill the client's
 * bucket for the time since its last request, take a token if there is a whole one, and keep the bucket
 * until it would be full again (a full bucket is the same as none). KEYS: the bucket (a hash: t =
 * tokens, at = ms of the last refill). ARGV: burst, refill rate in tokens per ms (as a string).
 * Returns { allowed (0/1), ms until a whole token }.
 */
const TAKE = String.raw`
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens = tonumber(b[1])
local at = tonumber(b[2])
if tokens == nil or at == nil then
  tokens = burst
else
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
end
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate) + 1000)
return { allowed, wait }`;

interface TakeScript {
  wxgateRateTake(key: string, burst: string, rate: string): Promise<[number, number]>;
}

/** Buckets in Redis, so every replica and worker draws from the same budget. */
export class RedisRateLimiter implements RateLimiter {
  private readonly rate: string;

  private readonly script: TakeScript;

  constructor(
    private readonly conn: RedisConnection,
    /** after the key prefix: where the buckets are (rlb:login:) */
    private readonly prefix: string,
    perWindow: number,
    windowMs: number,
    private readonly burst: number = perWindow,
  ) {
    this.rate = String(perWindow / windowMs);
    conn.client.defineCommand('wxgateRateTake', { numberOfKeys: 1, lua: TAKE });
    this.script = conn.client as unknown as TakeScript;
  }

  /** Counted as wxgate_session_store_errors_total{op="rateLimit"} when Redis cannot answer. */
  async hit(client: string): Promise<RateDecision> {
    const key = `${this.conn.keyPrefix}${this.prefix}${client}`;
    const [allowed, wait] = await this.conn.run('rateLimit', () => this.script.wxgateRateTake(key, String(this.burst), this.rate));
    return { allowed: allowed === 1, retryAfterMs: wait };
  }
}

/** Buckets in this process (session.store: memory, one process); at most `maxClients` are tracked. */
export class MemoryRateLimiter implements RateLimiter {
  private readonly buckets: LRUCache<string, { tokens: number; at: number }>;
  private readonly rate: number;

  constructor(
    perWindow: number,
    windowMs: number,
    private readonly burst: number = perWindow,
    private readonly now: () => number = Date.now,
    maxClients = 100_000,
  ) {
    this.rate = perWindow / windowMs;
    this.buckets = new LRUCache({ max: maxClients });
  }

  async hit(client: string): Promise<RateDecision> {
    const now = this.now();
    let b = this.buckets.get(client);
    if (!b) this.buckets.set(client, (b = { tokens: this.burst, at: now }));
    else {
      b.tokens = Math.min(this.burst, b.tokens + Math.max(0, now - b.at) * this.rate);
      b.at = now;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return { allowed: true, retryAfterMs: 0 };
    }
    return { allowed: false, retryAfterMs: Math.ceil((1 - b.tokens) / this.rate) };
  }
}

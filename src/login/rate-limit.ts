import { LRUCache } from 'lru-cache';
import type { RedisClient } from '../session/redis-store.js';

/** What a limiter says about one more request from a client. */
export interface RateDecision {
  allowed: boolean;
  /** ms until the client's window ends (when it may try again) */
  retryAfterMs: number;
}

/** Fixed-window counting per client: `limit` requests per `windowMs`. */
export interface RateLimiter {
  /** Counts one request of `client`; rejects when the counter cannot be reached (the caller fails open). */
  hit(client: string): Promise<RateDecision>;
}

/**
 * The key a client is counted under: its IPv4 address, or the /64 of an IPv6 one (one subscriber's
 * network hands out a whole /64, so counting single IPv6 addresses would not limit anyone).
 */
export function clientKey(ip: string): string {
  if (!ip.includes(':')) return ip;
  const v4 = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(ip);
  if (v4) return v4[1]!;
  const addr = ip.split('%')[0]!.toLowerCase();
  if (addr.includes('.')) return addr; // other embedded IPv4 forms: rare, counted as given
  const halves = addr.split('::');
  if (halves.length > 2) return addr;
  const left = halves[0] ? halves[0].split(':') : [];
  const right = halves.length === 2 && halves[1] ? halves[1].split(':') : [];
  const groups = halves.length === 2 ? [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right] : left;
  const head = groups.slice(0, 4).map((g) => (parseInt(g, 16) || 0).toString(16));
  return `${head.join(':')}::/64`;
}

/**
 * One atomic call per request: INCR the client's counter, start its window (PEXPIRE) on the first
 * request, and return the count with the ms left. KEYS: counter. ARGV: window ms.
 */
const HIT = String.raw`
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return { n, ttl }`;

interface HitScript {
  wxgateRateHit(key: string, windowMs: string): Promise<[number, number]>;
}

/** Counters in Redis, so every replica draws from the same budget. */
export class RedisRateLimiter implements RateLimiter {
  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
    private readonly limit: number,
    private readonly windowMs: number,
  ) {
    redis.defineCommand('wxgateRateHit', { numberOfKeys: 1, lua: HIT });
  }

  async hit(client: string): Promise<RateDecision> {
    const [n, ttl] = await (this.redis as unknown as HitScript).wxgateRateHit(`${this.prefix}${client}`, String(this.windowMs));
    return { allowed: n <= this.limit, retryAfterMs: ttl };
  }
}

/** Counters in this process (session.store: memory, one replica); at most `maxClients` are tracked. */
export class MemoryRateLimiter implements RateLimiter {
  private readonly windows: LRUCache<string, { count: number; resetAt: number }>;

  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
    private readonly now: () => number = Date.now,
    maxClients = 100_000,
  ) {
    this.windows = new LRUCache({ max: maxClients });
  }

  async hit(client: string): Promise<RateDecision> {
    const now = this.now();
    let w = this.windows.get(client);
    if (!w || now >= w.resetAt) this.windows.set(client, (w = { count: 0, resetAt: now + this.windowMs }));
    w.count++;
    return { allowed: w.count <= this.limit, retryAfterMs: w.resetAt - now };
  }
}

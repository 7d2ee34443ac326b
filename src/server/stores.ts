import type { Config } from '../config/schema.js';
import type { Logger } from '../base/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import { MemorySeenMarks, RedisSeenMarks, type SeenMarks } from '../events/seen.js';
import { MemoryRateLimiter, RedisRateLimiter, type RateLimiter } from '../login/rate-limit.js';
import { MemoryReplayStore, RedisReplayStore, type ReplayStore } from '../login/replay.js';
import { RedisConnection } from '../redis/connection.js';
import { MemoryAccountStore, RedisAccountStore, type AccountStore } from '../session/account-store.js';
import { MemoryStore } from '../session/memory-store.js';
import { RedisStore } from '../session/redis-store.js';
import type { SessionStore } from '../session/types.js';
import { MemoryTokenStore, RedisTokenStore, type TokenStore } from '../wechat/token-store.js';
import { MemoryWebStore, RedisWebStore, type WebStore } from '../web/store.js';

/**
 * session.store, decided here once: every part that keeps state (sessions, account controls, login
 * replay, the login rate limit, access_tokens, web logins, login events' markers) in this process, or
 * in Redis through one shared connection (src/redis/).
 */
export interface Stores {
  kind: 'memory' | 'redis';
  sessions: SessionStore;
  accounts: AccountStore;
  replay: ReplayStore;
  tokens: TokenStore;
  /** with `web` configured */
  web?: WebStore;
  /** with `events` configured */
  seen?: SeenMarks;
  /** the Redis connection (externalToken.redisKey reads through it); undefined with the memory store */
  redis?: RedisConnection;
  /** limits.login's limiter (built again at each reload: the limits may change); undefined when perIp is 0 */
  loginLimiter(limits: Config['limits']['login']): RateLimiter | undefined;
  /** Closes the connection, or stops the memory stores' sweepers. */
  close(): Promise<void>;
}

/**
 * The stores for `config`. With Redis, waits up to session.redis.connectTimeout for it to answer; starts
 * anyway when it does not (then /readyz says 503 until it does).
 */
export async function createStores(config: Config, metrics: Metrics, log: Logger): Promise<Stores> {
  return config.session.store === 'redis' ? redisStores(config, metrics, log) : memoryStores(config, metrics);
}

async function redisStores(config: Config, metrics: Metrics, log: Logger): Promise<Stores> {
  const r = config.session.redis;
  const conn = new RedisConnection({
    url: r.url,
    sentinels: r.sentinels,
    name: r.name,
    cluster: r.cluster,
    keyPrefix: r.keyPrefix,
    connectTimeout: r.connectTimeout,
    commandTimeout: r.commandTimeout,
    metrics,
    logger: log.child({ part: 'redis' }),
  });
  const sessions = new RedisStore(conn);
  const failed = await conn.waitReady(r.connectTimeout);
  if (failed) log.warn({ store: 'redis', err: failed }, 'session store not reachable at start; serving 503 until it is');
  return {
    kind: 'redis',
    sessions,
    accounts: new RedisAccountStore(conn),
    replay: new RedisReplayStore(conn),
    tokens: new RedisTokenStore(conn),
    web: config.web ? new RedisWebStore(conn) : undefined,
    seen: config.events ? new RedisSeenMarks(conn) : undefined,
    redis: conn,
    // rlb: token buckets (hashes); the fixed-window counters of earlier versions were strings under rl:
    loginLimiter: ({ perIp, window, burst = perIp }) => (perIp === 0 ? undefined : new RedisRateLimiter(conn, 'rlb:login:', perIp, window, burst)),
    close: () => sessions.close(),
  };
}

function memoryStores(config: Config, metrics: Metrics): Stores {
  // in this process: up for as long as the process is
  metrics.sessionStoreUp.set(1);
  const sessions = new MemoryStore();
  const replay = new MemoryReplayStore();
  const web = config.web ? new MemoryWebStore() : undefined;
  const seen = config.events ? new MemorySeenMarks() : undefined;
  return {
    kind: 'memory',
    sessions,
    accounts: new MemoryAccountStore(),
    replay,
    tokens: new MemoryTokenStore(),
    web,
    seen,
    loginLimiter: ({ perIp, window, burst = perIp }) => (perIp === 0 ? undefined : new MemoryRateLimiter(perIp, window, burst)),
    close: async () => {
      replay.close();
      web?.close();
      seen?.close();
      await sessions.close();
    },
  };
}

import { Cluster, Redis, type RedisOptions } from 'ioredis';

/**
 * The ioredis client for session.redis: one node (url), a Sentinel-watched master (sentinels + name) or
 * a Cluster (cluster seeds), all with the same fail-fast options (no offline queue, no retries of a
 * command, reconnection with capped, jittered backoff).
 */

export type RedisClient = Redis | Cluster;

/** Where Redis is and how long to wait for it: session.redis. */
export interface RedisTopology {
  url: string;
  /** Sentinel addresses ("host:port") and master name, instead of url */
  sentinels?: ReadonlyArray<string>;
  name?: string;
  /** Cluster seed nodes (redis:// URLs), instead of url */
  cluster?: ReadonlyArray<string>;
  connectTimeout: number;
  commandTimeout: number;
  /**
   * A connection that has commands waiting and receives nothing for this long is declared dead and
   * replaced (a Redis that vanished without closing the TCP connection). Default max(4 × commandTimeout, 2 s).
   */
  socketTimeout?: number;
}

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

/** The options every connection gets: fail fast while Redis is away, reconnect by itself. */
function failFast(o: RedisTopology): RedisOptions {
  return {
    connectTimeout: o.connectTimeout,
    commandTimeout: o.commandTimeout,
    socketTimeout: o.socketTimeout ?? Math.max(4 * o.commandTimeout, 2000),
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: backoff,
    reconnectOnError: o.sentinels || o.cluster ? readonlyReconnect() : undefined,
  };
}

/**
 * Builds the ioredis client for one node, a Sentinel-watched master, or a Cluster (ioredis's own support).
 * `subscriber`: a connection for SUBSCRIBE only (no command timeout: it waits for messages).
 */
export function createRedisClient(o: RedisTopology, { subscriber = false } = {}): RedisClient {
  const opts = { ...failFast(o), ...(subscriber ? { commandTimeout: undefined } : {}) };
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

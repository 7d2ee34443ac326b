import { z } from 'zod';
import { withCheck, obj } from '../checks.js';
import { duration, redisUrl, whole } from '../values.js';

/** session.redis: one server, Sentinel (sentinels + name) or Cluster. */
const redis = withCheck(
  z.strictObject({
    url: redisUrl.default('redis://127.0.0.1:6379'),
    /** Redis Sentinel: sentinel addresses ("host:port") and the monitored master's name. */
    sentinels: z.array(z.string().regex(/^[^\s:]+:\d{1,5}$/, { error: 'must be "host:port"' })).min(1).optional(),
    name: z.string().min(1).optional(),
    /** Redis Cluster: some of its nodes (redis:// URLs); the rest are discovered. */
    cluster: z.array(redisUrl).min(1).optional(),
    keyPrefix: z.string().regex(/^[A-Za-z0-9:_.-]*$/).default('wxgate:'),
    connectTimeout: duration().prefault('2s'),
    /** A command slower than this fails the request with 503 instead of waiting. */
    commandTimeout: duration().prefault('500ms'),
  }),
  (value, report) => {
    const r = obj(value);
    if (r.sentinels !== undefined && r.cluster !== undefined) report(['cluster'], 'cannot be combined with session.redis.sentinels');
    if (r.sentinels !== undefined && r.name === undefined) report(['name'], 'is required with sentinels: the name of the monitored master');
  },
);

/** session: where sessions are kept and how long they live. */
export const session = z
  .strictObject({
    store: z.enum(['memory', 'redis'], { error: 'must be "memory" or "redis"' }).default('memory'),
    redis: redis.prefault({}),
    /** Idle lifetime: a session unused this long is gone. Activity moves the deadline forward. */
    ttl: duration(1000).prefault('2h'),
    /** Absolute lifetime: after this the user logs in again, however active. */
    maxAge: duration(1000).prefault('30d'),
    /** Activity is written to the store at most this often per session (staleness of the idle deadline). */
    refreshInterval: duration().prefault('1m'),
    /** Live sessions one user (appid, openid) may hold; the oldest is revoked beyond this. */
    maxPerUser: whole().min(1).max(1000).default(10),
    cache: z
      .strictObject({
        /** Sessions kept in the in-process LRU (0 turns it off). */
        max: whole().min(0).default(100_000),
        /** How long a cached session is trusted before the store is asked again. */
        ttl: duration().prefault('10s'),
        /** How long a token the store does not know is answered 401 without asking the store again (0 turns it off). */
        negativeTtl: duration(0).prefault('2s'),
        /** Unknown tokens remembered that way, in their own LRU (never the sessions' one). */
        negativeMax: whole().min(0).default(10_000),
      })
      .prefault({}),
  })
  .prefault({});

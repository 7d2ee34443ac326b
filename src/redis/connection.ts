import type { Metrics } from '../metrics/metrics.js';
import { createRedisClient, type RedisClient, type RedisTopology } from './client.js';
import { AUTH_REFUSED, safeCause, safeMessage, StoreUnavailableError } from './errors.js';

/**
 * The one Redis connection every Redis-backed part shares (sessions, account controls, login replay,
 * the rate limit, web logins, access_tokens, login events): its health (wxgate_session_store_up, one
 * warning per outage, "redis is back"), `run()` (every failure becomes StoreUnavailableError, counted
 * in wxgate_session_store_errors_total by op), the wait for it at start, and closing.
 */

export interface RedisConnectionOptions extends RedisTopology {
  /** session.redis.keyPrefix: every key of the gateway starts with it */
  keyPrefix: string;
  metrics?: Metrics;
  logger?: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
}

export class RedisConnection {
  readonly client: RedisClient;
  readonly keyPrefix: string;
  private readonly others: RedisClient[] = [];
  private readonly readyListeners: Array<(reconnected: boolean) => void> = [];
  private wasReady = false;
  private outage = false;
  private closed = false;

  constructor(private readonly opts: RedisConnectionOptions) {
    this.keyPrefix = opts.keyPrefix;
    this.client = createRedisClient(opts);
    opts.metrics?.sessionStoreUp.set(0);
    this.client.on('ready', () => {
      if (this.closed) return;
      opts.metrics?.sessionStoreUp.set(1);
      if (this.outage) opts.logger?.info({}, 'redis is back');
      this.outage = false;
      const reconnected = this.wasReady;
      this.wasReady = true;
      for (const l of this.readyListeners) l(reconnected);
    });
    this.client.on('error', (err: Error) => this.down(err));
    this.client.on('close', () => {
      if (this.wasReady) this.down();
    });
  }

  private down(err?: unknown): void {
    if (this.closed) return;
    this.opts.metrics?.sessionStoreUp.set(0);
    if (this.outage) return;
    this.outage = true;
    const message = err ? safeMessage(err) : 'connection closed';
    this.opts.logger?.warn(
      { err: message },
      AUTH_REFUSED.test(message)
        ? 'redis refuses the credentials of session.redis.url; requests that need it answer 503 until it accepts them'
        : 'redis is unavailable; requests that need it answer 503',
    );
  }

  get logger(): RedisConnectionOptions['logger'] {
    return this.opts.logger;
  }

  /** True once the connection has been ready (commands could be answered) at least once. */
  get everReady(): boolean {
    return this.wasReady;
  }

  /** Called at every 'ready': `reconnected` after a drop (whatever was published meanwhile went unheard). */
  onReady(listener: (reconnected: boolean) => void): void {
    this.readyListeners.push(listener);
  }

  /** Runs Redis commands; any failure becomes StoreUnavailableError (never mistaken for "not found"). */
  async run<T>(op: string, fn: (redis: RedisClient) => Promise<T>): Promise<T> {
    try {
      return await fn(this.client);
    } catch (err) {
      this.opts.metrics?.sessionStoreErrors.inc({ op });
      throw new StoreUnavailableError(`redis ${op} failed: ${safeMessage(err)}`, { cause: safeCause(err) });
    }
  }

  /** A second connection to the same Redis, for SUBSCRIBE (no command timeout); closed with this one. */
  subscriber(): RedisClient {
    const sub = createRedisClient(this.opts, { subscriber: true });
    sub.on('error', () => {}); // the main connection reports outages
    this.others.push(sub);
    return sub;
  }

  async ping(): Promise<void> {
    await this.run('ping', (r) => r.ping());
  }

  /** Gives Redis up to `within` ms to answer (the connect time at start). Undefined when it did, else why not. */
  async waitReady(within: number): Promise<string | undefined> {
    const deadline = Date.now() + within;
    for (;;) {
      try {
        await this.client.ping();
        return undefined;
      } catch (err) {
        if (Date.now() >= deadline) return safeMessage(err);
        await new Promise((r) => setTimeout(r, 25));
      }
    }
  }

  /** QUITs every connection (waiting at most commandTimeout), then drops them whatever happened. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(
      [...this.others, this.client].map(async (c) => {
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

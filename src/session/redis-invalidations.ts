import { Redis } from 'ioredis';
import { backoff, type RedisClient } from '../redis/client.js';
import type { RedisConnection } from '../redis/connection.js';
import { safeMessage } from '../redis/errors.js';
import type { Invalidation } from './types.js';

/**
 * Revocations between replicas: the session scripts publish revoked token hashes on
 * {prefix}invalidate (comma-separated); each replica hears them on a second connection and drops its
 * cached copies. Whenever some may have been missed (either connection dropped), listeners hear 'all'.
 * (A revocation may go unheard for up to checkInterval + socketTimeout; the session cache's ttl bounds that anyway.)
 */
export class Invalidations {
  readonly channel: string;
  private readonly sub: RedisClient;
  private readonly listeners: Array<(inv: Invalidation) => void> = [];
  private readonly check?: NodeJS.Timeout;
  private subscribedOnce = false;
  private refused = false;
  private closed = false;

  constructor(
    private readonly conn: RedisConnection,
    /** how often the subscriber connection is checked with PING, so a dead one is noticed (ms); default 5 s */
    checkInterval = 5000,
  ) {
    this.channel = `${conn.keyPrefix}invalidate`;
    // After a drop of the main connection we may have missed invalidations: cached sessions are not to be trusted.
    conn.onReady((reconnected) => {
      if (reconnected) this.emit('all');
    });
    // The subscriber sends SUBSCRIBE itself at every 'ready' (and PINGs to notice a dead connection).
    this.sub = conn.subscriber();
    this.sub.on('ready', () => this.subscribe());
    this.sub.on('message', (_channel: string, message: string) => {
      if (message) this.emit(message.split(','));
    });
    if (this.sub instanceof Redis) {
      const sub = this.sub;
      this.check = setInterval(() => {
        if (sub.status === 'ready') sub.ping().catch(() => {});
      }, checkInterval).unref();
    }
  }

  listen(listener: (inv: Invalidation) => void): void {
    this.listeners.push(listener);
  }

  /** Tells this replica's listeners (the scripts published the same for the other replicas). */
  emit(inv: Invalidation): void {
    if (this.closed || (inv !== 'all' && inv.length === 0)) return;
    for (const l of this.listeners) {
      try {
        l(inv);
      } catch {
        // a listener's failure is not the store's
      }
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
        const missed = this.subscribedOnce || this.conn.everReady;
        this.subscribedOnce = true;
        this.refused = false;
        if (missed) this.emit('all');
      },
      (err: unknown) => {
        // connection lost meanwhile: 'ready' comes again. Refused while connected (ACL?): try again shortly.
        if (this.closed || this.sub.status !== 'ready') return;
        if (!this.refused) this.conn.logger?.warn({ err: safeMessage(err) }, 'cannot subscribe to session invalidations; other replicas\' revocations go unheard');
        this.refused = true;
        setTimeout(() => this.subscribe(), backoff(5)).unref();
      },
    );
  }

  /** Stops listening (the connection closes the subscriber with the rest). */
  close(): void {
    this.closed = true;
    clearInterval(this.check);
  }
}

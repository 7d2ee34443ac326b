import type { RedisConnection } from '../redis/connection.js';

/**
 * "Seen" markers for user.created (events.ts): whether an identity or a person logged in before, for
 * events.seenTtl. In Redis (`{prefix}ev:seen:{key}`, shared by replicas) or in this process.
 */
export interface SeenMarks {
  /** Sets the marker for `ttlMs`; true when it was not there. Rejects when the store cannot say. */
  mark(key: string, ttlMs: number): Promise<boolean>;
  close(): void;
}

export class RedisSeenMarks implements SeenMarks {
  constructor(private readonly conn: RedisConnection) {}

  async mark(key: string, ttlMs: number): Promise<boolean> {
    const set = await this.conn.run('events seen', (r) => r.set(`${this.conn.keyPrefix}ev:seen:${key}`, '1', 'PX', ttlMs, 'NX'));
    return set === 'OK';
  }

  close(): void {}
}

/** The same in this process (memory session store: one replica), swept every minute. */
export class MemorySeenMarks implements SeenMarks {
  private readonly seen = new Map<string, number>();
  private readonly sweeper = setInterval(() => {
    const now = Date.now();
    for (const [k, until] of this.seen) if (until <= now) this.seen.delete(k);
  }, 60_000).unref();

  async mark(key: string, ttlMs: number): Promise<boolean> {
    const now = Date.now();
    const until = this.seen.get(key);
    if (until !== undefined && until > now) return false;
    this.seen.set(key, now + ttlMs);
    return true;
  }

  close(): void {
    clearInterval(this.sweeper);
  }
}

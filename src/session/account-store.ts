import type { RedisClient } from '../redis/client.js';
import type { RedisConnection } from '../redis/connection.js';

/**
 * Where account controls (controls.ts) keep blocks, the audit trail and devices: Redis, shared by every
 * replica, or this process with the memory store.
 *
 * Redis keys (one key per operation, so each is one command or one MULTI on one key, on Cluster too);
 * uid = userId(appid, openid) as for sessions:
 *   {prefix}ua:b:{uid}  string, JSON Block; PEXPIREAT its `until` when it has one
 *   {prefix}ua:e:{uid}  list of JSON audit entries, newest first, LTRIM to `history`, PEXPIRE historyKeep
 *   {prefix}ua:d:{uid}  hash: session id → JSON Device; expires with the user's last session (maxAge);
 *                       fields of ended sessions are dropped when the list is read
 * Never stored or logged: a token, a login code, a session_key. A session is named by its id (the token's
 * hash, as the admin API lists it), which opens nothing.
 */

export interface AccountStore {
  getBlock(uid: string): Promise<string | undefined>;
  setBlock(uid: string, json: string, until: number | undefined): Promise<void>;
  clearBlock(uid: string): Promise<boolean>;
  pushEvent(uid: string, json: string, max: number, keepMs: number): Promise<void>;
  events(uid: string, n: number): Promise<string[]>;
  setDevice(uid: string, id: string, json: string, until: number): Promise<void>;
  devices(uid: string): Promise<Record<string, string>>;
  dropDevices(uid: string, ids: string[]): Promise<void>;
}

export class RedisAccountStore implements AccountStore {
  constructor(private readonly conn: RedisConnection) {}

  private run<T>(op: string, fn: (redis: RedisClient) => Promise<T>): Promise<T> {
    return this.conn.run(`accounts ${op}`, fn);
  }

  private key(kind: 'b' | 'e' | 'd', uid: string): string {
    return `${this.conn.keyPrefix}ua:${kind}:${uid}`;
  }

  async getBlock(uid: string): Promise<string | undefined> {
    return (await this.run('block read', (r) => r.get(this.key('b', uid)))) ?? undefined;
  }

  async setBlock(uid: string, json: string, until: number | undefined): Promise<void> {
    const key = this.key('b', uid);
    await this.run('block', (r) => (until === undefined ? r.set(key, json) : r.set(key, json, 'PXAT', Math.ceil(until))));
  }

  async clearBlock(uid: string): Promise<boolean> {
    return (await this.run('unblock', (r) => r.del(this.key('b', uid)))) > 0;
  }

  async pushEvent(uid: string, json: string, max: number, keepMs: number): Promise<void> {
    const key = this.key('e', uid);
    await this.run('event', async (r) => {
      const tx = r.multi();
      tx.lpush(key, json);
      tx.ltrim(key, 0, max - 1);
      tx.pexpire(key, Math.max(1, Math.ceil(keepMs)));
      const out = await tx.exec();
      const failed = out?.find(([e]) => e);
      if (failed) throw failed[0];
    });
  }

  async events(uid: string, n: number): Promise<string[]> {
    return this.run('events', (r) => r.lrange(this.key('e', uid), 0, n - 1));
  }

  async setDevice(uid: string, id: string, json: string, until: number): Promise<void> {
    const key = this.key('d', uid);
    await this.run('device', async (r) => {
      const tx = r.multi();
      tx.hset(key, id, json);
      // NX: a new key gets the deadline; GT: a later session moves it forward (never back)
      tx.pexpireat(key, Math.ceil(until), 'NX');
      tx.pexpireat(key, Math.ceil(until), 'GT');
      await tx.exec();
    });
  }

  async devices(uid: string): Promise<Record<string, string>> {
    return this.run('devices', (r) => r.hgetall(this.key('d', uid)));
  }

  async dropDevices(uid: string, ids: string[]): Promise<void> {
    if (ids.length) await this.run('devices drop', (r) => r.hdel(this.key('d', uid), ...ids));
  }
}

/** The same in this process (memory session store: one replica). */
export class MemoryAccountStore implements AccountStore {
  private readonly blocks = new Map<string, { json: string; until?: number }>();
  private readonly lists = new Map<string, { items: string[]; until: number }>();
  private readonly devs = new Map<string, { fields: Map<string, string>; until: number }>();

  async getBlock(uid: string): Promise<string | undefined> {
    const b = this.blocks.get(uid);
    if (b && b.until !== undefined && b.until <= Date.now()) {
      this.blocks.delete(uid);
      return undefined;
    }
    return b?.json;
  }

  async setBlock(uid: string, json: string, until: number | undefined): Promise<void> {
    this.blocks.set(uid, { json, until });
  }

  async clearBlock(uid: string): Promise<boolean> {
    const had = (await this.getBlock(uid)) !== undefined;
    this.blocks.delete(uid);
    return had;
  }

  async pushEvent(uid: string, json: string, max: number, keepMs: number): Promise<void> {
    const l = this.lists.get(uid);
    const items = l && l.until > Date.now() ? l.items : [];
    items.unshift(json);
    items.length = Math.min(items.length, max);
    this.lists.set(uid, { items, until: Date.now() + keepMs });
  }

  async events(uid: string, n: number): Promise<string[]> {
    const l = this.lists.get(uid);
    return l && l.until > Date.now() ? l.items.slice(0, n) : [];
  }

  async setDevice(uid: string, id: string, json: string, until: number): Promise<void> {
    let d = this.devs.get(uid);
    if (!d || d.until <= Date.now()) this.devs.set(uid, (d = { fields: new Map(), until }));
    d.fields.set(id, json);
    d.until = Math.max(d.until, until);
  }

  async devices(uid: string): Promise<Record<string, string>> {
    const d = this.devs.get(uid);
    return d && d.until > Date.now() ? Object.fromEntries(d.fields) : {};
  }

  async dropDevices(uid: string, ids: string[]): Promise<void> {
    const d = this.devs.get(uid);
    for (const id of ids) d?.fields.delete(id);
  }
}


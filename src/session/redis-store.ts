import { TOKEN_HASH_LENGTH, UID_LENGTH, userId } from './tokens.js';
import { accountId, isAccountId } from './accounts.js';
import type { RedisClient } from '../redis/client.js';
import { RedisConnection, type RedisConnectionOptions } from '../redis/connection.js';
import { alive, decode, decodePhone, encodePhone, encodeTimes, SEP, withKeptPhone } from './redis-codec.js';
import { Invalidations } from './redis-invalidations.js';
import { sessionScripts, type Scripts } from './redis-scripts.js';
import type { Identity, Invalidation, KeptPhone, SessionRecord, SessionStore } from './types.js';

export interface RedisStoreOptions extends RedisConnectionOptions {
  /** How often the subscriber connection is checked with PING, so a dead one is noticed (ms). Default 5 s. */
  subscriberCheckInterval?: number;
}

/**
 * Sessions in Redis, shared by every replica (key layout and encoding: redis-codec.ts; the scripts:
 * redis-scripts.ts). Fails fast: while Redis is away every call rejects at once with
 * StoreUnavailableError (the connection: src/redis/), a slow Redis after commandTimeout.
 * Revocations are published so other replicas drop their cached copies (redis-invalidations.ts).
 */
export class RedisStore implements SessionStore {
  readonly kind = 'redis' as const;
  private readonly scripts: Scripts;
  private readonly inv: Invalidations;

  /** A store with a connection of its own (tests, benches); the gateway shares one (server/stores.ts). */
  static open(opts: RedisStoreOptions): RedisStore {
    return new RedisStore(new RedisConnection(opts), opts);
  }

  constructor(
    readonly conn: RedisConnection,
    opts: { subscriberCheckInterval?: number } = {},
  ) {
    this.scripts = sessionScripts(conn.client);
    this.inv = new Invalidations(conn, opts.subscriberCheckInterval);
  }

  /** The connection's client (tests look at it). */
  get redis(): RedisClient {
    return this.conn.client;
  }

  /** The user's key and the session's field in it, from a token hash; undefined when malformed. */
  private split(tokenHash: string): { key: string; field: string } | undefined {
    if (tokenHash.length !== TOKEN_HASH_LENGTH) return undefined;
    return { key: `${this.conn.keyPrefix}u:${tokenHash.slice(0, UID_LENGTH)}`, field: tokenHash.slice(UID_LENGTH) };
  }
  private aKey(account: string) {
    return `${this.conn.keyPrefix}a:${account}`;
  }
  private uKey(uid: string) {
    return `${this.conn.keyPrefix}u:${uid}`;
  }

  async create(tokenHash: string, record: SessionRecord, sessionKey: string | undefined, opts: { maxPerUser: number }): Promise<string[]> {
    const uid = userId(record.appid, record.openid);
    const at = this.split(tokenHash);
    if (!at || !tokenHash.startsWith(uid)) throw new TypeError("the token hash is not one of this user's tokens");
    const unionid = record.unionid ?? '';
    if (record.appid.includes(SEP) || record.openid.includes(SEP) || unionid.includes(SEP)) {
      throw new TypeError('appid, openid and unionid must not contain a tab');
    }
    const value = encodeTimes(record);
    const max = Math.max(1, Math.floor(opts.maxPerUser));
    const sessionAt = Math.floor(Math.min(record.idleExpiresAt, record.expiresAt));
    return this.conn.run('create', async () => {
      const evicted = await this.scripts.wxgateCreate(
        at.key,
        at.field,
        value,
        String(sessionAt),
        record.appid + SEP + record.openid,
        unionid,
        sessionKey ?? '', // (none: "k" stays as it is)
        String(max),
        String(Date.now()),
        uid,
        this.inv.channel,
      );
      this.inv.emit(evicted); // the script published them for the other replicas
      if (record.unionid) {
        const at = String(Math.floor(record.expiresAt));
        await this.scripts.wxgateLink(this.aKey(accountId(record)), uid, at);
      }
      return evicted;
    });
  }

  async get(tokenHash: string): Promise<SessionRecord | undefined> {
    const at = this.split(tokenHash);
    if (!at) return undefined;
    const [v, who, unionid, phone] = await this.conn.run('get', (r) => r.hmget(at.key, at.field, 'w', 'n', 'p'));
    if (!v || !who) return undefined;
    const r = withKeptPhone(decode(v, who, unionid ?? null), phone);
    return r && alive(r, Date.now()) ? r : undefined;
  }

  async touch(tokenHash: string, idleExpiresAt: number): Promise<boolean> {
    const at = this.split(tokenHash);
    if (!at) return false;
    const ms = Math.floor(idleExpiresAt);
    const done = await this.conn.run('touch', () => this.scripts.wxgateTouch(at.key, at.field, String(ms), ms.toString(36), String(Date.now())));
    return done === 1;
  }

  async setPhone(appid: string, openid: string, phone: KeptPhone): Promise<boolean> {
    const value = encodePhone(phone);
    const uid = userId(appid, openid);
    const [done, hashes] = await this.conn.run('setPhone', () => this.scripts.wxgateSetPhone(this.uKey(uid), appid + SEP + openid, value, uid, this.inv.channel));
    this.inv.emit(hashes); // the script published them for the other replicas
    return done === 1;
  }

  async getPhone(appid: string, openid: string): Promise<KeptPhone | undefined> {
    const [p, who] = await this.conn.run('getPhone', (r) => r.hmget(this.uKey(userId(appid, openid)), 'p', 'w'));
    return p != null && who === appid + SEP + openid ? decodePhone(p) : undefined;
  }

  async clearPhone(appid: string, openid: string): Promise<boolean> {
    const uid = userId(appid, openid);
    const [had, hashes] = await this.conn.run('clearPhone', () => this.scripts.wxgateClearPhone(this.uKey(uid), appid + SEP + openid, uid, this.inv.channel));
    this.inv.emit(hashes); // the script published them for the other replicas
    return had === 1;
  }

  async revoke(tokenHash: string): Promise<boolean> {
    const at = this.split(tokenHash);
    if (!at) return false;
    const done = await this.conn.run('revoke', () => this.scripts.wxgateRevoke(at.key, at.field, String(Date.now()), this.inv.channel, tokenHash));
    this.inv.emit([tokenHash]); // the script published it for the other replicas (if it was there)
    return done === 1;
  }

  async revokeAll(appid: string, openid: string): Promise<number> {
    const uid = userId(appid, openid);
    const [n, hashes] = await this.conn.run('revokeAll', () => this.scripts.wxgateRevokeAll(this.uKey(uid), appid + SEP + openid, String(Date.now()), uid, this.inv.channel));
    this.inv.emit(hashes); // the script published them for the other replicas
    return n;
  }

  async list(appid: string, openid: string): Promise<Array<{ tokenHash: string; record: SessionRecord }>> {
    const uid = userId(appid, openid);
    const fields = await this.conn.run('list', (r) => r.hgetall(this.uKey(uid)));
    const who = appid + SEP + openid;
    if (fields.w !== who) return []; // nobody, or another user whose id collides with this one's
    const now = Date.now();
    const out: Array<{ tokenHash: string; record: SessionRecord }> = [];
    for (const [f, v] of Object.entries(fields)) {
      if (f.length !== TOKEN_HASH_LENGTH - UID_LENGTH) continue;
      const record = withKeptPhone(decode(v, who, fields.n ?? null), fields.p);
      if (record && alive(record, now)) out.push({ tokenHash: uid + f, record });
    }
    return out.sort((a, b) => a.record.createdAt - b.record.createdAt || (a.tokenHash < b.tokenHash ? -1 : 1));
  }

  async linkedUnionid(appid: string, openid: string): Promise<string | undefined> {
    const [n, who] = await this.conn.run('linkedUnionid', (r) => r.hmget(this.uKey(userId(appid, openid)), 'n', 'w'));
    return n !== null && who === appid + SEP + openid ? n : undefined;
  }

  async identities(id: string): Promise<Identity[]> {
    if (!isAccountId(id)) return [];
    if (id.startsWith('i')) {
      const [who, n] = await this.conn.run('identities', (r) => r.hmget(this.uKey(id.slice(1)), 'w', 'n'));
      const w = who?.split(SEP);
      return w?.length === 2 && n === null ? [{ appid: w[0]!, openid: w[1]! }] : [];
    }
    const uids = await this.conn.run('identities', (r) => r.hkeys(this.aKey(id)));
    const out: Identity[] = [];
    for (const uid of uids) {
      const [who, n] = await this.conn.run('identities', (r) => r.hmget(this.uKey(uid), 'w', 'n'));
      const w = who?.split(SEP);
      // gone with its sessions, or linked to another unionid since: not (or no longer) found here
      if (w?.length !== 2 || n === null) continue;
      const identity = { appid: w[0]!, openid: w[1]!, unionid: n };
      if (accountId(identity) === id) out.push(identity);
    }
    return out;
  }

  async getSessionKey(appid: string, openid: string): Promise<string | undefined> {
    const [k, who] = await this.conn.run('getSessionKey', (r) => r.hmget(this.uKey(userId(appid, openid)), 'k', 'w'));
    return k !== null && who === appid + SEP + openid ? k : undefined;
  }

  onInvalidate(listener: (inv: Invalidation) => void): void {
    this.inv.listen(listener);
  }

  async ping(): Promise<void> {
    await this.conn.ping();
  }

  /** Closes the connection, and with it every other part's use of it. */
  async close(): Promise<void> {
    this.inv.close();
    await this.conn.close();
  }
}

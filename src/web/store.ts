import { randomBytes } from 'node:crypto';
import type { Identity } from '../session/types.js';
import type { RedisClient } from '../redis/client.js';
import type { RedisConnection } from '../redis/connection.js';

/**
 * What browser logins keep between requests, shared by replicas through Redis (or in this process with
 * the memory store): one-time marks for OAuth states, the scan-to-login tickets, and the key that signs
 * OAuth states when web.stateSecret is not set.
 */

/**
 * A scan-to-login ticket's life: pending → confirmed → used (a browser got its session), or cancelled.
 * A pending ticket may carry the mark "scanned" (the phone opened the page; the PC page shows it).
 */
export type TicketStatus = 'pending' | 'confirmed' | 'cancelled' | 'used';
export type TicketAnswer = 'ok' | 'not_found' | 'expired' | Exclude<TicketStatus, 'pending'>;
export type ClaimAnswer =
  | { status: 'pending'; scanned?: boolean }
  | { status: 'expired' | 'not_found' | 'cancelled' | 'used' }
  | { status: 'confirmed'; who: Identity };

export interface WebStore {
  /** Sets `key` to `value` unless it is set; answers the value already there (undefined when this call set it). */
  once(key: string, value: string, ttlMs: number): Promise<string | undefined>;
  /**
   * A new pending ticket, valid until `expiresAt`, remembered `keepMs` longer (to answer "expired", not "unknown").
   * `bind` ties it to a flow: only a settle with the same `bind` finds it (follow-QR tickets: their WeChat ticket).
   */
  createTicket(id: string, secretHash: string, expiresAt: number, keepMs: number, bind?: string): Promise<void>;
  /** pending → confirmed (by `who`) or cancelled; any other state is answered as it is. A ticket of another `bind` is not_found. */
  settleTicket(id: string, to: 'confirmed' | 'cancelled', who: Identity | undefined, now: number, bind?: string): Promise<TicketAnswer>;
  /** A pending ticket is marked scanned (the phone opened it); any other state is answered as it is. A ticket of another `bind` is not_found. */
  markScanned(id: string, now: number, bind?: string): Promise<TicketAnswer>;
  /** The browser's side: a confirmed ticket with this secret becomes used, once, and gives its user. */
  claimTicket(id: string, secretHash: string, now: number): Promise<ClaimAnswer>;
  /** A random key made once and shared by every replica. */
  sharedKey(name: string): Promise<Buffer>;
}

const SETTLE = String.raw`
local v = redis.call('HMGET', KEYS[1], 's', 'e', 'b')
local s = v[1]
if not s or (v[3] or '') ~= ARGV[4] then return 'not_found' end
if s ~= 'pending' then return s end
if tonumber(ARGV[1]) >= tonumber(v[2]) then return 'expired' end
redis.call('HSET', KEYS[1], 's', ARGV[2], 'w', ARGV[3])
return 'ok'`;

const SCANNED = String.raw`
local v = redis.call('HMGET', KEYS[1], 's', 'e', 'b')
if not v[1] or (v[3] or '') ~= ARGV[2] then return 'not_found' end
if v[1] ~= 'pending' then return v[1] end
if tonumber(ARGV[1]) >= tonumber(v[2]) then return 'expired' end
redis.call('HSET', KEYS[1], 'sc', '1')
return 'ok'`;

const CLAIM = String.raw`
local v = redis.call('HMGET', KEYS[1], 's', 'e', 'h', 'w', 'sc')
if not v[1] or v[3] ~= ARGV[2] then return {'not_found'} end
if v[1] == 'pending' then
  if tonumber(ARGV[1]) >= tonumber(v[2]) then return {'expired'} end
  if v[5] then return {'pending', '', '1'} end
  return {'pending'}
end
if v[1] == 'confirmed' then
  redis.call('HSET', KEYS[1], 's', 'used')
  return {'confirmed', v[4]}
end
return {v[1]}`;

interface Scripts {
  wxgateSettleTicket(key: string, now: string, to: string, who: string, bind: string): Promise<string>;
  wxgateClaimTicket(key: string, now: string, secretHash: string): Promise<string[]>;
  wxgateScannedTicket(key: string, now: string, bind: string): Promise<string>;
}

function whoOf(json: string | undefined): Identity | undefined {
  if (!json) return undefined;
  try {
    const o = JSON.parse(json) as Identity;
    return typeof o.appid === 'string' && typeof o.openid === 'string' ? { appid: o.appid, openid: o.openid, ...(o.unionid ? { unionid: o.unionid } : {}) } : undefined;
  } catch {
    return undefined;
  }
}

export class RedisWebStore implements WebStore {
  private readonly scripts: Scripts;

  private readonly prefix: string;

  constructor(private readonly conn: RedisConnection) {
    this.prefix = conn.keyPrefix;
    const redis = conn.client;
    redis.defineCommand('wxgateSettleTicket', { numberOfKeys: 1, lua: SETTLE });
    redis.defineCommand('wxgateClaimTicket', { numberOfKeys: 1, lua: CLAIM });
    redis.defineCommand('wxgateScannedTicket', { numberOfKeys: 1, lua: SCANNED });
    this.scripts = redis as unknown as Scripts;
  }

  private run<T>(op: string, fn: (redis: RedisClient) => Promise<T>): Promise<T> {
    return this.conn.run(`web ${op}`, fn);
  }

  private ticketKey(id: string): string {
    return `${this.prefix}scan:${id}`;
  }

  async once(key: string, value: string, ttlMs: number): Promise<string | undefined> {
    const old = await this.run('once', (r) => r.set(`${this.prefix}once:${key}`, value, 'PX', Math.max(1, Math.ceil(ttlMs)), 'NX', 'GET'));
    return old ?? undefined;
  }

  async createTicket(id: string, secretHash: string, expiresAt: number, keepMs: number, bind?: string): Promise<void> {
    const key = this.ticketKey(id);
    await this.run('ticket create', async (r) => {
      const tx = r.multi();
      tx.hset(key, 's', 'pending', 'e', String(expiresAt), 'h', secretHash, ...(bind ? ['b', bind] : []));
      tx.pexpireat(key, Math.ceil(expiresAt + keepMs));
      await tx.exec();
    });
  }

  async settleTicket(id: string, to: 'confirmed' | 'cancelled', who: Identity | undefined, now: number, bind?: string): Promise<TicketAnswer> {
    const answer = await this.run('ticket settle', () =>
      this.scripts.wxgateSettleTicket(this.ticketKey(id), String(now), to, who ? JSON.stringify(who) : '', bind ?? ''),
    );
    return answer as TicketAnswer;
  }

  async markScanned(id: string, now: number, bind?: string): Promise<TicketAnswer> {
    const answer = await this.run('ticket scanned', () => this.scripts.wxgateScannedTicket(this.ticketKey(id), String(now), bind ?? ''));
    return answer as TicketAnswer;
  }

  async claimTicket(id: string, secretHash: string, now: number): Promise<ClaimAnswer> {
    const [status, who, scanned] = await this.run('ticket claim', () => this.scripts.wxgateClaimTicket(this.ticketKey(id), String(now), secretHash));
    if (status === 'confirmed') {
      const identity = whoOf(who);
      return identity ? { status, who: identity } : { status: 'not_found' };
    }
    if (status === 'pending') return scanned === '1' ? { status, scanned: true } : { status };
    return { status: status as 'expired' | 'not_found' | 'cancelled' | 'used' };
  }

  async sharedKey(name: string): Promise<Buffer> {
    const key = `${this.prefix}key:${name}`;
    const made = randomBytes(32).toString('base64url');
    const old = await this.run('key', (r) => r.set(key, made, 'NX', 'GET'));
    return Buffer.from(old ?? made, 'base64url');
  }
}

interface Ticket {
  status: TicketStatus;
  expiresAt: number;
  secretHash: string;
  bind?: string;
  who?: Identity;
  scanned?: boolean;
  dropAt: number;
}

/** The same in this process (memory session store: one replica). Expired entries are swept. */
export class MemoryWebStore implements WebStore {
  private readonly marks = new Map<string, { value: string; until: number }>();
  private readonly tickets = new Map<string, Ticket>();
  private readonly keys = new Map<string, Buffer>();
  private readonly sweeper = setInterval(() => this.sweep(), 30_000).unref();

  async once(key: string, value: string, ttlMs: number): Promise<string | undefined> {
    const m = this.marks.get(key);
    if (m && m.until > Date.now()) return m.value;
    this.marks.set(key, { value, until: Date.now() + ttlMs });
    return undefined;
  }

  async createTicket(id: string, secretHash: string, expiresAt: number, keepMs: number, bind?: string): Promise<void> {
    this.tickets.set(id, { status: 'pending', expiresAt, secretHash, ...(bind ? { bind } : {}), dropAt: expiresAt + keepMs });
  }

  private ticket(id: string): Ticket | undefined {
    const t = this.tickets.get(id);
    if (t && t.dropAt <= Date.now()) {
      this.tickets.delete(id);
      return undefined;
    }
    return t;
  }

  async settleTicket(id: string, to: 'confirmed' | 'cancelled', who: Identity | undefined, now: number, bind?: string): Promise<TicketAnswer> {
    const t = this.ticket(id);
    if (!t || (t.bind ?? '') !== (bind ?? '')) return 'not_found';
    if (t.status !== 'pending') return t.status;
    if (now >= t.expiresAt) return 'expired';
    t.status = to;
    t.who = who;
    return 'ok';
  }

  async markScanned(id: string, now: number, bind?: string): Promise<TicketAnswer> {
    const t = this.ticket(id);
    if (!t || (t.bind ?? '') !== (bind ?? '')) return 'not_found';
    if (t.status !== 'pending') return t.status;
    if (now >= t.expiresAt) return 'expired';
    t.scanned = true;
    return 'ok';
  }

  async claimTicket(id: string, secretHash: string, now: number): Promise<ClaimAnswer> {
    const t = this.ticket(id);
    if (!t || t.secretHash !== secretHash) return { status: 'not_found' };
    if (t.status === 'pending') {
      if (now >= t.expiresAt) return { status: 'expired' };
      return t.scanned ? { status: 'pending', scanned: true } : { status: 'pending' };
    }
    if (t.status === 'confirmed' && t.who) {
      t.status = 'used';
      return { status: 'confirmed', who: t.who };
    }
    return { status: t.status === 'confirmed' ? 'not_found' : t.status };
  }

  async sharedKey(name: string): Promise<Buffer> {
    let k = this.keys.get(name);
    if (!k) this.keys.set(name, (k = randomBytes(32)));
    return k;
  }

  private sweep(): void {
    const now = Date.now();
    for (const [k, m] of this.marks) if (m.until <= now) this.marks.delete(k);
    for (const [k, t] of this.tickets) if (t.dropAt <= now) this.tickets.delete(k);
  }

  close(): void {
    clearInterval(this.sweeper);
  }
}

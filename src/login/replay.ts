import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from 'node:crypto';
import type { RedisClient } from '../redis/client.js';
import type { RedisConnection } from '../redis/connection.js';

/**
 * The answer to a login code, remembered for the code's life (CODE_LIFETIMES_MS) so that the same code presented
 * again (a retry after a lost response, wx.login fired twice, another replica) gets the same answer
 * instead of WeChat's 40163 "code been used". Stored sealed with a key derived from the code itself:
 * whoever reads the store without the code learns nothing, in particular not the token. A token may be
 * remembered with its `holder` (a web login's OAuth state): then only that holder gets it again.
 */
export type LoginOutcome = { token: string; holder?: string } | { error: string };

/**
 * How long WeChat keeps a login code good, per flow (WeChat's documents): a wx.login() code for
 * jscode2session and an Official Account OAuth code 5 minutes, a website QR login (qrconnect) code 10
 * minutes. The remembered answer lives as long: within it the same code gets the same answer.
 */
export const CODE_LIFETIMES_MS = {
  jscode2session: 5 * 60 * 1000,
  mp: 5 * 60 * 1000,
  open: 10 * 60 * 1000,
} as const;
export type CodeFlow = keyof typeof CODE_LIFETIMES_MS;
/** The shortest of them: the default. */
export const CODE_LIFETIME_MS = CODE_LIFETIMES_MS.jscode2session;
const PENDING = 'p';

/** Where the remembered answers live: the process (memory store) or Redis (shared by replicas). */
export interface ReplayStore {
  /** Takes the right to call WeChat for this code ('won'), or returns what is there ('pending' or a sealed answer). */
  claim(key: string, lockMs: number): Promise<'won' | 'pending' | string>;
  fulfil(key: string, sealed: string, ttlMs: number): Promise<void>;
  release(key: string): Promise<void>;
  peek(key: string): Promise<'pending' | string | undefined>;
}

export function replayKey(appid: string, code: string): string {
  return createHash('sha256').update(`wxgate:login-code:${appid}:${code}`).digest('base64url');
}

function sealKey(appid: string, code: string): Buffer {
  return createHmac('sha256', code).update(`wxgate:login-seal:${appid}`).digest();
}

export function seal(appid: string, code: string, outcome: LoginOutcome): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', sealKey(appid, code), iv);
  const body = Buffer.concat([cipher.update(JSON.stringify(outcome), 'utf8'), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url');
}

export function unseal(appid: string, code: string, sealed: string): LoginOutcome | undefined {
  try {
    const raw = Buffer.from(sealed, 'base64url');
    const decipher = createDecipheriv('aes-256-gcm', sealKey(appid, code), raw.subarray(0, 12));
    decipher.setAuthTag(raw.subarray(12, 28));
    const text = Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8');
    return JSON.parse(text) as LoginOutcome;
  } catch {
    return undefined;
  }
}

export class MemoryReplayStore implements ReplayStore {
  private readonly entries = new Map<string, { value: string; expiresAt: number }>();
  private readonly sweeper = setInterval(() => this.sweep(), 30_000).unref();

  private live(key: string): string | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.expiresAt <= Date.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return e.value;
  }

  async claim(key: string, lockMs: number) {
    const v = this.live(key);
    if (v === undefined) {
      this.entries.set(key, { value: PENDING, expiresAt: Date.now() + lockMs });
      return 'won' as const;
    }
    return v === PENDING ? ('pending' as const) : v;
  }

  async fulfil(key: string, sealed: string, ttlMs: number) {
    this.entries.set(key, { value: sealed, expiresAt: Date.now() + ttlMs });
  }

  async release(key: string) {
    this.entries.delete(key);
  }

  async peek(key: string) {
    const v = this.live(key);
    return v === PENDING ? ('pending' as const) : v;
  }

  private sweep() {
    const now = Date.now();
    for (const [k, e] of this.entries) if (e.expiresAt <= now) this.entries.delete(k);
  }

  close() {
    clearInterval(this.sweeper);
  }
}

export class RedisReplayStore implements ReplayStore {
  private readonly prefix: string;

  constructor(private readonly conn: RedisConnection) {
    this.prefix = conn.keyPrefix;
  }

  private run<T>(what: string, fn: (redis: RedisClient) => Promise<T>): Promise<T> {
    return this.conn.run(`login replay ${what}`, fn);
  }

  async claim(key: string, lockMs: number) {
    const k = `${this.prefix}c:${key}`;
    return this.run('claim', async (redis) => {
      for (let i = 0; i < 3; i++) {
        if ((await redis.set(k, PENDING, 'PX', lockMs, 'NX')) === 'OK') return 'won' as const;
        const v = await redis.get(k);
        if (v !== null) return v === PENDING ? ('pending' as const) : v;
      }
      return 'pending' as const;
    });
  }

  async fulfil(key: string, sealed: string, ttlMs: number) {
    await this.run('write', (r) => r.set(`${this.prefix}c:${key}`, sealed, 'PX', ttlMs));
  }

  async release(key: string) {
    await this.run('release', (r) => r.del(`${this.prefix}c:${key}`));
  }

  async peek(key: string) {
    const v = await this.run('read', (r) => r.get(`${this.prefix}c:${key}`));
    return v === null ? undefined : v === PENDING ? ('pending' as const) : v;
  }
}

/**
 * npm run bench:memory — what sessions cost in memory.
 *
 * 1. The in-process LRU: RSS and heap added by 100,000 cached sessions (Sessions exactly as the
 *    gateway builds it, over a store that keeps nothing, so only the cache is measured).
 * 2. Redis: used_memory per stored session, loading MEMORY_SESSIONS (default 1,000,000) sessions
 *    through the real RedisStore into a fresh redis-server on a free port: one session per user, then
 *    three sessions per user (one hash per user: its MEMORY USAGE and encoding, which must be listpack).
 *
 *   MEMORY_SESSIONS=200000 npm run bench:memory     (quicker)
 */
// the gateway's own V8 settings (no allocation-site pretenuring), so the LRU is measured as it runs there
import '../src/v8-flags.js';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { createMetrics } from '../src/metrics/metrics.js';
import { RedisStore } from '../src/session/redis-store.js';
import { Sessions } from '../src/session/sessions.js';
import { hashToken, newToken, userId } from '../src/session/tokens.js';
import type { SessionStore } from '../src/session/types.js';
import { freePort, waitForPort } from './lib/procs.js';

const CACHED = 100_000;
const STORED = Number(process.env.MEMORY_SESSIONS ?? 1_000_000);
const APPID = 'wx0123456789abcdef';
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc (npm run bench:memory does)');
const MB = (b: number) => (b / 1048576).toFixed(1);
/**
 * An openid/unionid as WeChat shapes them: 28 characters, and a flat string, as JSON.parse makes it from
 * WeChat's answer (a concatenated slice would be a V8 cons string holding its parts, ~100 bytes more).
 */
const wxid = (p: string) => JSON.parse(JSON.stringify(p + randomBytes(21).toString('base64url').slice(0, 28 - p.length))) as string;
const settle = async () => {
  for (let i = 0; i < 5; i++) {
    gc!();
    await new Promise((r) => setTimeout(r, 200));
  }
};

async function lru(): Promise<{ rss: number; heap: number }> {
  const nullStore: SessionStore = {
    kind: 'memory',
    create: async () => [],
    get: async () => undefined,
    touch: async () => true,
    setPhone: async () => true,
    getPhone: async () => undefined,
    clearPhone: async () => false,
    revoke: async () => true,
    revokeAll: async () => 0,
    list: async () => [],
    getSessionKey: async () => undefined,
    linkedUnionid: async () => undefined,
    identities: async () => [],
    onInvalidate: () => {},
    ping: async () => {},
    close: async () => {},
  };
  const sessions = new Sessions(
    nullStore,
    { ttl: 7 * 86400_000, maxAge: 30 * 86400_000, refreshInterval: 60_000, maxPerUser: 5, cache: { max: CACHED, ttl: 300_000 } },
    createMetrics({ defaultMetrics: false }),
    { warn: () => {} },
  );
  const fill = async () => {
    for (let i = 0; i < CACHED; i++) {
      await sessions.create({ appid: APPID, openid: wxid('o'), unionid: i % 2 ? wxid('u') : undefined }, randomBytes(16).toString('base64'), 'miniprogram');
    }
  };
  const cache = (sessions as unknown as { cache: { size: number; clear(): void } }).cache;
  // A gateway that has served traffic has its young generation and allocator pools grown already: do the
  // same work once, empty the cache, and measure what holding the sessions adds on top of that.
  await fill();
  cache.clear();
  await settle();
  const before = process.memoryUsage();
  await fill();
  await settle();
  const after = process.memoryUsage();
  process.stderr.write(`[memory] LRU: before rss ${MB(before.rss)} heap ${MB(before.heapUsed)}; after rss ${MB(after.rss)} heap ${MB(after.heapUsed)}; cached ${cache.size}\n`);
  return { rss: after.rss - before.rss, heap: after.heapUsed - before.heapUsed };
}

async function redis(n: number, perUser: number): Promise<{ perSession: number; uKey: number; encoding: string; keys: number }> {
  const port = await freePort();
  const server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  try {
    await waitForPort(port);
    const url = `redis://127.0.0.1:${port}`;
    const admin = new Redis(url);
    admin.on('error', () => {}); // the store's ping below reports a Redis that does not answer
    const store = RedisStore.open({ url, keyPrefix: 'wxgate:', connectTimeout: 5000, commandTimeout: 30_000 });
    for (let i = 0; ; i++) {
      try {
        await store.ping();
        break;
      } catch (err) {
        if (i > 100) throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    const used = async () => Number(/used_memory:(\d+)/.exec(await admin.info('memory'))![1]);
    const before = await used();
    const now = Date.now();
    const users = Math.ceil(n / perUser);
    let sample: string | undefined;
    const BATCH = 2000;
    for (let u = 0; u < users; u += BATCH) {
      const work: Array<Promise<unknown>> = [];
      for (let j = u; j < Math.min(users, u + BATCH); j++) {
        const openid = wxid('o');
        const unionid = j % 2 ? wxid('u') : undefined;
        const sessionKey = randomBytes(16).toString('base64');
        for (let k = 0; k < perUser; k++) {
          const tokenHash = hashToken(newToken({ appid: APPID, openid }));
          sample ??= openid;
          const record = { appid: APPID, openid, ...(unionid ? { unionid } : {}), flow: 'miniprogram' as const, createdAt: now, expiresAt: now + 30 * 86400_000, idleExpiresAt: now + 7 * 86400_000 };
          work.push(store.create(tokenHash, record, sessionKey, { maxPerUser: 5 }));
        }
      }
      await Promise.all(work);
      if ((u / BATCH) % 50 === 0) process.stderr.write(`\r[memory] ${perUser}/user: ${Math.min(users, u + BATCH) * perUser} sessions loaded`);
    }
    process.stderr.write('\n');
    const perSession = ((await used()) - before) / (users * perUser);
    const key = `wxgate:u:${userId(APPID, sample!)}`;
    const uKey = Number(await admin.call('MEMORY', 'USAGE', key, 'SAMPLES', '0'));
    const encoding = String(await admin.object('ENCODING', key));
    const keys = await admin.dbsize();
    await store.close();
    admin.disconnect();
    return { perSession, uKey, encoding, keys };
  } finally {
    server.kill('SIGKILL');
  }
}

const l = await lru();
console.log(`\n| measurement | value | target |\n| --- | ---: | --- |`);
console.log(`| ${CACHED.toLocaleString('en')} cached sessions: RSS added | ${MB(l.rss)} MB | ≤ 60 MB: ${l.rss <= 60 * 1048576 ? 'PASS' : 'FAIL'} |`);
console.log(`| ${CACHED.toLocaleString('en')} cached sessions: JS heap added | ${MB(l.heap)} MB (${Math.round(l.heap / CACHED)} B/session) | |`);
const one = await redis(STORED, 1);
console.log(`| Redis, ${STORED.toLocaleString('en')} sessions, 1 per user: used_memory per session | ${one.perSession.toFixed(0)} B | ≤ 400 B: ${one.perSession <= 400 ? 'PASS' : 'FAIL'} |`);
console.log(`| … keys in Redis; MEMORY USAGE, encoding of one user's key | ${one.keys.toLocaleString('en')}; ${one.uKey} B, ${one.encoding} | |`);
const three = await redis(STORED, 3);
console.log(`| Redis, ${STORED.toLocaleString('en')} sessions, 3 per user: used_memory per session | ${three.perSession.toFixed(0)} B | |`);
console.log(`| … keys in Redis; MEMORY USAGE, encoding of one user's key | ${three.keys.toLocaleString('en')}; ${three.uKey} B, ${three.encoding} | |`);
process.exit(0);

import type { TestFn } from 'ava';
import { startSimulator } from '../../src/dev/simulator.js';
import { APPID, SECRET, startTestGateway, testConfig, type TestGateway } from './gateway.js';
import { startRedis, type RedisServer } from './redis.js';
import { startUpstream, type Upstream } from './upstream.js';
import { startWsUpstream, type WsUpstream } from './ws.js';

type Simulator = Awaited<ReturnType<typeof startSimulator>>;

/** The real parts of one test file, started before its tests and all closed after them. */
export interface Stack {
  /** the WeChat simulator (its apps: APPID/SECRET unless `apps` said otherwise) */
  readonly sim: Simulator;
  /** an HTTP upstream that records what it saw */
  readonly up: Upstream;
  /** a WebSocket upstream, with `ws: true` */
  readonly wsUp: WsUpstream;
  /** a redis-server of this file's own, with `redis: true` */
  readonly redis: RedisServer;
  /** Starts the parts (once; the hook useStack registers calls it too): await it in a before hook before using them. */
  start(): Promise<void>;
  /** A gateway on the simulator (testConfig's defaults under `opts`), closed with the rest. */
  gateway(opts?: Omit<Parameters<typeof testConfig>[0], 'apiBase'>, gwOpts?: { logLevel?: string }): Promise<TestGateway>;
}

/**
 * A file's real parts (simulator, upstream, and on request a WebSocket upstream and a redis-server),
 * started once and closed after its tests; gateways started with `gateway()` are closed first, so their
 * logs are checked for leaks while everything they talk to still runs. ava runs before hooks
 * concurrently, so a file's own hook awaits `start()` before it uses the parts.
 */
export function useStack(test: TestFn, opts: { ws?: boolean; redis?: boolean; apps?: Record<string, string> } = {}): Stack {
  const parts: Partial<Record<'sim' | 'up' | 'wsUp' | 'redis', { close(): Promise<void> | void }>> = {};
  const gateways: TestGateway[] = [];
  const part = <T>(name: keyof typeof parts): T => {
    const p = parts[name];
    if (!p) throw new Error(`useStack: no ${name} (not asked for, or used before the before hook)`);
    return p as T;
  };
  let started: Promise<void> | undefined;
  const start = () =>
    (started ??= (async () => {
      parts.sim = await startSimulator(0, '127.0.0.1', { apps: opts.apps ?? { [APPID]: SECRET } });
      parts.up = await startUpstream();
      if (opts.ws) parts.wsUp = await startWsUpstream();
      if (opts.redis) parts.redis = await startRedis();
    })());
  test.before(start);
  test.after.always(async () => {
    for (const g of gateways.reverse()) await g.close();
    for (const name of ['up', 'wsUp', 'redis', 'sim'] as const) await parts[name]?.close();
  });
  return {
    start,
    get sim() {
      return part<Simulator>('sim');
    },
    get up() {
      return part<Upstream>('up');
    },
    get wsUp() {
      return part<WsUpstream>('wsUp');
    },
    get redis() {
      return part<RedisServer>('redis');
    },
    async gateway(cfg = {}, gwOpts = {}) {
      await start();
      const g = await startTestGateway(testConfig({ apiBase: part<Simulator>('sim').url, ...cfg }), gwOpts);
      gateways.push(g);
      return g;
    },
  };
}
